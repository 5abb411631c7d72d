"""LISA's polygon rasterisation without OpenCV.

LISA draws every polygon with cv2.polylines(mask, pts, True, v, 1) then cv2.fillPoly(mask, pts, v), where
pts = np.array([points], dtype=np.int32) (coordinates truncated toward zero). For thickness 1, 8-connected lines and
shift 0, fillPoly already draws each edge with the same Bresenham line as polylines, so the result is the union of
(a) OpenCV's LINE_8 Bresenham line along every edge, clipped to the image, and (b) OpenCV's even-odd scanline fill
(FillEdgeCollection, 16.16 fixed point, span [ceil(x_left), floor(x_right)] on each row y0 <= y < y1 of an edge).
Both are reproduced here with the same integer arithmetic; tests pin the result against masks made by OpenCV.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError

_XY_SHIFT = 16
_XY_ONE = 1 << _XY_SHIFT


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _clip_line(width: int, height: int, p1: list[int], p2: list[int]) -> bool:
    """OpenCV's ``clipLine(Size, pt1, pt2)``: clips in place, returns whether anything is inside."""
    right, bottom = width - 1, height - 1
    x1, y1 = p1
    x2, y2 = p2
    c1 = (x1 < 0) + (x1 > right) * 2 + (y1 < 0) * 4 + (y1 > bottom) * 8
    c2 = (x2 < 0) + (x2 > right) * 2 + (y2 < 0) * 4 + (y2 > bottom) * 8
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += int(float(a - y1) * float(x2 - x1) / float(y2 - y1))
            y1 = a
            c1 = (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += int(float(a - y2) * float(x2 - x1) / float(y2 - y1))
            y2 = a
            c2 = (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += int(float(a - x1) * float(y2 - y1) / float(x2 - x1))
                x1 = a
                c1 = 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += int(float(a - x2) * float(y2 - y1) / float(x2 - x1))
                x2 = a
                c2 = 0
    p1[:] = (x1, y1)
    p2[:] = (x2, y2)
    return (c1 | c2) == 0


def _line_pixels(width: int, height: int, p: Sequence[int], q: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (ys, xs) of OpenCV's 8-connected ``Line`` (LineIterator, left to right) from p to q."""
    a, b = [int(p[0]), int(p[1])], [int(q[0]), int(q[1])]
    if not (0 <= a[0] < width and 0 <= b[0] < width and 0 <= a[1] < height and 0 <= b[1] < height):
        if not _clip_line(width, height, a, b):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if b[0] < a[0]:  # leftToRight: start from the left end
        a, b = b, a
    dx, dy = b[0] - a[0], b[1] - a[1]
    sy = -1 if dy < 0 else 1
    dy = abs(dy)
    major, minor = (dy, dx) if dy > dx else (dx, dy)
    i = np.arange(major + 1, dtype=np.int64)
    # The iterator steps along the major axis and takes a minor step when its error term is negative: the minor
    # offset after i steps is i*minor/major rounded half down (checked against the iterator by brute force).
    m = (2 * i * minor + major - 1) // (2 * major) if major else np.zeros(1, np.int64)
    if dy > dx:
        return a[1] + sy * i, a[0] + m
    return a[1] + sy * m, a[0] + i


def _fill_spans(mask: np.ndarray, pts: np.ndarray) -> None:
    """OpenCV's CollectPolyEdges + FillEdgeCollection for one polygon (even-odd rule), drawing lines too."""
    height, width = mask.shape
    n = len(pts)
    edges = []  # (y0, y1, x, dx) in 16.16 fixed point
    for i in range(n):
        x0, y0 = int(pts[i - 1][0]), int(pts[i - 1][1])
        x1, y1 = int(pts[i][0]), int(pts[i][1])
        ys, xs = _line_pixels(width, height, (x0, y0), (x1, y1))
        mask[ys, xs] = True
        t0, t1 = [x0, y0], [x1, y1]
        c0y, c1y = y0, y1
        if not (0 <= x0 < width and 0 <= x1 < width and 0 <= y0 < height and 0 <= y1 < height):
            _clip_line(width, height, t0, t1)
            if t0[1] != t1[1]:
                c0y, c1y = t0[1], t1[1]
        c0x, c1x = t0[0] << _XY_SHIFT, t1[0] << _XY_SHIFT
        if y0 == y1:
            continue
        dx = _cdiv(c1x - c0x, c1y - c0y)
        if y0 < y1:
            edges.append((y0, y1, c0x + (y0 - c0y) * dx, dx))
        else:
            edges.append((y1, y0, c1x + (y1 - c1y) * dx, dx))
    if len(edges) < 2:
        return
    e = np.array(edges, dtype=np.int64)
    ends = e[:, 2] + (e[:, 1] - e[:, 0]) * e[:, 3]
    if (e[:, 1].max() < 0 or e[:, 0].min() >= height or max(e[:, 2].max(), ends.max()) < 0
            or min(e[:, 2].min(), ends.min()) >= (width << _XY_SHIFT)):
        return
    # Every edge is active on rows y0 <= y < y1 at x = x_start + (y - y0) * dx. On each row the active edges, sorted
    # by x, pair up (1st-2nd, 3rd-4th, ...) into spans; ties do not change the spans.
    counts = e[:, 1] - e[:, 0]
    owner = np.repeat(np.arange(len(e)), counts)
    k = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    rows = e[owner, 0] + k
    xs = e[owner, 2] + k * e[owner, 3]
    keep = (rows >= 0) & (rows < height)
    rows, xs = rows[keep], xs[keep]
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    first = np.r_[True, rows[1:] != rows[:-1]]
    rank = np.arange(rows.size) - np.maximum.accumulate(np.where(first, np.arange(rows.size), 0))
    left = (rank % 2 == 0) & np.r_[rows[1:] == rows[:-1], False]
    li = np.flatnonzero(left)
    span_rows = rows[li]
    x_lo = (xs[li] + _XY_ONE - 1) >> _XY_SHIFT
    x_hi = xs[li + 1] >> _XY_SHIFT
    ok = (x_lo < width) & (x_hi >= 0)
    span_rows, x_lo, x_hi = span_rows[ok], np.maximum(x_lo[ok], 0), np.minimum(x_hi[ok], width - 1)
    ok = x_lo <= x_hi
    if not ok.any():
        return
    diff = np.zeros((height, width + 1), np.int32)
    np.add.at(diff, (span_rows[ok], x_lo[ok]), 1)
    np.add.at(diff, (span_rows[ok], x_hi[ok] + 1), -1)
    mask |= np.cumsum(diff[:, :width], axis=1) > 0


def rasterize_polygon(points, height: int, width: int) -> np.ndarray:
    """One LabelMe polygon -> (height, width) bool, pixel-identical to LISA's
    ``cv2.polylines(m, np.array([points], np.int32), True, 1, 1); cv2.fillPoly(m, np.array([points], np.int32), 1)``.

    points: sequence of (x, y) in pixels (floats are truncated toward zero, as ``np.int32`` does).
    """
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("polygon points must be a list of [x, y] numbers") from None
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0 or not np.isfinite(pts).all():
        raise InputError(f"polygon points must be a non-empty list of [x, y] numbers, got shape {pts.shape}")
    pts = pts.astype(np.int32).astype(np.int64)
    mask = np.zeros((height, width), bool)
    _fill_spans(mask, pts)
    return mask
