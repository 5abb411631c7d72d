"""SAM (Meta's ``segment_anything``) as the candidate maker: loading checkpoints of any size, one image embedding per
image, all prompts through the decoder in batched calls, full-resolution post-processing only for kept masks.

The three published kinds (vit_h, vit_l, vit_b) are recognised by file name or weights. Any other size is a
``SamArch``: a ``.safetensors`` file written by ``save_sam`` carries its architecture in the file's metadata, so it
loads with no extra argument; otherwise pass ``arch=``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, InputError, ModelError, ModelNotFoundError
from .device import resolve_device
from .download import SAM_CHECKPOINTS, SAM_KINDS, download_sam, find_sam_checkpoint, models_home

#: safetensors metadata key holding a ``SamArch`` as JSON
ARCH_METADATA_KEY = "rea2seg.sam_arch"
#: SAM's input normalisation (ImageNet mean/std in 0-255), as ``segment_anything.build_sam`` sets it
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def import_segment_anything():
    """Meta's ``segment_anything``, or ``ModelError`` saying how to install it (it needs a torchvision that matches
    torch)."""
    try:
        import segment_anything
    except ImportError as e:
        what = "segment-anything" if "segment_anything" in str(e) else "torchvision"
        raise ModelError(f"cannot import segment_anything ({e}); run `pip install segment-anything` and install torch "
                         f"and torchvision builds that match (missing or broken: {what})") from None
    except Exception as e:  # e.g. a torchvision built for another torch
        raise ModelError(f"cannot import segment_anything: torchvision is unusable ({e.__class__.__name__}: {e}); "
                         f"install torch and torchvision builds that match") from None
    return segment_anything


@dataclass(frozen=True)
class SamArch:
    """A ``segment_anything.Sam`` architecture (the image encoder's size; prompt encoder and mask decoder as Meta
    builds them, scaled by ``prompt_dim``). The published kinds are ``SAM_ARCHS["vit_h" | "vit_l" | "vit_b"]``."""

    embed_dim: int
    depth: int
    heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16

    def build(self):
        """An un-initialised ``Sam`` of this architecture, in eval mode."""
        import_segment_anything()
        from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

        emb = self.img_size // self.patch_size
        return Sam(
            image_encoder=ImageEncoderViT(
                depth=self.depth, embed_dim=self.embed_dim, img_size=self.img_size, mlp_ratio=self.mlp_ratio,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=self.heads, patch_size=self.patch_size,
                qkv_bias=True, use_rel_pos=True, global_attn_indexes=list(self.global_attn_indexes),
                window_size=self.window_size, out_chans=self.prompt_dim),
            prompt_encoder=PromptEncoder(embed_dim=self.prompt_dim, image_embedding_size=(emb, emb),
                                         input_image_size=(self.img_size, self.img_size),
                                         mask_in_chans=self.mask_in_chans),
            mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
                depth=2, embedding_dim=self.prompt_dim, mlp_dim=self.decoder_mlp_dim, num_heads=self.decoder_heads),
                transformer_dim=self.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=self.iou_head_hidden_dim),
            pixel_mean=list(PIXEL_MEAN), pixel_std=list(PIXEL_STD)).eval()

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "SamArch":
        try:
            d = json.loads(text)
            d["global_attn_indexes"] = tuple(d["global_attn_indexes"])
            return cls(**d)
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointError(f"the SAM architecture stored in the checkpoint is unreadable ({e})") from None


#: Meta's published architectures (``segment_anything.build_sam``).
SAM_ARCHS = {
    "vit_h": SamArch(embed_dim=1280, depth=32, heads=16, global_attn_indexes=(7, 15, 23, 31)),
    "vit_l": SamArch(embed_dim=1024, depth=24, heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_b": SamArch(embed_dim=768, depth=12, heads=12, global_attn_indexes=(2, 5, 8, 11)),
}


@dataclass
class SamEmbedding:
    """The image encoder's output for one image. features: (1, C, h, w); input_size: (h, w) of the resized image
    inside SAM's square input; original_size: (H, W)."""

    features: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]


@dataclass
class PromptBatch:
    """N prompts in original-image pixel coordinates. points: (N, P, 2) xy; labels: (N, P) 1 = foreground,
    0 = background, -1 = padding (not a point); boxes: (N, 4) xyxy, rows of NaN for prompts without a box."""

    points: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @classmethod
    def concat(cls, a: "PromptBatch", b: "PromptBatch") -> "PromptBatch":
        """Both batches in one, padding the shorter point lists with label -1."""
        p = max(a.points.shape[1], b.points.shape[1])

        def pad(x: "PromptBatch"):
            k = p - x.points.shape[1]
            return (np.concatenate([x.points, np.zeros((len(x), k, 2), np.float32)], 1),
                    np.concatenate([x.labels, -np.ones((len(x), k), np.int64)], 1))

        (pa, la), (pb, lb) = pad(a), pad(b)
        return cls(np.concatenate([pa, pb]), np.concatenate([la, lb]), np.concatenate([a.boxes, b.boxes]))


def stability_scores(low: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """SAM's stability score (IoU of the mask thresholded at +-offset) on (..., h, w) logits."""
    hi = (low > threshold + offset).flatten(-2).sum(-1).float()
    lo = (low > threshold - offset).flatten(-2).sum(-1).float()
    return torch.where(lo > 0, hi / lo.clamp(min=1), torch.zeros_like(lo))


def decoder_chunk(device: torch.device, requested: int) -> int:
    """Prompts per mask-decoder call: ``requested`` on an accelerator, where one batched call costs about what one
    prompt does; 1 on a CPU, where each prompt's work (its own pass over the 64x64 embedding) is the same batched or
    not and a batch only adds memory traffic (SAM's 256-d decoder, 12 point prompts in one call: 1.4-1.7x slower
    than one by one on a 2-core EPYC; bench/README.md)."""
    return max(1, requested) if torch.device(device).type != "cpu" else 1


@dataclass
class SamModel:
    """A loaded SAM v1 with where it came from, and the operations discovery needs (``models.segmenter.Segmenter``):
    ``embed`` (once per image), ``decode`` (prompts -> low-resolution logits, batched) and ``upscale`` (kept logits ->
    full-size masks)."""

    sam: Any
    kind: str
    path: Path
    device: torch.device
    source: str = ""  # what the user passed (a kind, a file); the path when not given
    backend = "sam"
    supports_concepts = False

    def __post_init__(self) -> None:
        self.source = self.source or str(self.path)

    @property
    def img_size(self) -> int:
        return int(self.sam.image_encoder.img_size)

    @property
    def mask_threshold(self) -> float:
        return float(self.sam.mask_threshold)

    def to(self, device: torch.device) -> "SamModel":
        self.sam.to(device)
        self.device = torch.device(device)
        return self

    def _transform(self):
        import_segment_anything()
        from segment_anything.utils.transforms import ResizeLongestSide
        return ResizeLongestSide(self.img_size)

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> SamEmbedding:
        """image: (H, W, 3) uint8 RGB -> the SAM embedding (the expensive step; cache it per image)."""
        resized = self._transform().apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None].float()
        input_size = tuple(int(v) for v in x.shape[-2:])
        features = self.sam.image_encoder(self.sam.preprocess(x))
        return SamEmbedding(features, input_size, (int(image.shape[0]), int(image.shape[1])))

    @torch.inference_mode()
    def decode(self, emb: SamEmbedding, prompts: PromptBatch, multimask: bool = True, chunk: int = 32
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """All prompts through the prompt encoder + mask decoder in batched calls of at most ``chunk``.

        Returns low-resolution logits (N, M, s, s) in SAM's padded input frame and predicted IoU (N, M); M = 3 with
        ``multimask`` else 1. Prompts with and without boxes go in separate calls (SAM's prompt encoder takes boxes
        for all prompts of a call or none).
        """
        tf = self._transform()
        n = len(prompts)
        m = 3 if multimask else 1
        side = self.sam.prompt_encoder.mask_input_size[0]
        low = torch.zeros((n, m, side, side), device=self.device)
        iou = torch.zeros((n, m), device=self.device)
        has_box = ~np.isnan(prompts.boxes).any(1)
        for group in (np.flatnonzero(has_box), np.flatnonzero(~has_box)):
            for start in range(0, group.size, chunk):
                idx = group[start:start + chunk]
                pts = tf.apply_coords(prompts.points[idx].astype(np.float32), emb.original_size)
                pts = torch.as_tensor(pts, dtype=torch.float32, device=self.device)
                lab = torch.as_tensor(prompts.labels[idx], dtype=torch.int, device=self.device)
                boxes = None
                if has_box[idx[0]]:
                    boxes = torch.as_tensor(tf.apply_boxes(prompts.boxes[idx].astype(np.float32), emb.original_size),
                                            dtype=torch.float32, device=self.device)
                sparse, dense = self.sam.prompt_encoder(points=(pts, lab), boxes=boxes, masks=None)
                lo, pr = self.sam.mask_decoder(image_embeddings=emb.features,
                                               image_pe=self.sam.prompt_encoder.get_dense_pe(),
                                               sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                               multimask_output=multimask)
                low[idx], iou[idx] = lo.float(), pr.float()
        return low, iou

    @torch.inference_mode()
    def upscale(self, emb: SamEmbedding, low: torch.Tensor, chunk: int = 16) -> np.ndarray:
        """(K, s, s) low-res logits -> (K, H, W) bool masks at the original image size (only call it for kept masks:
        it costs ~50x the low-res work)."""
        out = np.zeros((low.shape[0], *emb.original_size), bool)
        for s in range(0, low.shape[0], chunk):
            up = self.sam.postprocess_masks(low[s:s + chunk, None], emb.input_size, emb.original_size)
            out[s:s + chunk] = (up[:, 0] > self.mask_threshold).cpu().numpy()
        return out

    def to_low_frame(self, emb: SamEmbedding, values: np.ndarray, side: int) -> np.ndarray:
        """An (H, W) float map placed in the low-resolution logits' (side x side) frame: SAM resizes the image's long
        side to ``img_size`` and pads bottom/right, so the image sits top-left."""
        import torch.nn.functional as F

        ih, iw = (max(1, round(v * side / self.img_size)) for v in emb.input_size)
        small = F.interpolate(torch.as_tensor(values, dtype=torch.float32)[None, None], size=(ih, iw),
                              mode="bilinear", align_corners=False)[0, 0].numpy()
        out = np.zeros((side, side), np.float32)
        out[:ih, :iw] = small
        return out


# ---- checkpoints ------------------------------------------------------------------------------------------------------

def read_state_dict(path: Path, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """A checkpoint's tensors, read onto ``device``, and its metadata: safetensors, or a pickle loaded with
    ``weights_only=True`` (never runs code; pickles have no metadata) and memory-mapped where its format allows."""
    if not path.exists():
        raise ModelNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory; the SAM checkpoint must be a .pth or .safetensors file")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file
        try:
            with safe_open(str(path), "pt") as f:
                metadata = dict(f.metadata() or {})
            return load_file(str(path), device=str(device)), metadata
        except Exception as e:
            raise CheckpointError(f"SAM checkpoint {path} is not a valid safetensors file ({e}); it may be truncated: "
                                  f"delete it and download it again") from None
    try:
        try:  # memory-mapped: each tensor goes from the file to ``device`` without a full copy in host memory
            state = torch.load(path, map_location=device, weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # only the legacy (pre-zip) format cannot be mapped
                raise
            state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower() or "unpickl" in str(e).lower():
            raise CheckpointError(f"refusing to load {path}: it contains pickled code or objects, not just tensors "
                                  f"({msg}). Use Meta's original checkpoint or a .safetensors file") from None
        raise CheckpointError(f"SAM checkpoint {path} cannot be read ({msg}); it may be truncated: delete it and "
                              f"download it again") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a SAM state dict (a mapping of names to tensors)")
    return state, {}


def save_sam(sam, path: str | os.PathLike, arch: SamArch) -> Path:
    """Save a ``Sam``'s weights as ``.safetensors`` with its architecture in the metadata (loads with ``load_sam``
    alone), or as a ``.pth`` state dict (then ``load_sam`` needs ``arch=`` unless it is a published kind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in sam.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state, str(path), metadata={ARCH_METADATA_KEY: arch.to_json()})
    else:
        torch.save(state, path)
    return path


def kind_from_name(path: Path) -> str | None:
    """A published kind named in the file name ("sam_vit_b_01ec64.pth" -> "vit_b")."""
    name = path.name.lower()
    return next((k for k in SAM_KINDS if k in name), None)


def kind_from_state(state: dict) -> str | None:
    """The published kind whose image-encoder width the weights have."""
    w = state.get("image_encoder.patch_embed.proj.weight")
    if w is None:
        return None
    return next((k for k, a in SAM_ARCHS.items() if a.embed_dim == int(w.shape[0])), None)


def load_sam(path: str | os.PathLike, kind: str | None = None, device: str | torch.device | None = None,
             download: bool = False, arch: SamArch | None = None) -> SamModel:
    """Load a SAM checkpoint: Meta's vit_b/vit_l/vit_b ``.pth`` or a ``.safetensors`` conversion, or any other size
    saved by ``save_sam`` (architecture in its metadata) or described by ``arch``.

    ``kind`` ("vit_h" / "vit_l" / "vit_b") is inferred from the file name or the weights unless given. ``path`` may
    also be a bare kind or a published file name, which resolves to the models folder (downloaded with ``download``).
    """
    p = resolve_sam_path(path, download)
    dev = resolve_device(device)
    state, metadata = read_state_dict(p, dev)
    if kind is not None and kind not in SAM_ARCHS:
        raise InputError(f"unknown SAM kind {kind!r}; use one of {', '.join(SAM_KINDS)}")
    if arch is None and kind is None and ARCH_METADATA_KEY in metadata:
        arch, label = SamArch.from_json(metadata[ARCH_METADATA_KEY]), "custom"
    elif arch is not None:
        label = kind or "custom"
    else:
        kind = kind or kind_from_name(p) or kind_from_state(state)
        if kind is None:
            raise CheckpointError(f"cannot tell which SAM {p} is (not a vit_h/vit_l/vit_b checkpoint and no "
                                  f"architecture in its metadata); pass --sam-kind, or save it with "
                                  f"rea2seg.models.sam.save_sam")
        arch, label = SAM_ARCHS[kind], kind
    # SAM runs in fp32 (a half-precision conversion is widened on load)
    state = {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in state.items()}
    with torch.device("meta"):  # no random init, no host copy: the checkpoint's tensors become the weights
        sam = arch.build()
    try:
        sam.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        actual = kind_from_state(state)
        hint = f"the file looks like {actual!r}" if actual and actual != label else "the file does not match"
        raise CheckpointError(f"SAM checkpoint {p} does not fit kind {label!r} ({hint}); pass the right kind "
                              f"(--sam-kind) or the right file ({str(e).splitlines()[0][:160]})") from None
    # the normalisation constants are not in checkpoints (non-persistent buffers): set them where the model runs
    sam.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN, device=dev).view(-1, 1, 1), False)
    sam.register_buffer("pixel_std", torch.tensor(PIXEL_STD, device=dev).view(-1, 1, 1), False)
    sam.to(dev).eval()
    return SamModel(sam, label, p, dev, str(path))


def resolve_sam_path(path: str | os.PathLike, download: bool = False) -> Path:
    """The checkpoint file for ``path``: a file, or a kind / published file name looked up in the models folder
    (downloaded when ``download``); ``ModelNotFoundError`` naming the expected path and the fetch command otherwise."""
    raw = str(path)
    ck = find_sam_checkpoint(raw)
    p = Path(raw).expanduser()
    if ck is not None and not p.exists():
        p = models_home() / "sams" / ck.filename
    if p.exists():
        if ck is not None and p.stat().st_size != ck.size:
            raise CheckpointError(f"{p} is {p.stat().st_size:,} bytes but {ck.filename} is {ck.size:,}: the download "
                                  f"is incomplete or corrupt. Delete it and run `rea2seg models download {ck.kind}`")
        return p
    if ck is not None:
        if download:
            return download_sam(ck.kind)
        raise ModelNotFoundError(f"SAM checkpoint not found: expected {p}; run `rea2seg models download {ck.kind}` "
                                 f"(or place {ck.filename} there)")
    raise ModelNotFoundError(f"SAM checkpoint not found: {p}; check the path, or pass a kind (vit_h, vit_l, vit_b) "
                             f"to use the models folder {models_home() / 'sams'}")


__all__ = ["ARCH_METADATA_KEY", "PromptBatch", "SAM_ARCHS", "SAM_CHECKPOINTS", "SAM_KINDS", "SamArch", "SamEmbedding",
           "SamModel", "decoder_chunk", "import_segment_anything", "kind_from_name", "kind_from_state", "load_sam",
           "read_state_dict", "resolve_sam_path", "save_sam", "stability_scores"]
