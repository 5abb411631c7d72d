"""What the testbed's models are taught from the world's exact masks: candidate-like highlights (the masks SAM and
discovery produce: whole objects, parts, loose boxes, groups), the geometry of the view the scorer is shown (the
zoomed crop of ``rea2seg.render.candidate_view``), per-token labels on the VLM's token grid and attention targets.

The token grid here is computed independently of the engine (``rea2seg.models.attention.token_grid``): Qwen2.5-VL's
merged image tokens are row-major over the resized image, ``image_grid_thw / merge`` cells. So a wrong grid mapping
in the engine is not mirrored by the training data, and the testbed catches it.
"""
from __future__ import annotations

import numpy as np

from . import world
from .world import Scene

#: ScoringConfig's defaults: what ``candidate_view`` is called with at inference
ZOOM_BELOW, ALPHA = 0.02, 0.45
N_COLOUR = len(world.ALL_COLOURS) + 1  # + background
N_SHAPE = len(world.ALL_SHAPES) + 1
N_SIZE = 3


def view_box(mask: np.ndarray, zoom_below: float = ZOOM_BELOW, context: float = 2.0) -> tuple[int, int, int, int] | None:
    """The crop (x0, y0, x1, y1) ``render.candidate_view`` shows for ``mask`` (its ``zoom_crop``), or None when it
    shows the whole image. Re-derived from the renderer's documented behaviour (box grown ``context`` times, at least
    16 px, clipped to the image); tests pin it against the renderer."""
    if not (mask.mean() < zoom_below and mask.any()):
        return None
    H, W = mask.shape
    ys, xs = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    cx, cy = (xs[0] + xs[-1] + 1) / 2, (ys[0] + ys[-1] + 1) / 2
    half = max(xs[-1] + 1 - xs[0], ys[-1] + 1 - ys[0], 16) * context / 2
    return int(max(cx - half, 0)), int(max(cy - half, 0)), int(min(cx + half, W)), int(min(cy + half, H))


def cell_edges(n_pixels: int, n_cells: int) -> np.ndarray:
    return np.linspace(0, n_pixels, n_cells + 1).round().astype(int)


def token_labels(sc: Scene, highlight: np.ndarray | None, crop, gh: int, gw: int) -> dict:
    """Per-token labels for a view of ``sc`` (the whole image, or ``crop``) on a ``gh x gw`` token grid, row-major:
    colour / shape / size class of the object covering most of the cell (0 = background; an object must cover 25%),
    ``hl`` (1 when over 40% of the cell is highlighted), ``cover`` (N_objects, gh*gw) fractions, ``hl_frac``."""
    ids = sc.id_map()
    hl = highlight if highlight is not None else np.zeros((world.S, world.S), bool)
    if crop is not None:
        x0, y0, x1, y1 = crop
        ids, hl = ids[y0:y1, x0:x1], hl[y0:y1, x0:x1]
    H, W = ids.shape
    ye, xe = cell_edges(H, gh), cell_edges(W, gw)
    area = np.outer(np.diff(ye), np.diff(xe)).astype(np.float32)

    def pool(a: np.ndarray) -> np.ndarray:  # (H, W) -> (gh, gw) sums over each cell
        return np.add.reduceat(np.add.reduceat(a, ye[:-1], axis=0), xe[:-1], axis=1)

    n = len(sc.objects)
    cover = np.stack([pool((ids == i).astype(np.float32)) for i in range(n)]) / area
    hl_frac = (pool(hl.astype(np.float32)) / area).astype(np.float32)
    best, frac = cover.argmax(0), cover.max(0)
    on = frac > 0.25
    lut = lambda f: np.array([f(o) for o in sc.objects], np.int64)  # noqa: E731
    colour = np.where(on, lut(lambda o: world.ALL_COLOURS.index(o.colour) + 1)[best], 0)
    shape = np.where(on, lut(lambda o: world.ALL_SHAPES.index(o.shape) + 1)[best], 0)
    size = np.where(on, lut(lambda o: 1 if o.size == "small" else 2)[best], 0)
    hl_lab = (hl_frac > 0.4).astype(np.int64)
    flat = lambda a: a.reshape(*a.shape[:-2], gh * gw)  # noqa: E731
    return {"colour": flat(colour), "shape": flat(shape), "size": flat(size), "hl": flat(hl_lab),
            "cover": flat(cover), "hl_frac": flat(hl_frac)}


def objects_target(cover: np.ndarray, objects: list[int]) -> np.ndarray | None:
    """A distribution over tokens on ``objects``: each object's sqrt-coverage scaled to peak 1 (so a small instance
    is as bright as a large one and gets its own peak), summed, normalised; None if none is visible."""
    maps = []
    for i in objects:
        m = np.sqrt(cover[i])
        if m.max() > 0:
            maps.append(m / m.max())
    if not maps:
        return None
    t = np.sum(maps, 0)
    return (t / t.sum()).astype(np.float32)


# ---- candidate-like masks ---------------------------------------------------------------------------------------

def part_of(rng, sc: Scene, i: int) -> np.ndarray:
    """A piece of object ``i``: the object within a disc around one of its pixels (what SAM's smallest output
    gives for a click) or cut by a half-plane."""
    m = sc.masks[i]
    ys, xs = np.nonzero(m)
    yy, xx = np.mgrid[0:world.S, 0:world.S]
    o = sc.objects[i]
    r = max(abs(o.r), 6)
    if rng.random() < 0.5:
        k = int(rng.integers(len(xs)))
        part = m & ((xx - xs[k]) ** 2 + (yy - ys[k]) ** 2 < (rng.uniform(0.45, 0.7) * r) ** 2)
    else:
        a = rng.uniform(0, 2 * np.pi)
        part = m & ((xx - o.cx) * np.cos(a) + (yy - o.cy) * np.sin(a) > rng.uniform(-0.2, 0.5) * r)
    return part if part.sum() > 20 else m.copy()


def nearest(sc: Scene, i: int) -> int | None:
    """The object nearest to object ``i`` (centre distance)."""
    o = sc.objects[i]
    d = [((p.cx - o.cx) ** 2 + (p.cy - o.cy) ** 2, j) for j, p in enumerate(sc.objects) if j != i]
    return min(d)[1] if d else None


def candidate_like(rng, sc: Scene, i: int, kind: str | None = None) -> tuple[np.ndarray, str]:
    """A mask like the candidates discovery makes, around object ``i``: "whole", "part", "box" (the object plus
    background: a loose box), "group" (the object and its nearest neighbour). Returns (mask, kind)."""
    kind = kind or str(rng.choice(["whole", "part", "box", "group"], p=[0.45, 0.25, 0.15, 0.15]))
    m = sc.masks[i]
    if kind == "part":
        return part_of(rng, sc, i), kind
    if kind == "box":
        o = sc.objects[i]
        hw, hh = o.half_extent
        g = rng.uniform(0.25, 0.8)
        x0, x1 = max(0, int(o.cx - hw * (1 + g))), min(world.S, int(o.cx + hw * (1 + g)) + 1)
        y0, y1 = max(0, int(o.cy - hh * (1 + g))), min(world.S, int(o.cy + hh * (1 + g)) + 1)
        box = np.zeros_like(m)
        box[y0:y1, x0:x1] = True
        return box | m, kind
    if kind == "group":
        j = nearest(sc, i)
        return (m | sc.masks[j], kind) if j is not None else (m.copy(), "whole")
    return m.copy(), "whole"


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / u if u else 0.0
