"""Stage 3, selection: rank by score (ties by the discovery score), answer with the best mask (or the union of the
top-k for multi-object questions) and the ranked candidates with their scores and reasoning."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .types import SegmentationResult, masks_to_boxes

NO_CANDIDATE = "no candidate mask was found; the result is empty (try another wording, or lower peak_threshold)"


def select_mask(found: SegmentationResult, top_k: int = 3, merge: bool = False) -> SegmentationResult:
    """``found``: an answer whose candidates are scored (or not: then the discovery score ranks). Returns a new
    answer with the candidates ranked best first, the mask (top-1, or the union of the top ``top_k`` with
    ``merge``), its box, score and reasoning."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    H, W = found.image_size
    ranked = found.candidates.subset(found.candidates.ranking())
    kind = "segment" if found.kind == "discover" else found.kind
    if len(ranked) == 0:
        warning = "; ".join(w for w in (found.warning, NO_CANDIDATE) if w)
        return replace(found, kind=kind, candidates=ranked, mask=np.zeros((H, W), bool), box=np.zeros(4, np.float32),
                       score=float("nan"), reasoning="", top_k=top_k, merged=False, warning=warning,
                       timings_ms=dict(found.timings_ms))
    k = min(top_k, len(ranked))
    mask = ranked.masks[:k].any(0) if merge else ranked.masks[0].copy()
    return replace(found, kind=kind, candidates=ranked, mask=mask, box=masks_to_boxes(mask[None])[0],
                   score=float(ranked.scores[0]), reasoning=ranked.reasoning[0], top_k=top_k, merged=merge and k > 1,
                   timings_ms=dict(found.timings_ms))
