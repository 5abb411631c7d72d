"""SAM 2.1 through transformers (``Sam2Model`` + ``Sam2Processor``), and the point/box decoding that SAM 3's tracker
shares (``PromptableSegmenter``).

The published ``facebook/sam2.1-hiera-*`` repos are video checkpoints (model_type ``sam2_video``); the image model
loads from them with its memory modules left out, so it is loaded by class, never through ``AutoModel`` (which would
build the video model). The image is resized to a square (1024 x 1024 for SAM 2.1, 1008 for SAM 3) without keeping
the aspect ratio and without padding: pixel (x, y) of a W x H image is (x * S / W, y * S / H) in the model's input, and
the low-resolution masks (256 x 256, or 288) cover the whole image, stretched.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import CheckpointError, ModelError


@dataclass
class HFEmbedding:
    """A transformers SAM's image embedding: features, the decoder's inputs per feature level ((1, C_l, h_l, w_l)
    tensors, finest first); original_size: (H, W); extra: backend-specific state (SAM 3 keeps its ViT output and
    pixel values here for the concept head)."""

    features: list[torch.Tensor]
    original_size: tuple[int, int]
    extra: dict = field(default_factory=dict)


@contextlib.contextmanager
def quiet_transformers():
    """Hide transformers' warnings while loading: the published checkpoints are video models, and loading their image
    model logs "a model of type sam2_video to instantiate a model of type sam2", which is expected."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_hf_model(cls, directory: Path, what: str):
    """``cls.from_pretrained(directory)`` in eval mode; ``CheckpointError`` when weights are missing (a truncated or
    different checkpoint) or the files are unreadable."""
    try:
        with quiet_transformers():
            model, info = cls.from_pretrained(directory, output_loading_info=True)
    except ImportError as e:
        raise ModelError(f"loading {what} needs a package that is missing or broken ({e}); install torch and "
                         f"torchvision builds that match") from None
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"cannot load {what} from {directory} ({str(e).splitlines()[0][:200]}); the checkpoint "
                              f"may be truncated or of another model: re-download it") from None
    missing = info.get("missing_keys") or []
    if missing:
        raise CheckpointError(f"{directory} lacks {len(missing)} weights of {what} (e.g. {sorted(missing)[0]}); it "
                              f"is not a complete checkpoint of that model: re-download it")
    return model.eval()


def load_hf_processor(cls, directory: Path, what: str):
    try:
        return cls.from_pretrained(directory)
    except ImportError as e:
        raise ModelError(f"the {what} processor needs a package that is missing or broken ({e}); transformers' SAM "
                         f"image processors need torchvision") from None
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"cannot load the {what} processor of {directory} ({str(e).splitlines()[0][:200]}); the "
                              f"directory needs the checkpoint's processor_config.json / preprocessor_config.json") \
            from None


@dataclass(eq=False)
class PromptableSegmenter:
    """A transformers SAM-2-style image model: point and box prompts -> three masks each, from one image embedding.
    ``Sam2Model`` (SAM 2.1) and ``Sam3TrackerModel`` (SAM 3's points and boxes) share this API.

    model: the image model; processor: its ``Sam2Processor`` / ``Sam3TrackerProcessor``; kind: the model's name;
    source: what the user passed; path: the checkpoint directory.
    """

    model: Any
    processor: Any
    kind: str
    source: str
    path: Path
    device: torch.device
    backend = "sam2"

    @property
    def mask_threshold(self) -> float:
        return 0.0

    @property
    def supports_concepts(self) -> bool:
        return False

    @property
    def input_size(self) -> int:
        """The side of the square input prompts are scaled to."""
        return int(self.processor.target_size)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: torch.device) -> "PromptableSegmenter":
        self.model.to(device)
        self.device = torch.device(device)
        return self

    def pixel_values(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> the model's (1, 3, S, S) input, by the checkpoint's own image processor."""
        pv = self.processor.image_processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"]
        return pv.to(self.device, self.dtype)

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> HFEmbedding:
        """image: (H, W, 3) uint8 RGB -> the image embedding (the expensive step; cache it per image)."""
        feats = self.model.get_image_embeddings(self.pixel_values(image))
        return HFEmbedding(list(feats), (int(image.shape[0]), int(image.shape[1])))

    @torch.inference_mode()
    def decode(self, emb: HFEmbedding, prompts, multimask: bool = True, chunk: int = 32
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """All prompts (a ``PromptBatch`` in image pixels) through the prompt encoder + mask decoder in calls of at
        most ``chunk`` prompts. Returns low-resolution logits (N, M, s, s) over the whole (stretched) image and
        predicted IoU (N, M); M = 3 with ``multimask`` else 1. Prompts with and without boxes go in separate calls
        (the prompt encoder takes boxes for all prompts of a call or none)."""
        H, W = emb.original_size
        S = float(self.input_size)
        scale = np.array([S / W, S / H], np.float32)
        n = len(prompts)
        low = iou = None
        has_box = ~np.isnan(prompts.boxes).any(1)
        for group in (np.flatnonzero(has_box), np.flatnonzero(~has_box)):
            for start in range(0, group.size, max(1, chunk)):
                idx = group[start:start + max(1, chunk)]
                pts = torch.as_tensor(prompts.points[idx].astype(np.float32) * scale, device=self.device)
                lab = torch.as_tensor(prompts.labels[idx], dtype=torch.long, device=self.device)
                boxes = None
                if has_box[idx[0]]:
                    boxes = torch.as_tensor(prompts.boxes[idx].astype(np.float32) * np.tile(scale, 2),
                                            device=self.device)[None]
                out = self.model(image_embeddings=emb.features, input_points=pts[None].to(self.dtype),
                                 input_labels=lab[None], input_boxes=None if boxes is None else boxes.to(self.dtype),
                                 multimask_output=multimask)
                masks, scores = out.pred_masks[0].float(), out.iou_scores[0].float()  # (n, M, s, s), (n, M)
                if low is None:
                    low = torch.zeros((n, *masks.shape[1:]), device=masks.device)
                    iou = torch.zeros((n, masks.shape[1]), device=masks.device)
                low[idx], iou[idx] = masks, scores
        if low is None:  # no prompts
            side = int(self.model.prompt_encoder.mask_input_size[0])
            return torch.zeros((0, 3 if multimask else 1, side, side)), torch.zeros((0, 3 if multimask else 1))
        return low, iou

    @torch.inference_mode()
    def upscale(self, emb: HFEmbedding, low: torch.Tensor, chunk: int = 16) -> np.ndarray:
        """(K, s, s) low-resolution logits -> (K, H, W) bool masks: bilinear to the image's size, then the threshold
        (what the processor's ``post_process_masks`` does; only call it for kept masks)."""
        out = np.zeros((low.shape[0], *emb.original_size), bool)
        for s in range(0, low.shape[0], chunk):
            up = F.interpolate(low[s:s + chunk, None].float(), size=emb.original_size, mode="bilinear",
                               align_corners=False)
            out[s:s + chunk] = (up[:, 0] > self.mask_threshold).cpu().numpy()
        return out

    def to_low_frame(self, emb: HFEmbedding, values: np.ndarray, side: int) -> np.ndarray:
        """An (H, W) float map in the (side, side) low-resolution frame: the image fills it, stretched."""
        small = F.interpolate(torch.as_tensor(values, dtype=torch.float32)[None, None], size=(side, side),
                              mode="bilinear", align_corners=False)
        return small[0, 0].numpy()


class Sam2Segmenter(PromptableSegmenter):
    """SAM 2.1 (or SAM 2) through transformers' ``Sam2Model``."""

    backend = "sam2"


def load_sam2(directory: Path, source: str, device=None) -> Sam2Segmenter:
    """Load a SAM 2.1 / SAM 2 checkpoint directory (model_type ``sam2_video`` as published, or ``sam2``)."""
    from transformers import Sam2Model, Sam2Processor

    from .device import resolve_device

    dev = resolve_device(device)
    model = load_hf_model(Sam2Model, directory, "SAM 2")
    processor = load_hf_processor(Sam2Processor, directory, "SAM 2")
    model.to(dev)
    return Sam2Segmenter(model, processor, Path(str(source).rstrip("/")).name or directory.name, str(source),
                         directory, dev)
