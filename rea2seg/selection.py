"""Stage 3, selection: rank by score (ties by the discovery score), return the best mask (or the union of the top-k
for multi-object questions) and the ranked top-k with scores and reasoning."""
from __future__ import annotations

import numpy as np

from .candidates import Candidates, SegmentationResult, masks_to_boxes

NO_CANDIDATE = "no candidate mask was found; the result is empty (try another wording, or lower peak_threshold)"


def select_mask(question: str, candidates: Candidates, top_k: int = 3, merge: bool = False,
                heatmap: np.ndarray | None = None, timings_ms: dict | None = None, mode: str = "yesno",
                warning: str | None = None) -> SegmentationResult:
    """candidates: scored (or not: then the discovery score ranks). Returns a ``SegmentationResult`` whose
    ``candidates`` are ranked best first."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    H, W = candidates.image_size
    ranked = candidates.subset(candidates.ranking())
    heat = heatmap if heatmap is not None else np.zeros((H, W), np.float32)
    if len(ranked) == 0:
        return SegmentationResult(question, np.zeros((H, W), bool), np.zeros(4, np.float32), float("nan"), "",
                                  ranked, top_k, heat, dict(timings_ms or {}), mode, merge,
                                  "; ".join(w for w in (warning, NO_CANDIDATE) if w))
    k = min(top_k, len(ranked))
    mask = ranked.masks[:k].any(0) if merge else ranked.masks[0].copy()
    box = masks_to_boxes(mask[None])[0]
    return SegmentationResult(question, mask, box, float(ranked.scores[0]), ranked.reasoning[0], ranked, top_k, heat,
                              dict(timings_ms or {}), mode, merge and k > 1, warning)
