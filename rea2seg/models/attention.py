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

import torch

from ..errors import ModelError

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


def layer_band(num_layers: int, band: tuple[float, float], attention_layers: list[int] | None = None) -> list[int]:
    """Decoder layer indices in the fractional band [start, end) of the depth (at least one layer), keeping only
    ``attention_layers`` when given (the layers with a softmax map, in hybrid models); ``InputError`` when the band
    holds none of them."""
    lo = min(int(math.floor(band[0] * num_layers)), num_layers - 1)
    hi = max(lo + 1, int(math.ceil(band[1] * num_layers)))
    layers = list(range(lo, min(hi, num_layers)))
    if attention_layers is None:
        return layers
    kept = [layer for layer in layers if layer in set(attention_layers)]
    if not kept:
        from ..errors import InputError

        have = ", ".join(map(str, attention_layers)) or "none"
        raise InputError(f"layer_band {tuple(band)} covers decoder layers {lo}-{layers[-1]}, none of which has an "
                         f"attention map (this model's full-attention layers are {have}; the others are linear "
                         f"attention); widen layer_band to include one")
    return kept


# ---- where the image tokens are ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenLayout:
    """How a family's image tokens sit on the image. ``family``: the name users know; ``kind``: the order
    ``grid_from_tokens`` undoes ("merged_grid": ``image_grid_thw`` (t, h, w) patches, ``spatial_merge_size``^2
    patches per token, row-major, frames averaged)."""

    family: str
    kind: str = "merged_grid"


#: The families discovery can map attention back to the image for, by ``config.model_type``. Add a family only with
#: tests of its recorded rows against eager attention and of a planted region landing in the right cells.
TOKEN_LAYOUTS: dict[str, TokenLayout] = {
    "qwen2_vl": TokenLayout("Qwen2-VL"),
    "qwen2_5_vl": TokenLayout("Qwen2.5-VL"),
    "qwen3_vl": TokenLayout("Qwen3-VL"),
    # Qwen3.5: Qwen3-VL's vision tower and processor; only its full-attention layers have maps (VLM.attention_layers)
    "qwen3_5": TokenLayout("Qwen3.5"),
}


def discovery_layout(config) -> TokenLayout:
    """The token layout of the VLM with ``config``; ``ModelError`` naming the families that work for any other
    (scoring takes any VLM, discovery only these)."""
    model_type = str(getattr(config, "model_type", None))
    layout = TOKEN_LAYOUTS.get(model_type)
    if layout is None:
        known = ", ".join(f"{v.family} ({k})" for k, v in TOKEN_LAYOUTS.items())
        raise ModelError(f"model type {model_type!r} cannot be the discovery VLM: where its image tokens sit on the "
                         f"image is not known, so its attention cannot become a heat map. Discovery works with "
                         f"{known}; use this model as the scorer instead (--scorer / scorer=...)")
    return layout


def grid_from_tokens(per_token: torch.Tensor, layout: TokenLayout, inputs, merge: int) -> torch.Tensor:
    """(n_img,) values in token order -> the (h, w) grid they cover, for a family of ``layout``; ``inputs``: the
    processor outputs of the one-image prompt, ``merge``: the vision config's ``spatial_merge_size``."""
    if layout.kind == "merged_grid":
        if "image_grid_thw" not in inputs:
            raise ModelError(f"the {layout.family} processor returned no image_grid_thw; it is not the processor this "
                             f"family ships with")
        return token_grid(per_token, inputs["image_grid_thw"][0], merge)
    raise ModelError(f"unknown token layout {layout.kind!r} for {layout.family}")


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
