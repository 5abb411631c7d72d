"""The trained miniature world (testbed/, docs/TESTBED.md).

The slow test builds the quick recipe from scratch (a SAM and a Qwen2.5-VL trained on the world, a scorer trained
with ``rea2seg train-scorer``) and evaluates it through ``evaluate_pipeline``: it is the test that fails when a
semantic step of the pipeline is wrong (Yes/No swapped, the token grid transposed, SAM's coordinate transform
skipped: numbers in docs/TESTBED.md). The fast tests pin the world's ground truth and the testbed's own geometry to
the engine's."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed import WARNING, supervision, world  # noqa: E402
from testbed.report import QUICK_GATE, baseline_index, gate_failures  # noqa: E402


def test_world_ground_truth_is_what_rea2seg_eval_reads(tmp_path):
    """The LabelMe polygon rasterised by the eval loader is exactly the mask the scene was painted with."""
    from rea2seg.eval.datasets import open_dataset

    folder = world.write_split(tmp_path, "test", 12, stage=4)
    ds = open_dataset(folder)
    samples = list(ds.iter_samples())
    assert len(samples) == 12
    for i, s in enumerate(samples):
        sc = world.scene("test", i, 4)
        assert s.question == sc.question and s.category == sc.category
        assert np.array_equal(s.image, sc.image), "PNG: exact pixels"
        assert np.array_equal(s.target == 1, sc.gt)
        assert not np.any(s.target == 255)


def test_world_is_seeded_and_splits_differ():
    a, b = world.scene("test", 5, 4), world.scene("test", 5, 4)
    assert a.question == b.question and np.array_equal(a.image, b.image)
    assert not np.array_equal(world.scene("train", 5, 4).image, a.image)
    types = {world.scene("test", i, 4).qtype for i in range(80)}
    assert types == set(world.QTYPES), "stage 4 draws every question type"
    assert {world.scene("test", i, 2).qtype for i in range(40)} == {"attr", "size"}


def test_attention_set_and_target_agree_with_the_question():
    for i in range(60):
        sc = world.scene("test", i, 4)
        t = sc.objects[sc.target]
        assert sc.target in sc.attention
        if sc.qtype == "size":
            sizes = {sc.objects[j].size for j in sc.attention}
            assert sizes == {"small", "large"}
            want = "large" if any(w in sc.question for w in ("larger", "largest")) else "small"
            assert t.size == want and sum(sc.objects[j].size == want for j in sc.attention) == 1
        if sc.qtype == "position" and "leftmost" in sc.question:
            assert t.cx == min(sc.objects[j].cx for j in sc.attention)
        assert sc.masks.sum(0).max() == 1, "objects never overlap"


def test_view_box_is_the_renderers_zoom_crop():
    """The testbed's labels for a zoomed view cover exactly the crop ``render.candidate_view`` shows."""
    from rea2seg.render import candidate_view, zoom_crop

    rng = np.random.default_rng(0)
    for i in range(20):
        sc = world.scene("test", i, 4)
        m = supervision.part_of(rng, sc, sc.target)
        box = supervision.view_box(m)
        view = candidate_view(sc.image, m)
        if box is None:
            assert view.shape == sc.image.shape
            continue
        x0, y0, x1, y1 = box
        crop = zoom_crop(sc.image, m, min_side=1)  # the same crop, not upscaled
        assert crop.shape[:2] == (y1 - y0, x1 - x0)
        ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        away = np.ones((world.S, world.S), bool)  # pixels off the highlight, its outline and its box
        away[max(ys[0] - 3, 0):ys[-1] + 4, max(xs[0] - 3, 0):xs[-1] + 4] = False
        away = away[y0:y1, x0:x1]
        assert away.any() and np.array_equal(crop[away], sc.image[y0:y1, x0:x1][away])


def test_baseline_is_the_strongest_peaks_first_candidate():
    rec = {"candidates": [[5, 10], [9, 10], [1, 10], [2, 10]], "numbers": [3, 2, 1, 4],
           "sources": ["peak:1/m1", "box:0/m2", "peak:1/m0", "peak:0/m1"]}
    assert baseline_index(rec) == 1, "peak 0's candidates are box:0/m2 (number 2) and peak:0/m1 (number 4)"
    rec["sources"] = ["peak:1/m1", "box:2/m2", "peak:1/m0", "peak:3/m1"]
    assert baseline_index(rec) == 2, "no peak-0 candidate survived: discovery's first"
    assert baseline_index({"candidates": [], "numbers": [], "sources": []}) is None


def test_gate_names_each_missed_bar():
    good = {"recall": QUICK_GATE["recall"], "baseline_giou": QUICK_GATE["baseline_giou"],
            "top3_giou": QUICK_GATE["top3_giou"], "untrained_top1_giou": 0.5,
            "top1_giou": max(QUICK_GATE["baseline_giou"] + QUICK_GATE["over_baseline"],
                             0.5 + QUICK_GATE["over_untrained"])}
    assert gate_failures(good) == []
    assert len(gate_failures(dict(good, recall=0.1))) == 1
    assert [f.split()[0] for f in gate_failures(dict(good, top1_giou=0.0))] == ["trained", "trained"]
    assert gate_failures(dict(good, untrained_top1_giou=None)), "no untrained run: not a pass"


def test_a_stopped_build_redoes_only_what_is_missing(tmp_path):
    """A build of a few steps per stage (untrained: plumbing only); then the SAM and the trained evaluation are lost
    (as when a run is killed) and the same build call redoes exactly those."""
    import dataclasses

    from testbed.build import build
    from testbed.recipe import RECIPES, ScorerRecipe
    from testbed.sam import SamConfig
    from testbed.vlm import PretrainConfig

    r = dataclasses.replace(RECIPES["quick"], name="tiny", sam=SamConfig(steps=2), vlm=PretrainConfig(steps=3, batch=4),
                            export_n=6, test_n=4, scorer=ScorerRecipe(epochs=1, batch_size=4))
    out = build(r, tmp_path / "b")

    def steps() -> list[str]:
        return [json.loads(line)["step"] for line in (out / "timings.jsonl").read_text().splitlines()]

    first = steps()
    assert sorted(first) == sorted(["world", "sam", "vlm", "eval_untrained", "export", "scorer", "eval_trained"])
    (out / "build.json").unlink()
    (out / "sam.safetensors").unlink()
    shutil.rmtree(out / "eval" / "trained")
    build(r, out)
    assert steps()[len(first):] == ["sam", "eval_trained"]
    assert (out / "build.json").is_file()


def test_recipe_hash_follows_the_recipe(monkeypatch, tmp_path):
    from testbed.recipe import RECIPES, build_dir, recipe_from_json, recipe_hash

    q = RECIPES["quick"]
    assert recipe_from_json(json.loads(json.dumps(q.to_json()))) == q
    assert recipe_hash(q) != recipe_hash(q.with_seed(1)) != recipe_hash(RECIPES["full"])
    monkeypatch.setenv("REA2SEG_TESTBED_DIR", str(tmp_path))
    assert build_dir(q).parent == tmp_path


def _testbed(*args: str, home: Path) -> dict:
    env = dict(os.environ, REA2SEG_TESTBED_DIR=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "testbed", *args, "--json"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=1150, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr[-4000:]
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def quick_home(testbed_build):
    return testbed_build  # conftest.py: built in the background since collection (a failed build is redone here)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_quick_testbed_trained_scorer_beats_the_baseline_and_the_untrained_scorer(quick_home):
    """``python -m testbed eval --quick --json`` from scratch (a SAM and a Qwen2.5-VL trained on the world, a scorer
    trained with ``rea2seg train-scorer``): discovery's candidates hold the answer in most scenes, and the trained
    scorer's top-1 beats the discovery-only answer and the untrained scorer (testbed.report.QUICK_GATE)."""
    s = _testbed("eval", "--quick", home=quick_home)
    print(json.dumps({k: v for k, v in s.items() if k != "per_category"}), file=sys.stderr)
    assert s["warning"] == [WARNING], "every result says it comes from synthetic-world models"
    assert s["n"] == 150 and set(s["per_category"]) == {"Attribute", "Size"}
    assert s["top3_giou"] >= s["top1_giou"] - 1e-9 and s["top3_giou"] >= s["baseline_giou"] - 1e-9
    assert gate_failures(s) == [], s


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("mutant", ["yesno-swap", "grid-transpose", "sam-no-transform"])
def test_a_wrong_engine_step_is_seen_by_the_quick_testbed(quick_home, mutant):
    """The same trained models, evaluated with one semantic step of the engine made wrong on purpose
    (testbed/mutants.py): Yes and No swapped, the image tokens' attention read column-major, or SAM's prompts left in
    image pixels. Each costs the pipeline's answer at least 2 gIoU points against the correct engine on the same
    build; the first two also fail the gate. (Builds first when run alone.)"""
    right = _testbed("eval", "--quick", home=quick_home)
    s = _testbed("eval", "--quick", "--mutant", mutant, home=quick_home)
    assert s["mutant"] == mutant and s["build"]["hash"] == right["build"]["hash"]
    print(mutant, {k: (right[k], s[k]) for k in ("recall", "baseline_giou", "top1_giou", "top3_giou")},
          file=sys.stderr)
    assert s["top1_giou"] <= right["top1_giou"] - 0.02, f"{mutant} went unnoticed: {s} vs {right}"
    if mutant != "sam-no-transform":
        assert gate_failures(s), f"{mutant} passes the gate: {s}"
