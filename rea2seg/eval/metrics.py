"""ReasonSeg metrics exactly as LISA computes them (``train_ds.py:validate`` + ``utils/utils.py``), plus the
top-k and candidate-recall oracles. Standalone: numpy only, no model import.

LISA's definitions, for a prediction P (bool) and a target T (0 background, 1 target, 255 ignore):
- pixels where T == 255 count in neither the intersection nor the union;
- I = |P ∧ T=1|, U = |P ∧ T≠255| + |T=1| − I;
- per-sample IoU = I / (U + 1e-5), and 1.0 when U == 0 (empty prediction on an empty or all-ignore target);
- gIoU = mean of the per-sample IoUs; cIoU = ΣI / (ΣU + 1e-10).
LISA computes in float32 on the GPU; we compute in float64, which differs by rounding only (< 1e-6).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError

IGNORE_INDEX = 255
IOU_EPS = 1e-5
CIOU_EPS = 1e-10

#: ReasonSeg-SGDR's four reasoning categories, in the paper's column order.
SGDR_CATEGORIES = ("Discriminative", "Geometric", "Spatial", "Multi-step")

#: The convention every report states, so numbers from other codebases are not compared blindly.
CONVENTION = ("LISA: ignore (255) pixels excluded from I and U; per-sample IoU = I/(U+1e-5), 1 when U=0; "
              "gIoU = mean per-sample IoU; cIoU = sum(I)/sum(U)")


def intersection_union(pred: np.ndarray, target: np.ndarray, ignore_index: int = IGNORE_INDEX) -> tuple[int, int]:
    """pred: (H, W) bool, or numbers with non-zero = foreground. target: (H, W) bool, or uint8 with 0 background,
    1 target and ``ignore_index`` ignore. Returns (intersection, union) in pixels, ignore pixels excluded."""
    p = np.asarray(pred)
    t = np.asarray(target)
    if p.shape != t.shape or p.ndim != 2:
        raise InputError(f"prediction {p.shape[::-1]} and target {t.shape[::-1]} must be 2-D masks of the same "
                         f"size (W, H); resize the prediction to the image size")
    p = p.astype(bool) if p.dtype != bool else p
    if t.dtype == bool:
        fg, valid = t, None
    else:
        fg = t == 1
        other = ~fg & (t != 0) & (t != ignore_index)
        if other.any():
            raise InputError(f"target values must be 0, 1 or {ignore_index}, found {np.unique(t[other])[:5]}")
        valid = t != ignore_index
    inter = int(np.count_nonzero(p & fg))
    area_pred = int(np.count_nonzero(p if valid is None else p & valid))
    return inter, area_pred + int(np.count_nonzero(fg)) - inter


def iou_from(intersection: int, union: int) -> float:
    """LISA's per-sample IoU: I / (U + 1e-5), plus 1 for a no-object sample (U == 0)."""
    return intersection / (union + IOU_EPS) + (1.0 if union == 0 else 0.0)


def sample_iou(pred: np.ndarray, target: np.ndarray) -> float:
    return iou_from(*intersection_union(pred, target))


def giou(overlaps: Iterable[tuple[int, int]]) -> float:
    """Mean per-sample IoU over (I, U) pairs (NaN for none)."""
    ious = [iou_from(i, u) for i, u in overlaps]
    return float(np.mean(ious)) if ious else float("nan")


def ciou(overlaps: Iterable[tuple[int, int]]) -> float:
    """Cumulative IoU ΣI / (ΣU + 1e-10) over (I, U) pairs (NaN for none)."""
    pairs = list(overlaps)
    if not pairs:
        return float("nan")
    return sum(i for i, _ in pairs) / (sum(u for _, u in pairs) + CIOU_EPS)


def best_overlap(overlaps: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The (I, U) with the highest per-sample IoU (the first on ties); None for an empty list."""
    if not overlaps:
        return None
    ious = [iou_from(i, u) for i, u in overlaps]
    return tuple(overlaps[int(np.argmax(ious))])  # type: ignore[return-value]


@dataclass
class SampleResult:
    """What one evaluated sample contributes.

    output: (I, U) of the mask the method returned (Top-1). candidates: (I, U) of every candidate, ranked best first
    by the method's own scores (empty for a method without candidates).
    """

    id: str
    output: tuple[int, int]
    candidates: list[tuple[int, int]] = field(default_factory=list)
    category: str | None = None
    is_sentence: bool | None = None

    @property
    def iou(self) -> float:
        return iou_from(*self.output)

    def top_k(self, k: int) -> tuple[int, int]:
        """Oracle within the k highest-scored candidates (the paper's "Top-k"); the output when there are none.
        k = 1 is the output itself (with merging off, the output *is* the top candidate)."""
        if k <= 1 or not self.candidates:
            return self.output
        return best_overlap(self.candidates[:k])  # type: ignore[return-value]

    def oracle(self) -> tuple[int, int]:
        """Candidate-recall oracle: the best candidate overall (separates discovery errors from ranking errors)."""
        return best_overlap(self.candidates) or self.output


def scores(results: Sequence[SampleResult], ks: Sequence[int] = (1,)) -> dict:
    """{"n", "giou", "ciou", "top_k": {"k": {"giou", "ciou"}}, "oracle": {...}} for a group of samples."""
    out: dict = {"n": len(results), "giou": giou(r.output for r in results),
                 "ciou": ciou(r.output for r in results)}
    out["top_k"] = {str(k): {"giou": giou(r.top_k(k) for r in results), "ciou": ciou(r.top_k(k) for r in results)}
                    for k in sorted(set(ks) | {1})}
    if any(r.candidates for r in results):
        out["oracle"] = {"giou": giou(r.oracle() for r in results), "ciou": ciou(r.oracle() for r in results)}
        out["mean_candidates"] = float(np.mean([len(r.candidates) for r in results]))
    return out


def category_order(categories: Iterable[str]) -> list[str]:
    """SGDR's categories in the paper's order, then any others alphabetically."""
    present = set(categories)
    return [c for c in SGDR_CATEGORIES if c in present] + sorted(present - set(SGDR_CATEGORIES))


def summarize(results: Sequence[SampleResult], ks: Sequence[int] = (1,)) -> dict:
    """Overall scores plus breakdowns per category and per short/long query (LISA's ``is_sentence``), where the data
    has them."""
    out = scores(results, ks)
    cats = [r.category for r in results if r.category is not None]
    if cats:
        out["by_category"] = {c: scores([r for r in results if r.category == c], ks) for c in category_order(cats)}
        uncategorised = [r for r in results if r.category is None]
        if uncategorised:
            out["by_category"]["(none)"] = scores(uncategorised, ks)
    if any(r.is_sentence is not None for r in results):
        out["by_query"] = {name: scores([r for r in results if r.is_sentence is flag], ks)
                           for name, flag in (("short", False), ("long", True))
                           if any(r.is_sentence is flag for r in results)}
    return out
