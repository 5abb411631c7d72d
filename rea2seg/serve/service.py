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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np

from .. import images, render
from ..config import MAX_IMAGE_PIXELS, check_sources
from ..errors import Cancelled, InputError, ModelError, OutputExistsError, Rea2SegError
from ..inputs import check_mode, check_question, check_top_k
from ..types import CancelCheck, Progress, SegmentationResult
from .gate import EngineGate
from .messages import DoorWording
from .paths import AllowedDirs, OutputDir
from .store import ResultStore

if TYPE_CHECKING:
    from ..pipeline import Rea2Seg

log = logging.getLogger("rea2seg.service")

PreviewKind = Literal["overlay", "mask", "candidates", "heatmap", "none"]

#: Previews handed to a model: long side at most this many pixels ...
PREVIEW_MAX_SIDE = 1024
#: ... and at most this many bytes (base64 adds a third; clients cap a whole message near 1 MiB).
PREVIEW_MAX_BYTES = 400_000
#: Cap on a base64-encoded input image, in decoded bytes.
MAX_BASE64_BYTES = 8 * 1024 * 1024
#: How often a request waiting for the models to load reports that it still waits, in seconds.
HEARTBEAT_S = 2.0


@dataclass(frozen=True)
class PreviewImage:
    """An encoded image for a model to look at: ``mime_type`` image/jpeg (photos) or image/png (masks)."""

    data: bytes
    mime_type: str
    width: int
    height: int


def preview_image(array: np.ndarray, max_side: int = PREVIEW_MAX_SIDE, max_bytes: int = PREVIEW_MAX_BYTES
                  ) -> PreviewImage:
    """A preview of an (H, W) mask as PNG (exact 0/255 edges) or of an (H, W, 3) picture as JPEG (q85: assets/coffee.jpg
    at 1024x683 is 113 KB, where PNG needs 903 KB and had to shrink to 576 px): long side <= ``max_side``, shrunk
    further until the file is at most ``max_bytes``."""
    mask = np.asarray(array).ndim == 2
    h, w = array.shape[:2]
    side = min(max_side, max(h, w))
    while True:
        data = images.png_bytes(array, max_side=side) if mask else images.jpeg_bytes(array, max_side=side)
        if len(data) <= max_bytes or side <= 128:
            s = min(1.0, side / max(h, w))
            return PreviewImage(data, "image/png" if mask else "image/jpeg", max(1, round(w * s)),
                                max(1, round(h * s)))
        side = int(side * 0.75)


class ProgressScale:
    """Engine progress (stage, done, total) as one number that only grows over a whole job, with a fixed total: the
    job's steps take one unit each, in order ("loading models" first; discovery reports its four stages as one step
    0/4..4/4). A step with an unknown total (0: a heartbeat while the models load, ``done`` = seconds waited) creeps
    towards the end of its unit without reaching it. ``report(progress, total, message)`` is called only when the
    number grows; ``finish()`` reports the end."""

    def __init__(self, steps: list[str], report: Callable[[float, float, str], None]):
        self.steps, self.report, self.last = steps, report, -1.0

    @property
    def total(self) -> float:
        return float(len(self.steps))

    def __call__(self, stage: str, done: int, total: int) -> None:
        step = DISCOVERY if stage in DISCOVERY_STAGES else stage
        if step not in self.steps:
            return
        fraction = min(done / total, 1.0) if total else done / (done + 30.0)
        message = f"{stage} ({done} s)" if not total else stage if step == DISCOVERY else f"{stage} {done}/{total}"
        self._report(self.steps.index(step) + fraction, message)

    def finish(self) -> None:
        self._report(self.total, "done")

    def _report(self, value: float, message: str) -> None:
        value = round(value, 4)
        if value > self.last:
            self.last = value
            self.report(value, self.total, message)


LOADING, DISCOVERY = "loading models", "discovery"
#: The stage names discovery reports (as steps 0..4 of 4).
DISCOVERY_STAGES = ("attention", "prompts", "sam_embedding", "sam_masks", "discovered")
#: The steps of each kind of job, in order (``ProgressScale``).
JOB_STAGES = {"segment": [LOADING, DISCOVERY, "scoring"], "discover": [LOADING, DISCOVERY],
              "score": [LOADING, "scoring"]}


class SegmentationService:
    """The engine behind checked inputs, a gate and a result store.

    pipeline: a loaded ``Rea2Seg``, or a zero-argument callable that loads one (call ``start_loading`` to load it
    in a background thread at start-up; jobs wait for it). allowed_dirs: where image paths may point. output_dir:
    where masks may be saved (None: saving refused). max_queue: requests waiting beyond the running one before
    ``BusyError``. max_results: results kept for follow-ups. max_base64_bytes: cap on a base64 image. wording: how
    the door's user changes a setting, named in error messages.
    """

    def __init__(self, pipeline: "Rea2Seg | Callable[[], Rea2Seg]", allowed_dirs: AllowedDirs | None = None,
                 output_dir: OutputDir | None = None, max_queue: int = 8, max_results: int = 32,
                 max_base64_bytes: int = MAX_BASE64_BYTES, max_pixels: int = MAX_IMAGE_PIXELS,
                 gate: EngineGate | None = None, wording: DoorWording = DoorWording()):
        self.wording = wording
        self.allowed_dirs = allowed_dirs if allowed_dirs is not None else AllowedDirs()
        self.output_dir = output_dir if output_dir is not None else OutputDir(None)
        self.gate = gate or EngineGate(capacity=1, max_queue=max_queue, busy_fix=wording.max_queue)
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
        """The loaded pipeline, waiting for a background load if needed; while waiting, ``progress`` hears
        ("loading models", seconds waited, 0) every ``HEARTBEAT_S`` seconds (the next stage's report ends it)."""
        if self._factory is not None:  # nobody started the load yet: start it now
            self.start_loading()
        t0 = time.monotonic()
        beat = -HEARTBEAT_S
        while not self._loaded.wait(0.2):
            if cancelled is not None and cancelled():
                raise Cancelled("cancelled while the models were loading")
            waited = time.monotonic() - t0
            if progress and waited - beat >= HEARTBEAT_S:
                beat = waited
                progress(LOADING, int(waited), 0)
        if self._load_error is not None:
            e = self._load_error
            if isinstance(e, Rea2SegError):
                raise type(e)(str(e))
            raise ModelError(f"loading the models failed: {e.__class__.__name__}: {e}")
        return self._pipeline

    def status(self) -> dict:
        """What a status call reports; ``models`` has ``state`` "loading", "ready" (with the pipeline's status) or
        "error" (with ``error``)."""
        if not self._loaded.is_set():
            models: dict = {"state": "loading"}
        elif self._load_error is not None:
            models = {"state": "error", "error": str(self._load_error)}
        else:
            try:
                models = {"state": "ready", **self._pipeline.status()}
            except Exception as e:  # status must never fail the status call
                models = {"state": "error", "error": f"{e.__class__.__name__}: {e}"}
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
            return image_path, self.allowed_dirs.check_file(image_path, wording=self.wording)
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
        prev = self.get(result_id)
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
            result.timings_ms["total"] = (time.perf_counter() - t) * 1000
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
        return self.store.get(result_id, self.wording.max_results)

    def results(self) -> list[SegmentationResult]:
        """The kept results, most recently used first."""
        out = []
        for result_id in reversed(self.store.ids()):
            try:
                out.append(self.store.get(result_id))
            except InputError:  # dropped meanwhile
                pass
        return out

    def preview(self, entry: SegmentationResult, kind: PreviewKind = "overlay", candidate: int | None = None
                ) -> PreviewImage | None:
        """An image for a model to look at (see ``preview_image``), or None for kind "none".

        overlay: the answer (or ``candidate``) drawn on the image; mask: the bare mask (PNG); candidates: every
        candidate numbered on the image; heatmap: the attention map on the image.
        """
        if kind == "none":
            return None
        if kind == "candidates":
            return preview_image(render.candidate_sheet(entry.image, entry.candidates))
        if kind == "heatmap":
            if entry.heatmap is None:
                raise InputError(f"result {entry.result_id} has no heat map")
            return preview_image(render.heatmap_overlay(entry.image, entry.heatmap))
        mask = entry.candidate_mask(candidate)
        if kind == "mask":
            return preview_image(mask)
        if kind == "overlay":
            return preview_image(render.overlay(entry.image, mask))
        raise InputError(f"preview must be one of overlay, mask, candidates, heatmap, none; got {kind!r}")

    def save_mask(self, entry: SegmentationResult, candidate: int | None = None, filename: str | None = None
                  ) -> Path:
        """Save a mask as a full-resolution PNG in the output folder (never overwriting); returns its path."""
        mask = entry.candidate_mask(candidate)
        name = filename or (f"{entry.result_id}_mask" if candidate is None
                            else f"{entry.result_id}_candidate{candidate}")
        target = self.output_dir.file(name, wording=self.wording)
        try:
            return images.save_mask(target, mask, overwrite=False)
        except OutputExistsError:
            raise OutputExistsError(f"{target} already exists and is never overwritten; save under another "
                                    f"filename") from None
