"""SAM as the candidate maker: one image embedding per image, all prompts in batched decoder calls, full-resolution
post-processing only for the masks that are kept."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .loading import SamModel, import_segment_anything


@dataclass
class SamEmbedding:
    """The image encoder's output for one image. features: (1, C, h, w); input_size: (h, w) of the resized image
    inside SAM's square input; original_size: (H, W)."""

    features: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]


def _transform(sam: SamModel):
    import_segment_anything()
    from segment_anything.utils.transforms import ResizeLongestSide
    return ResizeLongestSide(sam.img_size)


@torch.inference_mode()
def embed_image(sam: SamModel, image: np.ndarray) -> SamEmbedding:
    """image: (H, W, 3) uint8 RGB -> the SAM embedding (the expensive step; cache it per image)."""
    resized = _transform(sam).apply_image(image)
    x = torch.as_tensor(resized, device=sam.device).permute(2, 0, 1).contiguous()[None].float()
    input_size = tuple(int(v) for v in x.shape[-2:])
    features = sam.sam.image_encoder(sam.sam.preprocess(x))
    return SamEmbedding(features, input_size, (int(image.shape[0]), int(image.shape[1])))


@dataclass
class PromptBatch:
    """N prompts in original-image pixel coordinates. points: (N, P, 2) xy; labels: (N, P) 1 = foreground,
    0 = background, -1 = padding (not a point); boxes: (N, 4) xyxy, rows of NaN for prompts without a box."""

    points: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])


@torch.inference_mode()
def decode_prompts(sam: SamModel, emb: SamEmbedding, prompts: PromptBatch, multimask: bool = True,
                   chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """All prompts through the prompt encoder + mask decoder in batched calls of at most ``chunk``.

    Returns low-resolution logits (N, M, 256, 256) in SAM's padded input frame and predicted IoU (N, M);
    M = 3 with ``multimask`` else 1. Prompts with and without boxes go in separate calls (SAM's prompt encoder takes
    boxes for all prompts of a call or none).
    """
    tf = _transform(sam)
    n = len(prompts)
    m = 3 if multimask else 1
    side = sam.sam.prompt_encoder.mask_input_size[0]
    low = torch.zeros((n, m, side, side), device=sam.device)
    iou = torch.zeros((n, m), device=sam.device)
    has_box = ~np.isnan(prompts.boxes).any(1)
    for group in (np.flatnonzero(has_box), np.flatnonzero(~has_box)):
        for start in range(0, group.size, chunk):
            idx = group[start:start + chunk]
            pts = tf.apply_coords(prompts.points[idx].astype(np.float32), emb.original_size)
            pts = torch.as_tensor(pts, dtype=torch.float32, device=sam.device)
            lab = torch.as_tensor(prompts.labels[idx], dtype=torch.int, device=sam.device)
            boxes = None
            if has_box[idx[0]]:
                boxes = torch.as_tensor(tf.apply_boxes(prompts.boxes[idx].astype(np.float32), emb.original_size),
                                        dtype=torch.float32, device=sam.device)
            sparse, dense = sam.sam.prompt_encoder(points=(pts, lab), boxes=boxes, masks=None)
            lo, pr = sam.sam.mask_decoder(image_embeddings=emb.features,
                                          image_pe=sam.sam.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=multimask)
            low[idx], iou[idx] = lo.float(), pr.float()
    return low, iou


def decoder_chunk(device: torch.device, requested: int) -> int:
    """Prompts per mask-decoder call: ``requested`` on an accelerator, where one batched call costs about what one
    prompt does; 1 on a CPU, where each prompt's work (its own pass over the 64x64 embedding) is the same batched or
    not and a batch only adds memory traffic (SAM's 256-d decoder, 12 point prompts in one call: 1.4-1.7x slower
    than one by one on a 2-core EPYC; bench/README.md)."""
    return max(1, requested) if torch.device(device).type != "cpu" else 1


def stability_scores(low: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """SAM's stability score (IoU of the mask thresholded at +-offset) on (..., h, w) logits."""
    hi = (low > threshold + offset).flatten(-2).sum(-1).float()
    lo = (low > threshold - offset).flatten(-2).sum(-1).float()
    return torch.where(lo > 0, hi / lo.clamp(min=1), torch.zeros_like(lo))


@torch.inference_mode()
def upscale_masks(sam: SamModel, emb: SamEmbedding, low: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """(K, 256, 256) low-res logits -> (K, H, W) bool masks at the original image size (only call it for kept masks:
    it costs ~50x the low-res work)."""
    out = np.zeros((low.shape[0], *emb.original_size), bool)
    for s in range(0, low.shape[0], chunk):
        up = sam.sam.postprocess_masks(low[s:s + chunk, None], emb.input_size, emb.original_size)
        out[s:s + chunk] = (up[:, 0] > sam.sam.mask_threshold).cpu().numpy()
    return out


@torch.inference_mode()
def predict_one_by_one(sam: SamModel, emb: SamEmbedding, prompts: PromptBatch, multimask: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Baseline: one decoder call per prompt with full-resolution post-processing of every output (what a naive
    ``SamPredictor.predict`` loop does). Returns masks (N, M, H, W) bool and IoU (N, M). For tests and benchmarks."""
    masks, ious = [], []
    for i in range(len(prompts)):
        one = PromptBatch(prompts.points[i:i + 1], prompts.labels[i:i + 1], prompts.boxes[i:i + 1])
        low, iou = decode_prompts(sam, emb, one, multimask, chunk=1)
        masks.append(upscale_masks(sam, emb, low[0]))
        ious.append(iou[0].cpu().numpy())
    return np.stack(masks), np.stack(ious)
