"""Runs on Ray (`--ray`): one local Ray (2 CPUs) for this module, tiny random-weight models, and every Ray run compared
with the same run in one process: the same masks, the same scores, the same records. A kill of the driver during a
Ray run resumes without losing or duplicating a sample."""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rea2seg.eval.batch import open_batch_input, run_batch
from rea2seg.eval.datasets import open_dataset
from rea2seg.eval.evaluate import evaluate_pipeline
from rea2seg.eval.export import export_scoring_data
from rea2seg.eval.ray_runner import RayOptions
from rea2seg.pipeline import Rea2Seg

from conftest import make_image
from test_eval import add_bad_sample, make_dataset

TINY = functools.partial(Rea2Seg.from_preset, "tiny-random", device="cpu")  # picklable: each actor builds its own


@pytest.fixture(scope="module")
def ray_address(tiny_dir):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def on_ray(address: str) -> RayOptions:
    return RayOptions(address=address, discovery_actors=1, scorer_actors=1)


def lines(path: Path) -> dict[str, dict]:
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)), f"duplicated samples: {sorted(ids)}"
    return {r["id"]: r for r in recs}


def same_json(a: dict, b: dict, path: str = "") -> None:
    """Equal, except timings, with floats to 1e-5."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, path
    if isinstance(a, dict):
        keys = set(a) - {"timings_ms", "seconds"}
        assert keys == set(b) - {"timings_ms", "seconds"}, path
        for k in keys:
            same_json(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same_json(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, abs=1e-5), path
    else:
        assert a == b, path


def same_pngs(a: Path, b: Path) -> int:
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    for f in files:
        np.testing.assert_array_equal(np.asarray(Image.open(a / f)), np.asarray(Image.open(b / f)), err_msg=str(f))
    return len(files)


@pytest.mark.slow
def test_ray_runs_equal_one_process(tmp_path, ray_address, pipeline):
    """eval and the mask-scoring export on Ray (discovery actor -> scorer actor) give what one process gives (batch
    on Ray: the kill test below)."""
    val = make_dataset(tmp_path, n=2, seed=5)
    add_bad_sample(val)
    ds = open_dataset(val)
    ref = evaluate_pipeline(pipeline, ds, tmp_path / "eval1", model_info={"preset": "tiny-random"}, progress=False)
    got = evaluate_pipeline(None, ds, tmp_path / "eval2", model_info={"preset": "tiny-random"}, progress=False,
                            pipeline_factory=TINY, ray=on_ray(ray_address))
    a, b = lines(tmp_path / "eval1" / "results.jsonl"), lines(tmp_path / "eval2" / "results.jsonl")
    assert set(a) == {"img0", "img1", "nopoly"} and "skipped" in a["nopoly"]
    for k in a:
        same_json(a[k], b[k], k)
    assert same_pngs(tmp_path / "eval1" / "masks", tmp_path / "eval2" / "masks") == 2
    assert got["giou"] == pytest.approx(ref["giou"]) and got["ciou"] == pytest.approx(ref["ciou"])

    # the export: discovery only, one pool
    export_scoring_data(pipeline, ds, tmp_path / "exp1", progress=False)
    export_scoring_data(None, ds, tmp_path / "exp2", progress=False, pipeline_factory=TINY,
                        ray=on_ray(ray_address))
    a, b = lines(tmp_path / "exp1" / "samples.jsonl"), lines(tmp_path / "exp2" / "samples.jsonl")
    for k in a:
        same_json(a[k], b[k], k)
    assert same_pngs(tmp_path / "exp1", tmp_path / "exp2") > 6


def _batch_cmd(imgs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "rea2seg", "batch", str(imgs), "--question", "the brightest shape", "--out",
            str(out), "--overlays", "--preset", "tiny-random", "--device", "cpu", "--ray", "auto", "--quiet"]


@pytest.mark.slow
def test_kill_during_ray_run_resumes_without_loss_or_duplicate(tmp_path, pipeline):
    """`rea2seg batch --ray auto` as a user runs it: the command starts its own local Ray; the driver is killed
    (SIGKILL, its Ray goes with it) mid-run; the same command again finishes the run."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    n = 5
    for i in range(n):
        Image.fromarray(make_image(48, 64, seed=40 + i)).save(imgs / f"im{i}.png")
    out = tmp_path / "run"
    results = out / "results.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_batch_cmd(imgs, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= 2:
            proc.send_signal(signal.SIGKILL)  # the driver dies mid-run; samples in flight are lost with it
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err[-2000:]}"
    before = lines(results)
    assert 2 <= len(before) < n

    proc = subprocess.run(_batch_cmd(imgs, out), capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = lines(results)  # asserts that no id is there twice
    assert set(after) == {f"im{i}" for i in range(n)}
    for k in before:
        assert after[k] == before[k]  # what was done before the kill was kept, not redone
    assert f"{n - len(before)} this run" in proc.stdout

    # and the result is what one uninterrupted process gives
    run_batch(pipeline, open_batch_input(imgs, "the brightest shape"), tmp_path / "ref", overlays=True,
              progress=False)
    ref = lines(tmp_path / "ref" / "results.jsonl")
    for k in ref:
        same_json(after[k], ref[k], k)
    assert same_pngs(out, tmp_path / "ref") == 2 * n
