"""What a run does to one sample, said once for every way of running it.

A run (``rea2seg eval``, the mask-scoring export, ``rea2seg batch``) is a ``SampleWork``. In one process each sample
goes through ``whole``; on Ray (``ray_runner.py``) the same sample goes through ``discover`` in a discovery actor
and ``finish`` in a scorer actor, and what travels between them is the engine's own answer (``pack_found``). Either
way the result is an ``Outcome``: the sample's JSONL record and its files, which only the process that owns the run
folder writes (``runs.commit``).
"""
from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field, fields, replace

import numpy as np

from ..errors import InputError
from ..images import rle_decode, rle_encode
from ..inputs import check_mode, check_top_k
from ..types import Candidates, SegmentationResult
from .datasets import Sample, SkippedSample


@dataclass
class Outcome:
    """One sample's record (a JSON object with ``id``; ``skipped`` holds the reason when the sample could not be
    used) and its files: path relative to the run folder -> bytes, written atomically before the record is logged."""

    record: dict
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return "skipped" in self.record


class SampleWork:
    """The per-sample steps of a run. Subclasses are small picklable dataclasses (they travel to Ray actors).

    needs_scorer: ``finish`` scores candidates, so on Ray it runs in the scorer actors; otherwise it runs in the
    discovery actor right after ``discover``. desc: the progress bar's label.
    """

    needs_scorer = True
    desc = "run"

    def whole(self, pipe, sample: Sample) -> Outcome:
        """The sample in one process."""
        return self.finish(pipe, sample, self.discover(pipe, sample))

    def discover(self, pipe, sample: Sample) -> SegmentationResult:
        """Stage 1 (a discovery actor on Ray): an answer of kind "discover"."""
        return pipe.discover(sample.image, sample.question)

    def finish(self, pipe, sample: Sample, found: SegmentationResult) -> Outcome:
        """Everything after discovery (a scorer actor on Ray)."""
        raise NotImplementedError

    def skipped(self, sample: Sample | SkippedSample, reason: str) -> Outcome:
        return Outcome({"id": sample.id, "skipped": reason})

    def postfix(self, record: dict) -> str:
        """What the progress bar shows after this record."""
        return ""


@dataclass
class SegmentWork(SampleWork):
    """Work that segments each sample (all three stages): ``Rea2Seg.segment`` in one process, discovery then
    ``finish_segment`` on Ray. Subclasses turn the answer into an outcome (``outcome``)."""

    top_k: int = 3
    mode: str | None = None
    merge: bool = False

    def whole(self, pipe, sample: Sample) -> Outcome:
        t0 = time.perf_counter()
        result = pipe.segment(sample.image, sample.question, top_k=self.top_k, mode=self.mode, merge=self.merge)
        return self.outcome(sample, result, time.perf_counter() - t0)

    def finish(self, pipe, sample: Sample, found: SegmentationResult) -> Outcome:
        t0 = time.perf_counter()
        discovery_s = sum(found.timings_ms.values()) / 1000
        result = finish_segment(pipe, sample, found, top_k=self.top_k, mode=self.mode, merge=self.merge)
        return self.outcome(sample, result, discovery_s + time.perf_counter() - t0)

    def outcome(self, sample: Sample, result: SegmentationResult, seconds: float) -> Outcome:
        raise NotImplementedError


def run_whole(work: SampleWork, pipe, sample: Sample | SkippedSample) -> Outcome:
    """``work.whole``, with unusable samples and samples the pipeline refuses (``InputError``) recorded as skipped
    with the reason: a bad sample never stops a run."""
    if isinstance(sample, SkippedSample):
        return work.skipped(sample, sample.reason)
    try:
        return work.whole(pipe, sample)
    except InputError as e:  # e.g. a degenerate image: counted, not fatal
        return work.skipped(sample, f"pipeline refused it: {e}")


# ---- the discovery answer between two actors ---------------------------------------------------------------------

def pack_found(found: SegmentationResult) -> bytes:
    """A discovery answer for the trip to another process: the ``SegmentationResult`` itself, its candidate masks as
    RLE (``images.rle_encode``: a few KB where the arrays are (N, H, W) bytes) and its heat map as the token grid
    it is upsampled from (``heatmap.upsample``; the full map travels only if it is not exactly that). The image is
    left out: the receiver has the sample. ``unpack_found`` gives back an equal answer."""
    cands = found.candidates
    h, w = found.image_size
    heat = found.heatmap
    if heat is not None and found.grid is not None and np.array_equal(_heat_from_grid(found.grid, (h, w)), heat):
        heat = None
        from_grid = True
    else:
        from_grid = False
    state = {f.name: getattr(cands, f.name) for f in fields(cands) if f.name != "masks"}
    state["masks"] = [rle_encode(m) for m in cands.masks]
    result = {f.name: getattr(found, f.name) for f in fields(found) if f.name not in ("candidates", "image",
                                                                                        "heatmap")}
    return pickle.dumps({"candidates": state, "result": result, "heatmap": heat, "heat_from_grid": from_grid,
                         "size": (h, w)}, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_found(data: bytes, image: np.ndarray | None) -> SegmentationResult:
    """The answer ``pack_found`` packed, with ``image`` ((H, W, 3) uint8, the one discovery saw) put back."""
    state = pickle.loads(data)
    h, w = state["size"]
    c = dict(state["candidates"])
    c["masks"] = (np.stack([rle_decode(r) for r in c["masks"]]) if c["masks"] else np.zeros((0, h, w), bool))
    result = dict(state["result"])
    heat = _heat_from_grid(result["grid"], (h, w)) if state["heat_from_grid"] else state["heatmap"]
    return SegmentationResult(candidates=Candidates(**c), image=image, heatmap=heat, **result)


def _heat_from_grid(grid: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    import torch  # here, not at import: scoring saved masks (``eval --predictions``) needs no torch

    from ..heatmap import upsample

    return upsample(torch.from_numpy(np.asarray(grid, np.float32)), size_hw)


def finish_segment(pipe, sample: Sample, found: SegmentationResult, *, top_k: int, mode: str | None,
                   merge: bool) -> SegmentationResult:
    """Stages 2 and 3 on a discovery answer: what ``pipe.segment`` does after discovery (same scorer, same
    selection), for a discovery that ran elsewhere."""
    t0 = time.perf_counter()
    top_k = check_top_k(top_k or pipe.config.top_k)
    scored = pipe.score(sample.image, found.question, found.candidates, mode=mode)
    timings = {**found.timings_ms, "scoring": (time.perf_counter() - t0) * 1000}
    found = replace(found, candidates=scored, mode=check_mode(mode) or pipe.config.scoring.mode,
                    warning=pipe.warning, timings_ms=timings)
    from ..selection import select_mask

    t = time.perf_counter()
    result = select_mask(found, top_k, merge)
    result.timings_ms["selection"] = (time.perf_counter() - t) * 1000
    return result
