"""Text->image attention maps without eager attention.

A custom attention function registered with transformers runs SDPA for the actual outputs and, only while a
``record_attention`` block is active and only for the chosen layers, recomputes ``softmax(q_rows . K^T * scale +
mask)`` for the question rows over the image keys. That equals eager attention for those rows exactly, at
L*H*R*K memory instead of L*H*S^2 (see shared/notes/models.md section 3).
"""
from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

RECORDING_ATTENTION = "rea2seg_sdpa_rows"
_state = threading.local()
_registered = False


@dataclass
class AttentionRecorder:
    """What to record: ``rows`` (R,) query positions (absolute, in the padded sequence), ``keys`` a slice of key
    positions, ``layers`` decoder layer indices (None = all). ``out[layer]`` = (B, H, R, K) float32 probabilities."""

    rows: torch.Tensor
    keys: slice
    layers: set[int] | None = None
    out: dict[int, torch.Tensor] = field(default_factory=dict)

    def wants(self, layer_idx: int | None) -> bool:
        return self.layers is None or layer_idx in self.layers

    def record(self, module, query, key, attention_mask, scaling) -> None:
        from transformers.integrations.sdpa_attention import repeat_kv

        q_len, k_len = query.shape[2], key.shape[2]
        offset = k_len - q_len  # > 0 when a cache holds a prefix
        rows = self.rows.to(query.device) - offset
        rows = rows[(rows >= 0) & (rows < q_len)]
        if rows.numel() == 0:
            return
        groups = getattr(module, "num_key_value_groups", 1)
        k = repeat_kv(key, groups) if groups > 1 else key
        scale = scaling if scaling is not None else 1.0 / math.sqrt(query.shape[-1])
        logits = (query[:, :, rows].float() @ k.float().transpose(-1, -2)) * scale  # (B, H, R, K)
        if attention_mask is None:
            allowed = (rows[:, None] + offset >= torch.arange(k_len, device=query.device))[None, None]
            logits = logits.masked_fill(~allowed, float("-inf"))
        elif attention_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attention_mask[:, :, rows, :k_len], float("-inf"))
        else:
            logits = logits + attention_mask[:, :, rows, :k_len].float()
        probs = torch.nan_to_num(logits.softmax(-1), nan=0.0)  # fully-masked (padding) rows -> 0
        self.out[int(module.layer_idx)] = probs[..., self.keys].detach()


def _recording_sdpa(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                    **kwargs)
    rec = getattr(_state, "recorder", None)
    if rec is not None and query.shape[2] > 1 and rec.wants(getattr(module, "layer_idx", None)):
        rec.record(module, query, key, attention_mask, scaling)
    return out, None


def register_recording_attention() -> None:
    """Register the recording function (and SDPA's mask function: an unknown name would get no mask at all)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(RECORDING_ATTENTION, _recording_sdpa)
    AttentionMaskInterface.register(RECORDING_ATTENTION, sdpa_mask)
    _registered = True


@contextlib.contextmanager
def record_attention(rows: torch.Tensor, keys: slice, layers: set[int] | None = None):
    """Record the attention of ``rows`` over ``keys`` in ``layers`` during the forward passes inside the block
    (this thread only)."""
    rec = AttentionRecorder(torch.as_tensor(rows, dtype=torch.long), keys, layers)
    prev = getattr(_state, "recorder", None)
    _state.recorder = rec
    try:
        yield rec
    finally:
        _state.recorder = prev


def layer_band(num_layers: int, band: tuple[float, float]) -> list[int]:
    """Decoder layer indices in the fractional band [start, end) of the depth (at least one layer)."""
    lo = min(int(math.floor(band[0] * num_layers)), num_layers - 1)
    hi = max(lo + 1, int(math.ceil(band[1] * num_layers)))
    return list(range(lo, min(hi, num_layers)))


# ---- token grid -> heat map ----------------------------------------------------------------------------------------

def image_token_span(input_ids: torch.Tensor, image_token_id: int) -> tuple[int, int]:
    """(start, end) of the one contiguous run of image tokens in a 1-D ``input_ids``."""
    pos = (input_ids == image_token_id).nonzero().flatten()
    if pos.numel() == 0:
        raise ValueError("no image tokens in the prompt")
    s, e = int(pos[0]), int(pos[-1]) + 1
    if e - s != pos.numel():
        raise ValueError("image tokens are not contiguous (more than one image in the prompt?)")
    return s, e


def token_grid(per_token: torch.Tensor, grid_thw, merge: int) -> torch.Tensor:
    """(n_img,) values in token order -> (h, w) grid: Qwen-VL merges ``merge x merge`` patches per token, row-major,
    frames averaged."""
    t, gh, gw = (int(v) for v in grid_thw)
    h, w = gh // merge, gw // merge
    if t * h * w != per_token.numel():
        raise ValueError(f"{per_token.numel()} image tokens do not fit grid {t}x{h}x{w}")
    return per_token.reshape(t, h, w).mean(0)


def gaussian_blur(grid: torch.Tensor, sigma: float) -> torch.Tensor:
    """(h, w) -> (h, w), reflect-padded separable Gaussian; sigma in cells (0 = none)."""
    if sigma <= 0:
        return grid
    r = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(grid)
    g = grid[None, None]
    pad_h, pad_w = min(r, grid.shape[0] - 1), min(r, grid.shape[1] - 1)
    g = F.pad(g, (pad_w, pad_w, 0, 0), mode="reflect") if pad_w else g
    g = F.conv2d(g, k[r - pad_w: r + pad_w + 1].view(1, 1, 1, -1)) if pad_w else g
    g = F.pad(g, (0, 0, pad_h, pad_h), mode="reflect") if pad_h else g
    g = F.conv2d(g, k[r - pad_h: r + pad_h + 1].view(1, 1, -1, 1)) if pad_h else g
    return g[0, 0]


def suppress_sinks(grid: torch.Tensor, quantile: float) -> torch.Tensor:
    """Clip outlier tokens (attention sinks: a few background tokens that soak up attention whatever the text) to the
    ``quantile`` of the map."""
    if quantile >= 1.0 or grid.numel() < 8:
        return grid
    cap = torch.quantile(grid.flatten().float(), quantile)
    return grid.clamp(max=float(cap))


def normalise(grid: torch.Tensor) -> torch.Tensor:
    lo, hi = grid.min(), grid.max()
    return (grid - lo) / (hi - lo) if float(hi - lo) > 1e-12 else torch.zeros_like(grid)


def heatmap_from_grids(question: torch.Tensor, generic: torch.Tensor | None, sink_quantile: float,
                       sigma: float) -> torch.Tensor:
    """Question map (h, w), optionally divided by the generic-prompt map (ViCrop rel-att), de-sinked, smoothed and
    normalised to [0, 1]."""
    m = suppress_sinks(question.float(), sink_quantile)
    if generic is not None:
        g = suppress_sinks(generic.float(), sink_quantile)
        m = m / (g + g.mean() + 1e-8)
        m = suppress_sinks(m, sink_quantile)
    return normalise(gaussian_blur(normalise(m), sigma))


def upsample(grid: torch.Tensor, size_hw: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W) float32 numpy in [0, 1], bilinear (the grid covers the whole image: smart_resize only
    rescales)."""
    up = F.interpolate(grid[None, None].float(), size=size_hw, mode="bilinear", align_corners=False)[0, 0]
    return up.clamp(0, 1).cpu().numpy().astype(np.float32)
