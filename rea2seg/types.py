"""The currency types. ``Candidates`` (parallel arrays: created by discovery, enriched by scoring, ranked by
selection, drawn by the renderer) and ``SegmentationResult``, the one answer type every stage returns and every door
serialises (``to_json``) or converts (masks, previews). Also the progress / cancellation hooks every stage takes."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from .errors import Cancelled, InputError

#: progress(stage, done, total): ComfyUI's ProgressBar, MCP progress notifications and the CLI's stderr lines plug in
Progress = Callable[[str, int, int], None]
#: cancel() -> True to stop; checked between stages and between candidate batches
CancelCheck = Callable[[], bool]


def check_cancel(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("cancelled by the caller")


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


def json_score(value: float) -> float | None:
    """A score as JSON shows it: rounded to 4 places, ``None`` (null) when there is none."""
    return None if value is None or math.isnan(value) else round(float(value), 4)


def format_score(value: float) -> str:
    """A score as text shows it: "0.873", or "unscored"."""
    return "unscored" if value is None or math.isnan(value) else f"{float(value):.3f}"


def _box_json(box: np.ndarray) -> list[float]:
    return [round(float(v), 1) for v in box]


@dataclass
class Candidates:
    """N candidate masks for one image, as parallel arrays.

    masks: (N, H, W) bool. boxes: (N, 4) float32 xyxy in pixels. points: (N, 2) float32 xy of the positive point
    prompt (NaN for box/proposal-only prompts). sam_scores: (N,) SAM's predicted IoU. attention_scores: (N,) share of
    the heat map's mass inside the mask. sources: where each came from ("peak:0", "box:0", "vlm:1").
    numbers: (N,) int64, each candidate's number (from 1) as discovery numbered it; it stays with the candidate through
    scoring, ranking and subsets, so "candidate 3" means the same mask in every answer about this image.
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
    numbers: np.ndarray = None  # type: ignore[assignment]

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
        self.numbers = (np.arange(1, n + 1, dtype=np.int64) if self.numbers is None
                        else np.asarray(self.numbers, np.int64).reshape(n))
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
        """A new Candidates with the rows ``index`` (int array, slice or bool mask), in that order; numbers kept."""
        idx = np.arange(len(self))[index]
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        return Candidates(self.masks[idx], self.boxes[idx], self.points[idx], self.sam_scores[idx],
                          self.attention_scores[idx], pick(self.sources), self.scores[idx], self.p_yes[idx],
                          pick(self.scored_by), pick(self.reasoning), self.numbers[idx])

    @classmethod
    def merge(cls, parts: list["Candidates"]) -> "Candidates":
        """One Candidates from several sources, renumbered 1..N in order."""
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

    def index_of(self, number: int) -> int:
        """The row of candidate ``number``; ``InputError`` naming the numbers that exist."""
        hits = np.flatnonzero(self.numbers == number) if isinstance(number, (int, np.integer)) \
            and not isinstance(number, bool) else []
        if len(hits) == 0:
            have = ", ".join(str(int(n)) for n in sorted(self.numbers)) or "none"
            raise InputError(f"candidate {number!r} does not exist; the candidates are: {have}")
        return int(hits[0])

    def summary(self) -> list[dict]:
        """JSON-ready per-candidate rows (no masks), in this object's order; ``number`` is the candidate's number, as
        drawn on the candidates image."""
        return [
            {"number": int(self.numbers[i]), "box_xyxy": _box_json(self.boxes[i]), "area": int(self.areas[i]),
             "score": json_score(self.scores[i]), "p_yes": json_score(self.p_yes[i]),
             "sam_score": round(float(self.sam_scores[i]), 4),
             "attention_score": round(float(self.attention_scores[i]), 4),
             "source": self.sources[i], "scored_by": self.scored_by[i], "reasoning": self.reasoning[i]}
            for i in range(len(self))
        ]


AnswerKind = Literal["discover", "score", "segment"]


@dataclass
class SegmentationResult:
    """The answer: what every stage returns and every door serialises.

    kind: "discover" (candidates found, nothing selected: ``mask`` is None), "segment" (all three stages) or "score"
    (candidates of an earlier answer scored again and selected).
    question: the question as checked. image: (H, W, 3) uint8, the normalised input (None only when ``select`` was
    called without it). candidates: ranked best first once selected, in discovery order before. heatmap: (H, W)
    float32 in [0, 1], the attention map on the image. mask: (H, W) bool, the answer (the top candidate, or the union
    of the top-k when ``merged``); box: (4,) float32 xyxy of it; score: its score in [0, 1], NaN if nothing could be
    scored; reasoning: what the scorer wrote about it. mode: the scoring mode used (None: unscored). top_k: how many
    ranked candidates the caller asked to see. grid: (h, w) token-grid map and peaks: (K, 2) xy in pixels, from
    discovery. timings_ms: per stage. warning: set when the output is meaningless (random-weight models) or degraded
    (no candidate found). result_id: the id a door's result store gave it (None in the engine).
    """

    question: str
    image: np.ndarray | None
    candidates: Candidates
    heatmap: np.ndarray | None = None
    mask: np.ndarray | None = None
    box: np.ndarray | None = None
    score: float = float("nan")
    reasoning: str = ""
    kind: AnswerKind = "segment"
    mode: str | None = None
    top_k: int = 3
    merged: bool = False
    grid: np.ndarray | None = None
    peaks: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    warning: str | None = None
    result_id: str | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W)."""
        if self.image is not None:
            return int(self.image.shape[0]), int(self.image.shape[1])
        return self.candidates.image_size

    @property
    def selected(self) -> bool:
        return self.mask is not None

    @property
    def top(self) -> Candidates:
        """The ``top_k`` best candidates."""
        return self.candidates.subset(slice(0, self.top_k))

    def candidate_mask(self, number: int | None = None) -> np.ndarray:
        """The answer mask (``number`` None) or the mask of candidate ``number`` (as numbered on the candidates image),
        (H, W) bool. ``InputError`` if there is no such mask."""
        if number is None:
            if self.mask is None:
                n = len(self.candidates)
                where = f" {self.result_id}" if self.result_id else ""
                raise InputError(f"result{where} holds {n} unscored candidates and no answer; pass a candidate "
                                 f"number or score them first" if n else f"result{where} has no candidates")
            return self.mask
        return self.candidates.masks[self.candidates.index_of(number)]

    def mask_info(self, number: int | None = None) -> dict:
        """Size, area and box of the answer mask or of candidate ``number`` (JSON-ready)."""
        mask = self.candidate_mask(number)
        h, w = mask.shape
        return {"candidate": number, "image_size": [int(w), int(h)], "mask_area": int(mask.sum()),
                "box_xyxy": _box_json(masks_to_boxes(mask[None])[0])}

    def to_json(self, **extra) -> dict:
        """A JSON-ready summary (no arrays): what the CLI prints, the MCP server returns as structured content and the
        LangChain tools send as text. Selected answers list the ``top_k`` best candidates, discovery results all."""
        h, w = self.image_size
        out: dict = {"kind": self.kind, "question": self.question, "image_size": [w, h]}
        if self.result_id:
            out["result_id"] = self.result_id
        if self.selected:
            out.update({"box_xyxy": _box_json(self.box), "score": json_score(self.score), "reasoning": self.reasoning,
                        "mask_area": int(self.mask.sum()), "mask_fraction": round(float(self.mask.mean()), 4),
                        "mode": self.mode, "merged": self.merged,
                        "candidates": self.candidates.summary()[: self.top_k]})
        else:
            out["candidates"] = self.candidates.summary()
        out["n_candidates"] = len(self.candidates)
        out["timings_ms"] = {k: round(float(v), 1) for k, v in self.timings_ms.items()}
        if self.warning:
            out["warning"] = self.warning
        out.update(extra)
        return out
