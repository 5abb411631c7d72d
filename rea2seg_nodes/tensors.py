"""ComfyUI tensors <-> the engine's arrays. IMAGE is ``[B, H, W, C]`` float32 in 0..1 (C = 3, or 4 after an alpha
join); MASK is ``[B, H, W]`` float32 in 0..1. The engine takes ``(H, W, 3)`` uint8 and returns ``(H, W)`` bool."""
from __future__ import annotations

import numpy as np
import torch

from rea2seg import images
from rea2seg.errors import InputError


def image_list(image: torch.Tensor) -> list[np.ndarray]:
    """IMAGE ``[B, H, W, C]`` (or ``[H, W, C]``) -> B arrays ``(H, W, 3)`` uint8, via the engine's own conversion."""
    if image.ndim == 3:
        image = image[None]
    if image.ndim != 4:
        raise InputError(f"expected an IMAGE [B, H, W, C], got a tensor of shape {tuple(image.shape)}")
    arr = image.detach().to("cpu", torch.float32).numpy()
    return [images.load_image(arr[i]) for i in range(arr.shape[0])]


def image_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    """B arrays ``(H, W, 3)`` uint8 -> IMAGE ``[B, H, W, 3]`` float32 in 0..1."""
    return torch.from_numpy(np.stack(arrays).astype(np.float32) / 255.0)


def mask_tensor(masks: list[np.ndarray]) -> torch.Tensor:
    """B masks ``(H, W)`` bool -> MASK ``[B, H, W]`` float32 (0 or 1)."""
    return torch.from_numpy(np.stack(masks).astype(np.float32))
