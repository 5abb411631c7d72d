"""Stage 1, from attention to prompts: the token-grid map is de-sinked, divided by the generic-prompt map, smoothed,
normalised and upsampled to the image; its peaks (with sub-cell precision) and each peak's region become SAM
prompts."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


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


def find_peaks(grid: torch.Tensor, threshold: float, min_distance: int, max_peaks: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of an (h, w) map with value >= threshold * max, at least ``min_distance`` cells apart (greedy,
    strongest first), at most ``max_peaks``. Returns (K, 2) float32 (row, col) refined to sub-cell precision by the
    3x3 weighted centroid, and (K,) values. The global maximum is always returned (the centre for a flat map)."""
    g = grid.float()
    if float(g.max() - g.min()) < 1e-6:  # a flat map has no peaks: one prompt at the centre
        return np.array([[(g.shape[0] - 1) / 2, (g.shape[1] - 1) / 2]], np.float32), np.array([float(g.max())],
                                                                                               np.float32)
    k = 2 * max(min_distance, 1) + 1
    pooled = F.max_pool2d(g[None, None], k, stride=1, padding=k // 2)[0, 0]
    gmax = float(g.max())
    cand = ((g >= pooled) & (g >= threshold * gmax)).nonzero().tolist()
    cand.sort(key=lambda rc: -float(g[rc[0], rc[1]]))
    kept: list[tuple[int, int]] = []
    for r, c in cand:
        if all(max(abs(r - r2), abs(c - c2)) >= min_distance for r2, c2 in kept):
            kept.append((r, c))
        if len(kept) >= max_peaks:
            break
    if not kept:
        idx = int(torch.argmax(g))
        kept = [(idx // g.shape[1], idx % g.shape[1])]
    h, w = g.shape
    out = []
    for r, c in kept:
        r0, r1, c0, c1 = max(r - 1, 0), min(r + 2, h), max(c - 1, 0), min(c + 2, w)
        patch = g[r0:r1, c0:c1].clamp(min=0)
        tot = float(patch.sum())
        if tot > 0:
            rr, cc = torch.meshgrid(torch.arange(r0, r1, dtype=torch.float32),
                                    torch.arange(c0, c1, dtype=torch.float32), indexing="ij")
            out.append((float((patch * rr).sum()) / tot, float((patch * cc).sum()) / tot))
        else:
            out.append((float(r), float(c)))
    values = np.array([float(g[r, c]) for r, c in kept], np.float32)
    return np.array(out, np.float32).reshape(-1, 2), values


def peak_region_box(grid: torch.Tensor, peak_rc: tuple[int, int], level: float) -> tuple[int, int, int, int]:
    """Box (r0, c0, r1, c1), end-exclusive, of the 4-connected region around the peak where grid >= level * peak."""
    g = grid.cpu().numpy()
    h, w = g.shape
    r, c = peak_rc
    thr = level * g[r, c]
    seen = np.zeros_like(g, bool)
    stack, rows, cols = [(r, c)], [], []
    seen[r, c] = True
    while stack:
        y, x = stack.pop()
        rows.append(y)
        cols.append(x)
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ny, nx = y + dy, x + dx
            if 0 <= ny < h and 0 <= nx < w and not seen[ny, nx] and g[ny, nx] >= thr:
                seen[ny, nx] = True
                stack.append((ny, nx))
    return min(rows), min(cols), max(rows) + 1, max(cols) + 1
