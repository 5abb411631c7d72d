"""Bench rows for dataset scale: a run on Ray against the same run in one process, and the parquet mask column read
through Arrow's buffers against the Python-list path it replaced. Part of ``python -m bench`` (rows ``ray`` and
``parquet_mask``)."""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import time
from pathlib import Path

from bench.run import ROOT, Row, _speed_row, log

TOTAL_CORES = 2


def _scenes(folder: Path, n: int, size_hw=(240, 320)) -> None:
    """``n`` different synthetic scenes (a gradient and a few solid discs), so no per-image cache is hit."""
    import numpy as np
    from PIL import Image

    h, w = size_hw
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], -1).astype(np.uint8)
        for _ in range(3):
            cy, cx, r = rng.integers(h // 5, 4 * h // 5), rng.integers(w // 5, 4 * w // 5), rng.integers(20, 50)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
        Image.fromarray(img).save(folder / f"scene{i:03d}.png")


def row_ray(n_samples: int, repeats: int, quick: bool = False) -> Row:
    """``rea2seg batch`` work on the tiny-random models, ``TOTAL_CORES`` cores either way: Ray with one discovery and
    one scorer actor of one core each (a local Ray of ``TOTAL_CORES`` CPUs) against one process at its best thread
    count up to ``TOTAL_CORES`` (on a machine shared with other jobs, 2 OpenMP threads can be many times slower than 1:
    README, "A note on threads"). Seconds per sample in steady state: from the first sample's arrival to the last.
    Ray Data is told to wait for every actor (and its models) before data flows, so the rate holds no start-up and no
    burst of samples queued while the other pool was starting; the fixed costs are in the note. ``quick`` (the CI
    smoke run): one process at ``TOTAL_CORES`` threads only."""
    import shutil

    import ray
    import torch
    from ray.data import DataContext

    from bench.instrument import median
    from rea2seg.eval.batch import BatchWork, open_batch_input
    from rea2seg.eval.ray_runner import RayOptions, outcomes_on_ray
    from rea2seg.eval.work import run_whole
    from rea2seg.pipeline import Rea2Seg
    from rea2seg.testing import ensure_tiny_models

    # a folder per builder version (as tests/conftest.py does), so a stale build elsewhere is never used; the actors
    # see it through the environment
    builders = b"".join(p.read_bytes() for p in sorted((ROOT / "rea2seg" / "testing").glob("*.py")))
    os.environ.setdefault("REA2SEG_TINY_DIR", str(Path(tempfile.gettempdir()) /
                                                  f"rea2seg-tiny-{hashlib.sha1(builders).hexdigest()[:10]}"))
    ensure_tiny_models(os.environ["REA2SEG_TINY_DIR"])
    factory = functools.partial(Rea2Seg.from_preset, "tiny-random", device="cpu")
    work = BatchWork()
    folder = Path(tempfile.mkdtemp(prefix="rea2seg-bench-ray-"))
    _scenes(folder, n_samples)
    src = open_batch_input(folder, "the largest disc")
    keys = src.keys()
    threads = torch.get_num_threads()
    log(f"ray: starting a local Ray with {TOTAL_CORES} CPUs")
    t = time.perf_counter()
    ray.init(num_cpus=TOTAL_CORES, include_dashboard=False, configure_logging=False, log_to_driver=False)
    ray_init_s = time.perf_counter() - t
    DataContext.get_current().wait_for_min_actors_s = 1800
    pipe = factory()

    def run(variant: str) -> tuple[list[float], dict]:
        """Arrival times and records of every sample. variant: "ray", or "one:T" (one process, T torch threads)."""
        t0 = time.perf_counter()
        if variant == "ray":
            stream = outcomes_on_ray(src, keys, work, factory, RayOptions(discovery_actors=1, scorer_actors=1))
        else:
            pipe.clear_cache()
            torch.set_num_threads(int(variant.split(":")[1]))
            stream = (run_whole(work, pipe, sample) for sample in src.iter_samples(keys))
        arrivals, records = [], {}
        for outcome in stream:
            arrivals.append(time.perf_counter() - t0)
            records[outcome.record["id"]] = outcome.record
        torch.set_num_threads(threads)
        return arrivals, records

    ones = [f"one:{TOTAL_CORES}"] if quick else [f"one:{t}" for t in range(1, TOTAL_CORES + 1)]
    a, b, starts = [], [], []
    per_variant: dict[str, list[float]] = {}
    same = compared = 0
    strip = lambda d: {x: y for x, y in d.items() if x != "timings_ms"}  # noqa: E731
    try:
        for r in range(repeats):
            got, seconds = {}, {}
            for variant in (["ray"] + ones) if r % 2 == 0 else (ones + ["ray"]):
                log(f"ray: {variant}, {n_samples} samples (repeat {r + 1})")
                arrivals, got[variant] = run(variant)
                seconds[variant] = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1)
                per_variant.setdefault(variant, []).append(seconds[variant])
                if variant == "ray":
                    starts.append(arrivals[0])
            a.append(seconds["ray"])
            b.append(min(seconds[v] for v in ones))
            for v in ones:
                compared += len(got[v])
                same += sum(strip(rec) == strip(got["ray"].get(k, {})) for k, rec in got[v].items())
    finally:
        DataContext.get_current().wait_for_min_actors_s = -1
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    row = Row("ray_vs_one_process", f"batch on Ray, 2 actors vs one process ({TOTAL_CORES} cores each)",
              "Ray: 1 discovery + 1 scorer actor", f"one process, {TOTAL_CORES} threads" if quick else
              f"one process, best of 1-{TOTAL_CORES} threads")
    row = _speed_row(row, a, b, None)
    row.check = f"records identical {same}/{compared}"
    by_threads = ", ".join(f"{v.split(':')[1]} thread(s) {median(per_variant[v]):.3f} s" for v in ones)
    row.note = (f"seconds per sample from the first sample to the last, {n_samples} samples of 320x240, tiny-random "
                f"models; Ray overhead {100 * (median(a) / median(b) - 1):+.0f}%; one process with {by_threads}; "
                f"fixed costs outside the rate: ray.init {ray_init_s:.0f} s, first Ray sample after "
                f"{median(starts):.0f} s (actors start and build their models)")
    if not quick:
        row.target = ">= 0.87x (overhead <= 15%)"
        row.met = bool(row.ratio >= 1 / 1.15)
    return row


def _list_list_bool(mask):
    """(H, W) bool -> a one-row Arrow ``list<list<bool>>`` array, the published copies' mask layout."""
    import numpy as np
    import pyarrow as pa

    h, w = mask.shape
    rows = pa.ListArray.from_arrays(pa.array(np.arange(0, h * w + 1, w, dtype=np.int32)),
                                    pa.array(mask.ravel()))
    return pa.ListArray.from_arrays(pa.array(np.array([0, h], np.int32)), rows)


def row_parquet_mask(megapixels: float, repeats: int) -> Row:
    """One parquet mask cell of ``megapixels`` (``list<list<bool>>``, as Seg-Zero's ReasonSeg copies store it) to
    LISA's (H, W) uint8: through Arrow's buffers (``mask_from_arrow``) against ``to_pylist`` + ``np.array`` (what
    the loader did before)."""
    import numpy as np

    from rea2seg.eval.datasets import decode_mask_cell, mask_from_arrow

    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(megapixels * 1e6 / w))
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 4)) ** 2 <= 1
    cell = _list_list_bool(mask)
    log(f"parquet mask: {w}x{h} cell, {repeats} repeats")
    a, b = [], []
    fast = slow = None
    for r in range(repeats):
        for variant in ("ab" if r % 2 == 0 else "ba"):
            t = time.perf_counter()
            if variant == "a":
                fast = mask_from_arrow(cell)
                a.append(time.perf_counter() - t)
            else:
                slow = decode_mask_cell(cell.to_pylist()[0])
                b.append(time.perf_counter() - t)
    row = Row("parquet_mask", f"parquet mask cell {w}x{h} ({h * w / 1e6:.0f} MP) -> array", "Arrow buffers",
              "to_pylist + np.array")
    row = _speed_row(row, a, b, 10.0)
    row.check = f"identical masks: {bool(np.array_equal(fast, slow))}"
    row.note = "list<list<bool>> (Sequence(Sequence(bool))), the layout of the published ReasonSeg parquet copies"
    return row
