"""What the agent doors (MCP server, LangChain tools) share: checked inputs, one gate in front of the engine, results
kept under ids for follow-up calls, small previews, masks out.

A door builds a job (argument checks happen right there, so bad input fails before any waiting), runs it with
``run`` or ``run_async`` and converts the answer it gets (a ``SegmentationResult`` with its ``result_id``) into its own
types. Nothing here knows MCP or LangChain.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np

from .. import images, render
from ..config import MAX_IMAGE_PIXELS, check_sources
from ..errors import Cancelled, InputError, ModelError, Rea2SegError
from ..inputs import check_mode, check_question, check_top_k
from ..types import CancelCheck, Progress, SegmentationResult
from .gate import EngineGate
from .paths import AllowedDirs, OutputDir
from .store import ResultStore

if TYPE_CHECKING:
    from ..pipeline import Rea2Seg

log = logging.getLogger("rea2seg.service")

PreviewKind = Literal["overlay", "mask", "candidates", "heatmap", "none"]

#: Previews handed to a model: long side at most this many pixels ...
PREVIEW_MAX_SIDE = 1024
#: ... and at most this many PNG bytes (base64 adds a third; clients cap a whole message near 1 MiB).
PREVIEW_MAX_BYTES = 400_000
#: Cap on a base64-encoded input image, in decoded bytes.
MAX_BASE64_BYTES = 8 * 1024 * 1024


def preview_png(array: np.ndarray, max_side: int = PREVIEW_MAX_SIDE, max_bytes: int = PREVIEW_MAX_BYTES) -> bytes:
    """PNG bytes of an image or mask for a model to look at: long side <= ``max_side``, shrunk further until the
    file is at most ``max_bytes`` (photos compress poorly as PNG)."""
    side = min(max_side, max(array.shape[:2]))
    while True:
        data = images.png_bytes(array, max_side=side)
        if len(data) <= max_bytes or side <= 128:
            return data
        side = int(side * 0.75)


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
        self.store: ResultStore[SegmentationResult] = ResultStore(max_results)
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

    # ---- jobs: built (and checked) by the caller, run behind the gate ----------------------------------------------

    def segment_job(self, question: str, image_path: str | None = None, image_base64: str | None = None,
                    top_k: int = 3, mode: str | None = None, merge: bool = False, sources=None):
        """Image + question -> the answer mask (discover, score, select). sources: candidate source names for this
        call (None: the server's)."""
        question, top_k, mode = check_question(question), check_top_k(top_k), check_mode(mode)
        sources = None if sources is None else check_sources(sources)
        source = self.check_image_source(image_path, image_base64)

        def job(cancelled: CancelCheck, progress: Progress | None) -> SegmentationResult:
            pipe = self.pipeline(cancelled, progress)
            image = self.load_image(source)
            return self._keep(pipe.segment(image, question, top_k=top_k, mode=mode, merge=bool(merge),
                                           sources=sources, progress=progress, cancel=cancelled))
        return job

    def discover_job(self, question: str, image_path: str | None = None, image_base64: str | None = None,
                     sources=None):
        """Image + question -> candidate masks, unscored. sources: candidate source names for this call (None: the
        server's)."""
        question = check_question(question)
        sources = None if sources is None else check_sources(sources)
        source = self.check_image_source(image_path, image_base64)

        def job(cancelled: CancelCheck, progress: Progress | None) -> SegmentationResult:
            pipe = self.pipeline(cancelled, progress)
            image = self.load_image(source)
            return self._keep(pipe.discover(image, question, sources=sources, progress=progress, cancel=cancelled))
        return job

    def score_job(self, result_id: str, question: str | None = None, candidates: list[int] | None = None,
                  mode: str | None = None, top_k: int = 3, merge: bool = False):
        """Score (again) the candidates of a kept result, optionally some of them (by candidate number) and/or for
        another question. Candidates keep their numbers."""
        prev = self.store.get(result_id)
        question = prev.question if question is None or question == "" else check_question(question)
        top_k, mode = check_top_k(top_k), check_mode(mode)
        n = len(prev.candidates)
        if n == 0:
            raise InputError(f"result {result_id} has no candidates to score; run segment or discover_candidates "
                             f"again with another question")
        cands = prev.candidates
        if candidates is not None:
            if not candidates or len(set(candidates)) != len(candidates):
                raise InputError(f"candidates must be a non-empty list of distinct candidate numbers, got "
                                 f"{candidates!r}")
            cands = cands.subset(np.array([cands.index_of(c) for c in candidates], np.int64))

        def job(cancelled: CancelCheck, progress: Progress | None) -> SegmentationResult:
            pipe = self.pipeline(cancelled, progress)
            t = time.perf_counter()
            scored = pipe.score(prev.image, question, cands, mode=mode, progress=progress, cancel=cancelled)
            timings = {"scoring": (time.perf_counter() - t) * 1000}
            result = pipe.select(question, scored, top_k=min(top_k, len(scored)), merge=bool(merge),
                                 heatmap=prev.heatmap, timings_ms=timings, mode=mode, image=prev.image)
            return self._keep(replace(result, kind="score", grid=prev.grid, peaks=prev.peaks))
        return job

    def _keep(self, result: SegmentationResult) -> SegmentationResult:
        result.result_id = self.store.put(result)
        return result

    def run(self, job, progress: Progress | None = None, cancel: CancelCheck | None = None) -> SegmentationResult:
        """Run a job in this thread once it is its turn (synchronous doors)."""
        return self.gate.run(lambda cancelled: job(cancelled, progress), cancel=cancel)

    async def run_async(self, job, progress: Progress | None = None) -> SegmentationResult:
        """Run a job in a worker thread once it is its turn; cancelling the awaiting task frees its place."""
        return await self.gate.run_async(lambda cancelled: job(cancelled, progress))

    # ---- outputs ---------------------------------------------------------------------------------------------------

    def get(self, result_id: str) -> SegmentationResult:
        return self.store.get(result_id)

    def preview(self, entry: SegmentationResult, kind: PreviewKind = "overlay", candidate: int | None = None
                ) -> bytes | None:
        """PNG bytes for a model to look at (see ``preview_png``), or None for kind "none".

        overlay: the answer (or ``candidate``) drawn on the image; mask: the bare mask; candidates: every candidate
        numbered on the image; heatmap: the attention map on the image.
        """
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

    def save_mask(self, entry: SegmentationResult, candidate: int | None = None, filename: str | None = None
                  ) -> Path:
        """Save a mask as a full-resolution PNG in the output folder (never overwriting); returns its path."""
        mask = entry.candidate_mask(candidate)
        name = filename or (f"{entry.result_id}_mask" if candidate is None
                            else f"{entry.result_id}_candidate{candidate}")
        return images.save_mask(self.output_dir.file(name), mask, overwrite=False)

