"""Visual prompts and previews: a candidate highlighted on the image (fill + contour + box), a numbered
set-of-marks sheet, a zoomed crop for small masks, the heat map, a top-k strip. What the scorer sees is what users
see in previews."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .types import Candidates

PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
    (210, 245, 60), (250, 190, 190), (0, 128, 128), (170, 110, 40), (128, 0, 0)], np.uint8)
HIGHLIGHT = (255, 0, 0)


def _shift_and(m: np.ndarray) -> np.ndarray:
    """Binary erosion by a 3x3 cross (edges count as outside)."""
    out = m.copy()
    out[1:] &= m[:-1]
    out[:-1] &= m[1:]
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    out[0, :] = out[-1, :] = False
    out[:, 0] = out[:, -1] = False
    return out


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    out = m.copy()
    for _ in range(r):
        o = out.copy()
        o[1:] |= out[:-1]
        o[:-1] |= out[1:]
        o[:, 1:] |= out[:, :-1]
        o[:, :-1] |= out[:, 1:]
        out = o
    return out


def contour(mask: np.ndarray, thickness: int = 2) -> np.ndarray:
    """(H, W) bool -> (H, W) bool outline of the mask, ``thickness`` pixels wide."""
    edge = mask & ~_shift_and(mask)
    return _dilate(edge, max(thickness - 1, 0)) if edge.any() else edge


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def overlay(image: np.ndarray, mask: np.ndarray, color=HIGHLIGHT, alpha: float = 0.45, outline: bool = True,
            box: bool = True, label: str | None = None) -> np.ndarray:
    """image (H, W, 3) uint8 with ``mask`` (H, W) bool drawn as a colour fill (``alpha``), a contour and a box."""
    out = image.astype(np.float32)
    col = np.asarray(color, np.float32)
    out[mask] = out[mask] * (1 - alpha) + col * alpha
    if outline:
        out[contour(mask, max(2, min(image.shape[:2]) // 150))] = col
    img = Image.fromarray(np.rint(out).clip(0, 255).astype(np.uint8))
    if (box or label) and mask.any():
        ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        x0, y0, x1, y1 = int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1])
        draw = ImageDraw.Draw(img)
        if box:
            draw.rectangle([x0, y0, x1, y1], outline=tuple(int(c) for c in col), width=max(1, min(image.shape[:2]) // 200))
        if label:
            _label(draw, label, _mark_point(mask), tuple(int(c) for c in col), image.shape[:2])
    return np.asarray(img)


def _mark_point(mask: np.ndarray) -> tuple[int, int]:
    """A point well inside the mask (the most interior pixel after repeated erosion), xy."""
    m = mask
    for _ in range(64):
        e = _shift_and(m)
        if not e.any():
            break
        m = e
    ys, xs = np.nonzero(m)
    cy, cx = ys.mean(), xs.mean()
    i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return int(xs[i]), int(ys[i])


def _label(draw: ImageDraw.ImageDraw, text: str, xy: tuple[int, int], color, hw: tuple[int, int]) -> None:
    size = max(12, min(hw) // 18)
    font = _font(size)
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    w, h = x1 - x0 + 8, y1 - y0 + 8
    x = min(max(xy[0] - w // 2, 0), max(hw[1] - w, 0))
    y = min(max(xy[1] - h // 2, 0), max(hw[0] - h, 0))
    draw.rectangle([x, y, x + w, y + h], fill=(0, 0, 0))
    draw.text((x + 4 - x0, y + 4 - y0), text, fill=tuple(color) if sum(color) > 200 else (255, 255, 255), font=font)


def candidate_color(number: int) -> np.ndarray:
    """The colour of candidate ``number`` in every view (it stays with the candidate, like its number)."""
    return PALETTE[(int(number) - 1) % len(PALETTE)]


def candidate_sheet(image: np.ndarray, candidates: Candidates, alpha: float = 0.45) -> np.ndarray:
    """All candidates on one image, each in its own colour with its number (``candidates.numbers``) at an interior
    point: the set-of-marks view the comparative scorer and the preview use. Larger masks are drawn first."""
    out = image.copy()
    for i in sorted(range(len(candidates)), key=lambda j: -int(candidates.areas[j])):
        out = overlay(out, candidates.masks[i], candidate_color(candidates.numbers[i]), alpha, box=False)
    img = Image.fromarray(out)
    draw = ImageDraw.Draw(img)
    for i in range(len(candidates)):
        if candidates.masks[i].any():
            _label(draw, str(int(candidates.numbers[i])), _mark_point(candidates.masks[i]),
                   tuple(int(c) for c in candidate_color(candidates.numbers[i])), image.shape[:2])
    return np.asarray(img)


def zoom_crop(image: np.ndarray, mask: np.ndarray, context: float = 2.0, min_side: int = 336) -> np.ndarray:
    """A crop around the mask (its box grown ``context`` times), highlighted and upscaled so its short side is at least
    ``min_side``: how a small candidate is shown to the scorer."""
    H, W = mask.shape
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if ys.size == 0:
        return overlay(image, mask)
    cx, cy = (xs[0] + xs[-1] + 1) / 2, (ys[0] + ys[-1] + 1) / 2
    half = max(xs[-1] + 1 - xs[0], ys[-1] + 1 - ys[0], 16) * context / 2
    x0, x1 = int(max(cx - half, 0)), int(min(cx + half, W))
    y0, y1 = int(max(cy - half, 0)), int(min(cy + half, H))
    crop = overlay(image[y0:y1, x0:x1], mask[y0:y1, x0:x1])
    s = max(1.0, min_side / max(1, min(crop.shape[:2])))
    if s > 1:
        crop = np.asarray(Image.fromarray(crop).resize((round(crop.shape[1] * s), round(crop.shape[0] * s)),
                                                       Image.BICUBIC))
    return crop


def candidate_view(image: np.ndarray, mask: np.ndarray, zoom_below: float = 0.02, alpha: float = 0.45) -> np.ndarray:
    """The single image the yes/no and reasoning scorers see for one candidate: the highlighted full image, or for a
    candidate smaller than ``zoom_below`` of the image a zoomed crop of it."""
    if mask.mean() < zoom_below and mask.any():
        return zoom_crop(image, mask)
    return overlay(image, mask, alpha=alpha)


def heatmap_colors(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W, 3) uint8, a blue-to-red ramp (black = 0)."""
    h = np.clip(heatmap, 0, 1)[..., None]
    stops = np.array([(0, 0, 0), (0, 0, 255), (0, 255, 255), (255, 255, 0), (255, 0, 0)], np.float32)
    pos = h * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = pos - lo
    return (stops[lo[..., 0]] * (1 - frac) + stops[lo[..., 0] + 1] * frac).astype(np.uint8)


def heatmap_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The heat map blended over the image."""
    return (image.astype(np.float32) * (1 - alpha) + heatmap_colors(heatmap).astype(np.float32) * alpha).astype(np.uint8)


def topk_strip(image: np.ndarray, candidates: Candidates, k: int, max_height: int = 512) -> np.ndarray:
    """The first ``k`` candidates side by side, each highlighted and labelled with its rank and score."""
    k = max(1, min(k, len(candidates)))
    s = min(1.0, max_height / image.shape[0])
    tiles = []
    for i in range(k):
        score = candidates.scores[i]
        text = f"#{i + 1}" + ("" if np.isnan(score) else f" {score:.2f}")
        tile = overlay(image, candidates.masks[i], candidate_color(candidates.numbers[i]), label=text) \
            if len(candidates) else image
        if s < 1:
            tile = np.asarray(Image.fromarray(tile).resize((round(tile.shape[1] * s), round(tile.shape[0] * s))))
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)
