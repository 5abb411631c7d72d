"""The currency types: ``Candidates`` (parallel arrays, created by discovery, enriched by scoring, consumed by
selection, drawn by the renderer, converted by each door) and ``SegmentationResult``."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """masks: (N, H, W) bool -> (N, 4) float32 xyxy (x2/y2 exclusive, pixel edges); an empty mask gives zeros."""
    n = masks.shape[0]
    boxes = np.zeros((n, 4), np.float32)
    for i in range(n):
        rows = np.flatnonzero(masks[i].any(1))
        cols = np.flatnonzero(masks[i].any(0))
        if rows.size:
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


@dataclass
class Candidates:
    """N candidate masks for one image, as parallel arrays.

    masks: (N, H, W) bool. boxes: (N, 4) float32 xyxy in pixels. points: (N, 2) float32 xy of the positive point
    prompt (NaN for box/proposal-only prompts). sam_scores: (N,) SAM's predicted IoU. attention_scores: (N,) share of
    the heat map's mass inside the mask. sources: where each came from ("peak:0", "box:0", "vlm:1").
    scores: (N,) float32 in [0, 1], NaN until scored. p_yes: (N,) P(Yes) from the yes/no scorer, NaN if not run.
    scored_by: per candidate "yesno" | "reasoning" | "comparative" | "fallback:yesno" | "" (unscored).
    reasoning: per candidate text the scorer wrote ("" if none).
    """

    masks: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    sam_scores: np.ndarray
    attention_scores: np.ndarray
    sources: list[str]
    scores: np.ndarray = None  # type: ignore[assignment]
    p_yes: np.ndarray = None  # type: ignore[assignment]
    scored_by: list[str] = None  # type: ignore[assignment]
    reasoning: list[str] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.masks = np.asarray(self.masks, dtype=bool)
        if self.masks.ndim != 3:
            raise ValueError(f"masks must be (N, H, W), got shape {self.masks.shape}")
        n = self.masks.shape[0]
        self.boxes = np.asarray(self.boxes, np.float32).reshape(n, 4)
        self.points = np.asarray(self.points, np.float32).reshape(n, 2)
        self.sam_scores = np.asarray(self.sam_scores, np.float32).reshape(n)
        self.attention_scores = np.asarray(self.attention_scores, np.float32).reshape(n)
        nan = np.full(n, np.nan, np.float32)
        self.scores = nan.copy() if self.scores is None else np.asarray(self.scores, np.float32).reshape(n)
        self.p_yes = nan.copy() if self.p_yes is None else np.asarray(self.p_yes, np.float32).reshape(n)
        self.scored_by = [""] * n if self.scored_by is None else list(self.scored_by)
        self.reasoning = [""] * n if self.reasoning is None else list(self.reasoning)
        self.sources = list(self.sources)
        for name in ("sources", "scored_by", "reasoning"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} masks")

    def __len__(self) -> int:
        return self.masks.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @property
    def areas(self) -> np.ndarray:
        """(N,) int64 pixel counts."""
        return self.masks.reshape(len(self), -1).sum(1)

    @property
    def discovery_scores(self) -> np.ndarray:
        """(N,) the score discovery ranks by: attention mass weighted by SAM's confidence."""
        return self.attention_scores * self.sam_scores

    @property
    def is_scored(self) -> bool:
        return bool(len(self)) and not np.isnan(self.scores).all()

    @classmethod
    def empty(cls, height: int, width: int) -> "Candidates":
        z = np.zeros(0, np.float32)
        return cls(np.zeros((0, height, width), bool), np.zeros((0, 4)), np.zeros((0, 2)), z, z, [])

    @classmethod
    def from_masks(cls, masks: np.ndarray, sources: list[str] | None = None) -> "Candidates":
        """Candidates from bare masks (N, H, W), e.g. another method's output to be scored."""
        masks = np.asarray(masks, bool)
        n = masks.shape[0]
        return cls(masks, masks_to_boxes(masks), np.full((n, 2), np.nan), np.ones(n), np.ones(n),
                   sources or [f"mask:{i}" for i in range(n)])

    def subset(self, index) -> "Candidates":
        """A new Candidates with the rows ``index`` (int array, slice or bool mask), in that order."""
        idx = np.arange(len(self))[index]
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return Candidates(self.masks[idx], self.boxes[idx], self.points[idx], self.sam_scores[idx],
                          self.attention_scores[idx], pick(self.sources), self.scores[idx], self.p_yes[idx],
                          pick(self.scored_by), pick(self.reasoning))

    @classmethod
    def merge(cls, parts: list["Candidates"]) -> "Candidates":
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("merge needs at least one non-empty Candidates")
        cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
        join = lambda name: sum((getattr(p, name) for p in parts), [])  # noqa: E731
        return cls(cat("masks"), cat("boxes"), cat("points"), cat("sam_scores"), cat("attention_scores"),
                   join("sources"), cat("scores"), cat("p_yes"), join("scored_by"), join("reasoning"))

    def ranking(self) -> np.ndarray:
        """(N,) indices best first: by score (unscored last), ties broken by the discovery score."""
        score = np.where(np.isnan(self.scores), -np.inf, self.scores)
        return np.lexsort((-self.discovery_scores, -score))

    def summary(self) -> list[dict]:
        """JSON-ready per-candidate rows (no masks); ``number`` is 1-based, as drawn on the candidates image."""
        return [
            {"number": i + 1, "box_xyxy": [round(float(v), 1) for v in self.boxes[i]], "area": int(self.areas[i]),
             "score": None if np.isnan(self.scores[i]) else round(float(self.scores[i]), 4),
             "p_yes": None if np.isnan(self.p_yes[i]) else round(float(self.p_yes[i]), 4),
             "sam_score": round(float(self.sam_scores[i]), 4),
             "attention_score": round(float(self.attention_scores[i]), 4),
             "source": self.sources[i], "scored_by": self.scored_by[i], "reasoning": self.reasoning[i]}
            for i in range(len(self))
        ]


@dataclass
class SegmentationResult:
    """What ``Rea2Seg.segment`` returns.

    mask: (H, W) bool, the answer (the top-1 candidate, or the union of the top-k when ``merge`` was asked).
    box: (4,) float32 xyxy of ``mask``. score: its score in [0, 1] (NaN if nothing could be scored).
    candidates: all candidates, ranked best first (``candidates.scores`` descending). top_k: how many of them the
    caller asked for. heatmap: (H, W) float32 in [0, 1], the attention map on the image. timings_ms: per stage.
    warning: set when the output is meaningless (random-weight models) or degraded (no candidate found).
    """

    question: str
    mask: np.ndarray
    box: np.ndarray
    score: float
    reasoning: str
    candidates: Candidates
    top_k: int
    heatmap: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)
    mode: str = "yesno"
    merged: bool = False
    warning: str | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    @property
    def top(self) -> Candidates:
        return self.candidates.subset(slice(0, self.top_k))

    def to_json(self, **extra) -> dict:
        """A JSON-ready summary (no arrays): what the CLI prints and the MCP server returns as structured content."""
        h, w = self.image_size
        out = {
            "question": self.question,
            "box_xyxy": [round(float(v), 1) for v in self.box],
            "score": None if np.isnan(self.score) else round(float(self.score), 4),
            "reasoning": self.reasoning,
            "image_size": [w, h],
            "mask_area": int(self.mask.sum()),
            "mode": self.mode,
            "merged": self.merged,
            "candidates": self.candidates.summary()[: self.top_k],
            "n_candidates": len(self.candidates),
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }
        if self.warning:
            out["warning"] = self.warning
        out.update(extra)
        return out

    def with_candidates(self, candidates: Candidates) -> "SegmentationResult":
        return replace(self, candidates=candidates)
