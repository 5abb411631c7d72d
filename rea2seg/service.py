"""What the agent doors (MCP server, LangChain tools) share: checked inputs, one gate in front of the engine, results
kept under ids for follow-up calls, small previews, masks out.

A door builds a job (argument checks happen right there, so bad input fails before any waiting), runs it with
``run`` or ``run_async`` and converts the ``AgentResult`` it gets into its own types. Nothing here knows MCP or
LangChain.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np

from . import images
from .candidates import Candidates, SegmentationResult
from .concurrency import EngineGate
from .config import MAX_IMAGE_PIXELS, SCORING_MODES
from .errors import Cancelled, InputError, ModelError, Rea2SegError
from .paths import AllowedDirs, OutputDir
from .questions import clean_question
from .result_store import ResultStore

if TYPE_CHECKING:
    from .pipeline import Rea2Seg

log = logging.getLogger("rea2seg.service")

Progress = Callable[[str, int, int], None]
CancelCheck = Callable[[], bool]
PreviewKind = Literal["overlay", "mask", "candidates", "heatmap", "none"]

#: Previews handed to a model: long side at most this many pixels ...
PREVIEW_MAX_SIDE = 1024
#: ... and at most this many PNG bytes (base64 adds a third; clients cap a whole message near 1 MiB).
PREVIEW_MAX_BYTES = 400_000
#: Cap on a base64-encoded input image, in decoded bytes.
MAX_BASE64_BYTES = 8 * 1024 * 1024


@dataclass
class AgentResult:
    """One result kept for follow-up calls.

    kind: "segment" (segment), "discover" (candidates, unscored) or "score" (candidates re-scored).
    image: (H, W, 3) uint8, the normalised input. candidates: (N masks) best first for segment/score, discovery
    order for discover. heatmap: (H, W) float32 in [0, 1]. result: the engine's SegmentationResult (None for
    discover). source: the image path, or "image_base64".
    """

    result_id: str
    kind: Literal["segment", "discover", "score"]
    question: str
    image: np.ndarray
    candidates: Candidates
    heatmap: np.ndarray | None
    result: SegmentationResult | None
    source: str
    timings_ms: dict
    warning: str | None = None

    @property
    def mask(self) -> np.ndarray | None:
        """(H, W) bool, the answer; None for unscored candidates (use ``candidate_mask``)."""
        return None if self.result is None else self.result.mask

    def candidate_mask(self, number: int | None) -> np.ndarray:
        """The answer mask (number None) or the mask of candidate ``number``, (H, W) bool.

        Agent-facing candidate numbers start at 1, as drawn on the candidates image (``render.candidate_sheet``);
        number k is ``candidates.masks[k - 1]``.
        """
        n = len(self.candidates)
        if number is None:
            if self.result is None:
                raise InputError(f"result {self.result_id} holds {n} unscored candidates and no answer; pass "
                                 f"candidate=1..{n} or score them first")
            return self.result.mask
        if not isinstance(number, int) or not 1 <= number <= n:
            raise InputError(f"candidate {number!r} does not exist; result {self.result_id} has candidates 1..{n}"
                             if n else f"result {self.result_id} has no candidates")
        return self.candidates.masks[number - 1]

    def to_json(self) -> dict:
        """JSON-ready summary (no arrays): what the doors return as text / structured content."""
        h, w = self.image.shape[:2]
        if self.result is not None:
            out = self.result.to_json(result_id=self.result_id, kind=self.kind)
        else:
            out = {"result_id": self.result_id, "kind": self.kind, "question": self.question, "image_size": [w, h],
                   "candidates": self.candidates.summary(), "n_candidates": len(self.candidates),
                   "timings_ms": {k: round(float(v), 1) for k, v in self.timings_ms.items()}}
            if self.warning:
                out["warning"] = self.warning
        return out  # candidates carry the 1-based numbers drawn on the candidates image, which the tools take


def preview_png(array: np.ndarray, max_side: int = PREVIEW_MAX_SIDE, max_bytes: int = PREVIEW_MAX_BYTES) -> bytes:
    """PNG bytes of an image or mask for a model to look at: long side <= ``max_side``, shrunk further until the
    file is at most ``max_bytes`` (photos compress poorly as PNG)."""
    side = min(max_side, max(array.shape[:2]))
    while True:
        data = images.png_bytes(array, max_side=side)
        if len(data) <= max_bytes or side <= 128:
            return data
        side = int(side * 0.75)


def _warning_of(obj) -> str | None:
    return getattr(obj, "warning", None) or None


class SegmentationService:
    """The engine behind checked inputs, a gate and a result store.

    pipeline: a loaded ``Rea2Seg``, or a zero-argument callable that loads one (call ``start_loading`` to load it
    in a background thread at start-up; jobs wait for it). allowed_dirs: where image paths may point. output_dir:
    where masks may be saved (None: saving refused). max_queue: requests waiting beyond the running one before
    ``BusyError``. max_results: results kept for follow-ups. max_base64_bytes: cap on a base64 image.
    """

    def __init__(self, pipeline: "Rea2Seg | Callable[[], Rea2Seg]", allowed_dirs: AllowedDirs | None = None,
                 output_dir: OutputDir | None = None, max_queue: int = 8, max_results: int = 32,
                 max_base64_bytes: int = MAX_BASE64_BYTES, max_pixels: int = MAX_IMAGE_PIXELS,
                 gate: EngineGate | None = None):
        self.allowed_dirs = allowed_dirs if allowed_dirs is not None else AllowedDirs()
        self.output_dir = output_dir if output_dir is not None else OutputDir(None)
        self.gate = gate or EngineGate(capacity=1, max_queue=max_queue)
        self.store: ResultStore[AgentResult] = ResultStore(max_results)
        self.max_base64_bytes = max_base64_bytes
        self.max_pixels = max_pixels
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._pipeline = None
        self._factory = None
        if callable(pipeline) and not hasattr(pipeline, "segment"):
            self._factory = pipeline
        else:
            self._pipeline = pipeline
            self._loaded.set()

    # ---- models ---------------------------------------------------------------------------------------------------

    def start_loading(self) -> threading.Thread | None:
        """Load the models in a background thread (once); jobs submitted meanwhile wait for them."""
        if self._factory is None or self._loaded.is_set():
            return None
        factory, self._factory = self._factory, None

        def load():
            try:
                self._pipeline = factory()
                log.info("models loaded")
            except BaseException as e:  # reported to every caller, and on stderr
                self._load_error = e
                log.error("loading the models failed: %s", e)
            finally:
                self._loaded.set()

        t = threading.Thread(target=load, name="rea2seg-model-load", daemon=True)
        t.start()
        return t

    def pipeline(self, cancelled: CancelCheck | None = None, progress: Progress | None = None) -> "Rea2Seg":
        """The loaded pipeline, waiting for a background load if needed."""
        if self._factory is not None:  # nobody started the load yet: start it now
            self.start_loading()
        if not self._loaded.is_set() and progress:
            progress("loading models", 0, 1)
        while not self._loaded.wait(0.2):
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled while the models were loading")
        if self._load_error is not None:
            e = self._load_error
            if isinstance(e, Rea2SegError):
                raise type(e)(str(e))
            raise ModelError(f"loading the models failed: {e.__class__.__name__}: {e}")
        return self._pipeline

    def status(self) -> dict:
        if not self._loaded.is_set():
            models: dict | str = "loading"
        elif self._load_error is not None:
            models = {"error": str(self._load_error)}
        else:
            try:
                models = self._pipeline.status()
            except Exception as e:  # status must never fail the status call
                models = {"error": f"{e.__class__.__name__}: {e}"}
        return {"models": models, "engine": self.gate.status(), "results_kept": len(self.store),
                "max_results": self.store.max_items,
                "allowed_dirs": [str(r) for r in self.allowed_dirs.roots],
                "output_dir": str(self.output_dir.path) if self.output_dir else None,
                "max_base64_bytes": self.max_base64_bytes}

    # ---- inputs ---------------------------------------------------------------------------------------------------

    def check_image_source(self, image_path: str | None, image_base64: str | None) -> tuple[str, object]:
        """Validate where the image comes from (cheap: no decoding); returns (source label, loader argument)."""
        if bool(image_path) == bool(image_base64):
            raise InputError("pass exactly one of image_path (an absolute file path) or image_base64" if image_path
                             else "no image given: pass image_path (an absolute path of a local image file)")
        if image_path:
            return image_path, self.allowed_dirs.check_file(image_path)
        if not isinstance(image_base64, str):
            raise InputError("image_base64 must be a base64 string")
        if len(image_base64) * 3 // 4 > self.max_base64_bytes + 3:
            raise InputError(f"image_base64 is over the {self.max_base64_bytes:,}-byte cap; pass image_path instead "
                             f"or send a smaller image")
        return "image_base64", image_base64

    def load_image(self, source: tuple[str, object]) -> np.ndarray:
        label, arg = source
        if isinstance(arg, Path):
            return images.load_image(arg, self.max_pixels)
        return images.decode_base64_image(arg, self.max_base64_bytes, self.max_pixels)

    check_question = staticmethod(clean_question)

    @staticmethod
    def check_options(top_k: int, mode: str | None) -> None:
        if not isinstance(top_k, int) or not 1 <= top_k <= 64:
            raise InputError(f"top_k must be an integer from 1 to 64, got {top_k!r}")
        if mode is not None and mode not in SCORING_MODES:
            raise InputError(f"mode must be one of {', '.join(SCORING_MODES)} (or omitted), got {mode!r}")

    # ---- jobs: built (and checked) by the caller, run behind the gate ----------------------------------------------

    def segment_job(self, question: str, image_path: str | None = None, image_base64: str | None = None,
                    top_k: int = 3, mode: str | None = None, merge: bool = False):
        """Image + question -> the answer mask (discover, score, select)."""
        question = self.check_question(question)
        self.check_options(top_k, mode)
        source = self.check_image_source(image_path, image_base64)

        def job(cancelled: CancelCheck, progress: Progress | None) -> AgentResult:
            pipe = self.pipeline(cancelled, progress)
            image = self.load_image(source)
            res = pipe.segment(image, question, top_k=top_k, mode=mode, merge=bool(merge), progress=progress,
                               cancel=cancelled)
            return self._keep("segment", question, image, res.candidates, res.heatmap, res, source[0],
                              res.timings_ms, res.warning)
        return job

    def discover_job(self, question: str, image_path: str | None = None, image_base64: str | None = None):
        """Image + question -> candidate masks from the attention map, unscored."""
        question = self.check_question(question)
        source = self.check_image_source(image_path, image_base64)

        def job(cancelled: CancelCheck, progress: Progress | None) -> AgentResult:
            pipe = self.pipeline(cancelled, progress)
            image = self.load_image(source)
            d = pipe.discover(image, question, progress=progress, cancel=cancelled)
            return self._keep("discover", question, d.image, d.candidates, d.heatmap, None, source[0],
                              d.timings_ms, _warning_of(d) or _warning_of(pipe))
        return job

    def score_job(self, result_id: str, question: str | None = None, candidates: list[int] | None = None,
                  mode: str | None = None, top_k: int = 3, merge: bool = False):
        """Score (again) the candidates of a kept result, optionally a subset (1-based candidate numbers) and/or for
        another question."""
        prev = self.store.get(result_id)
        question = prev.question if question is None or question == "" else self.check_question(question)
        self.check_options(top_k, mode)
        n = len(prev.candidates)
        if n == 0:
            raise InputError(f"result {result_id} has no candidates to score; run segment or discover_candidates "
                             f"again with another question")
        if candidates is not None:
            if not candidates or any(not isinstance(i, int) or not 1 <= i <= n for i in candidates) \
                    or len(set(candidates)) != len(candidates):
                raise InputError(f"candidates must be distinct candidate numbers from 1 to {n} (result {result_id} "
                                 f"has {n}), got {candidates!r}")
            cands = prev.candidates.subset(np.asarray(candidates, dtype=np.int64) - 1)
        else:
            cands = prev.candidates

        def job(cancelled: CancelCheck, progress: Progress | None) -> AgentResult:
            pipe = self.pipeline(cancelled, progress)
            scored = pipe.score(prev.image, question, cands, mode=mode, progress=progress, cancel=cancelled)
            res = pipe.select(question, scored, top_k=min(top_k, len(scored)), merge=bool(merge),
                              heatmap=prev.heatmap)
            return self._keep("score", question, prev.image, res.candidates, prev.heatmap, res, prev.source,
                              res.timings_ms, res.warning)
        return job

    def _keep(self, kind, question, image, candidates, heatmap, result, source, timings, warning) -> AgentResult:
        entry = AgentResult("", kind, question, image, candidates, heatmap, result, source, dict(timings or {}),
                            warning)
        entry.result_id = self.store.put(entry)
        return entry

    def run(self, job, progress: Progress | None = None, cancel: CancelCheck | None = None) -> AgentResult:
        """Run a job in this thread once it is its turn (synchronous doors)."""
        return self.gate.run(lambda cancelled: job(cancelled, progress), cancel=cancel)

    async def run_async(self, job, progress: Progress | None = None) -> AgentResult:
        """Run a job in a worker thread once it is its turn; cancelling the awaiting task frees its place."""
        return await self.gate.run_async(lambda cancelled: job(cancelled, progress))

    # ---- outputs ---------------------------------------------------------------------------------------------------

    def get(self, result_id: str) -> AgentResult:
        return self.store.get(result_id)

    def preview(self, entry: AgentResult, kind: PreviewKind = "overlay", candidate: int | None = None) -> bytes | None:
        """PNG bytes for a model to look at (see ``preview_png``), or None for kind "none".

        overlay: the answer (or ``candidate``) drawn on the image; mask: the bare mask; candidates: every candidate
        numbered on the image; heatmap: the attention map on the image.
        """
        from . import render

        if kind == "none":
            return None
        if kind == "candidates":
            return preview_png(render.candidate_sheet(entry.image, entry.candidates))
        if kind == "heatmap":
            if entry.heatmap is None:
                raise InputError(f"result {entry.result_id} has no heat map")
            return preview_png(render.heatmap_overlay(entry.image, entry.heatmap))
        mask = entry.candidate_mask(candidate)
        if kind == "mask":
            return preview_png(mask)
        if kind == "overlay":
            return preview_png(render.overlay(entry.image, mask))
        raise InputError(f"preview must be one of overlay, mask, candidates, heatmap, none; got {kind!r}")

    def save_mask(self, entry: AgentResult, candidate: int | None = None, filename: str | None = None) -> Path:
        """Save a mask as a full-resolution PNG in the output folder (never overwriting); returns its path."""
        mask = entry.candidate_mask(candidate)
        name = filename or (f"{entry.result_id}_mask" if candidate is None
                            else f"{entry.result_id}_candidate{candidate}")
        return images.save_mask(self.output_dir.file(name), mask, overwrite=False)

