"""`rea2seg eval`: scoring existing masks, resumable runs (kill and resume), output-folder safety, the paper-style
table, and an end-to-end run with the tiny random-weight models."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rea2seg.eval.datasets import lisa_mask_from_shapes
from rea2seg.errors import InputError, OutputExistsError
from rea2seg.cli.eval import register_cli
from rea2seg.eval.evaluate import OUTPUT_FILES, markdown_table
from rea2seg.eval.runs import ResultLog, prepare_out_dir
from rea2seg.eval.metrics import ciou, giou, intersection_union

CATEGORIES = ["Discriminative", "Geometric", "Spatial", "Multi-step"]


def make_dataset(root: Path, n: int = 6, size=(72, 96), categories: bool = False, seed: int = 0) -> Path:
    """n LabelMe samples (LISA layout) with a target polygon, sometimes an ignore polygon; returns the split folder."""
    rng = np.random.default_rng(seed)
    val = root / "ReasonSeg" / "val"
    val.mkdir(parents=True)
    h, w = size
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = rng.integers(0, 80, 3)
        x0, y0 = int(rng.integers(2, w // 2)), int(rng.integers(2, h // 2))
        x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
        img[y0:y1, x0:x1] = rng.integers(150, 255, 3)
        Image.fromarray(img).save(val / f"img{i}.jpg")
        shapes = [{"label": "target", "points": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}]
        if i % 2:
            shapes.append({"label": "ignore", "points": [[x0, y0], [x0 + 4, y0], [x0 + 4, y0 + 4]]})
        anno = {"text": [f"the bright box number {i}", "unused rephrasing"], "is_sentence": bool(i % 3 == 0),
                "shapes": shapes}
        if categories:
            anno["category"] = CATEGORIES[i % 4]
        (val / f"img{i}.json").write_text(json.dumps(anno))
    return val


def targets_of(val: Path) -> dict:
    out = {}
    for j in sorted(val.glob("*.json")):
        w, h = Image.open(j.with_suffix(".jpg")).size
        out[j.stem] = lisa_mask_from_shapes(json.loads(j.read_text())["shapes"], h, w)[0]
    return out


def cli(argv):
    parser = argparse.ArgumentParser(prog="rea2seg")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_predictions_mode_scores_existing_masks(tmp_path, capsys):
    val = make_dataset(tmp_path, n=6, categories=True)
    targets = targets_of(val)
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    rng = np.random.default_rng(1)
    preds = {}
    for i, (key, t) in enumerate(sorted(targets.items())):
        if key == "img5":
            continue  # missing: counts as an empty mask
        p = (t == 1) if i % 2 == 0 else rng.random(t.shape) < 0.3
        preds[key] = p
        Image.fromarray(p.astype(np.uint8) * 255).save(pred_dir / f"{key}.png")
    preds["img5"] = np.zeros_like(targets["img5"], bool)

    assert cli(["eval", str(tmp_path / "ReasonSeg"), "--predictions", str(pred_dir), "--json", "--sgdr"]) == 0
    out = json.loads(capsys.readouterr().out)
    overlaps = {k: intersection_union(preds[k], targets[k]) for k in targets}
    assert out["n_samples"] == 6 and out["n_skipped"] == 0
    assert out["giou"] == pytest.approx(giou(overlaps.values()))
    assert out["ciou"] == pytest.approx(ciou(overlaps.values()))
    assert out["missing_predictions"] == ["img5"]
    by_cat = out["by_category"]
    assert list(by_cat) == CATEGORIES
    spatial = [k for k in targets if int(k[3:]) % 4 == 2]
    assert by_cat["Spatial"]["n"] == len(spatial)
    assert by_cat["Spatial"]["giou"] == pytest.approx(giou(overlaps[k] for k in spatial))

    # the table, and files when --out is given (never overwritten without --force)
    assert cli(["eval", str(val), "--predictions", str(pred_dir), "--out", str(tmp_path / "o")]) == 0
    table = capsys.readouterr().out
    assert "| Method | Discriminative gIoU |" in table and "| preds (Top-1) |" in table
    assert (tmp_path / "o" / "summary.json").exists() and (tmp_path / "o" / "table.md").read_text() == table.rstrip(
        "\n") + "\n"
    with pytest.raises(OutputExistsError):
        cli(["eval", str(val), "--predictions", str(pred_dir), "--out", str(tmp_path / "o")])
    assert cli(["eval", str(val), "--predictions", str(pred_dir), "--out", str(tmp_path / "o"), "--force"]) == 0

    Image.fromarray(np.zeros((5, 5), np.uint8)).save(pred_dir / "img0.png")
    with pytest.raises(InputError, match="img0.png is 5x5 but image img0 is 96x72"):
        cli(["eval", str(val), "--predictions", str(pred_dir)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="none of the 6 samples"):
        cli(["eval", str(val), "--predictions", str(empty)])
    with pytest.raises(InputError, match="--out DIR is required"):
        cli(["eval", str(val)])


def test_result_log_drops_partial_line_and_refuses_corruption(tmp_path):
    log = ResultLog(tmp_path / "r.jsonl")
    assert log.load() == {}
    log.append({"id": "a", "output": [1, 2]})
    log.append({"id": "b", "output": [0, 2]})
    with open(log.path, "ab") as f:
        f.write(b'{"id": "c", "outp')  # a kill in the middle of a write
    assert list(log.load()) == ["a", "b"]
    assert log.path.read_bytes().endswith(b"\n")  # the partial tail is gone, appends continue cleanly
    log.append({"id": "c", "output": [2, 2]})
    assert list(log.load()) == ["a", "b", "c"]
    log.path.write_bytes(b'{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(InputError, match="line 2 is corrupt"):
        log.load()


def test_out_dir_resumes_same_run_refuses_others(tmp_path):
    out = tmp_path / "run"
    info = {"dataset": {"path": "/x"}, "model": {"preset": "tiny-random"}}
    prepare_out_dir(out, info, False, OUTPUT_FILES)
    (out / "results.jsonl").write_text('{"id": "a"}\n')
    prepare_out_dir(out, info, False, OUTPUT_FILES)  # same settings: resume, nothing deleted
    assert (out / "results.jsonl").exists()
    with pytest.raises(OutputExistsError, match="different settings \\(model\\)"):
        prepare_out_dir(out, {**info, "model": {"preset": "other"}}, False, OUTPUT_FILES)
    (out / "notes.txt").write_text("user file")
    prepare_out_dir(out, {**info, "model": {"preset": "other"}}, True, OUTPUT_FILES)
    assert not (out / "results.jsonl").exists() and (out / "notes.txt").exists()  # only our files go
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "summary.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="summary.json"):
        prepare_out_dir(foreign, info, False, OUTPUT_FILES)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file"):
        prepare_out_dir(tmp_path / "file", info, False, OUTPUT_FILES)


def test_table_layouts():
    group = {"n": 2, "giou": 0.5, "ciou": 0.25, "top_k": {"1": {"giou": 0.5, "ciou": 0.25},
                                                       "3": {"giou": 0.75, "ciou": 0.5}},
             "oracle": {"giou": 0.9, "ciou": 0.8}}
    base = {"dataset": {"name": "ReasonSeg", "notes": ["a note"]}, "split": "test", "n_samples": 2, "n_skipped": 1,
            "n_selected": 3, "complete": True, "convention": "LISA", **group}
    t = markdown_table({**base, "by_query": {"short": group, "long": group}}, "M")
    assert t.splitlines()[0] == ("| Method | short query gIoU | short query cIoU | long query gIoU | long query cIoU |"
                                 " overall gIoU | overall cIoU |")
    assert "| M (Top-1) | 50.0 | 25.0 | 50.0 | 25.0 | 50.0 | 25.0 |" in t
    assert "| M (Top-3) | 75.0 | 50.0 |" in t and "| Candidate oracle (all) | 90.0 | 80.0 |" in t
    assert "2 samples scored, 1 skipped" in t and "- a note" in t
    t = markdown_table({**base, "by_category": {"Spatial": group, "Geometric": {**group, "giou": 0.125}}}, "M")
    assert t.splitlines()[0].startswith("| Method | Geometric gIoU | Geometric cIoU | Spatial gIoU |")
    assert "| M (Top-1) | 12.5 | 25.0 | 50.0 | 25.0 | 50.0 | 25.0 |" in t
    t = markdown_table({**base, "split": "val"}, "M")
    assert t.splitlines()[0] == "| Method | val gIoU | val cIoU |"


# ---- with the tiny random-weight models (plumbing only: their numbers mean nothing) ------------------------------

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from rea2seg.eval.evaluate import evaluate_pipeline  # noqa: E402
from rea2seg.eval.datasets import open_dataset  # noqa: E402
from rea2seg.images import read_mask  # noqa: E402
from rea2seg.eval.metrics import iou_from  # noqa: E402


@pytest.fixture(scope="module")
def tiny_pipe():
    from rea2seg import Rea2Seg

    return Rea2Seg.from_preset("tiny-random")


def add_bad_sample(val: Path) -> None:
    (val / "nopoly.json").write_text(json.dumps({"text": ["x"], "is_sentence": False, "shapes": []}))
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(val / "nopoly.jpg")


def test_end_to_end_tiny_models(tmp_path, tiny_pipe, capsys):
    val = make_dataset(tmp_path, n=4, categories=True)
    add_bad_sample(val)
    out = tmp_path / "run"
    ds = open_dataset(val, sgdr=True)
    summary = evaluate_pipeline(tiny_pipe, ds, out, top_k=3, model_info={"preset": "tiny-random"}, progress=False)
    assert {p.name for p in out.iterdir()} >= {"run.json", "results.jsonl", "summary.json", "table.md", "masks"}
    assert summary["n_samples"] == 4 and summary["n_skipped"] == 1 and summary["complete"]
    assert summary["skipped"][0]["id"] == "nopoly" and "no polygon" in summary["skipped"][0]["reason"]
    assert any("meaningless" in w for w in summary["warnings"])  # random weights are flagged in the report
    assert json.loads((out / "summary.json").read_text()) == summary
    table = (out / "table.md").read_text()
    assert "| Method | Discriminative gIoU |" in table and "(Top-3)" in table and "meaningless" in table
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == ["img0", "img1", "img2", "img3", "nopoly"]
    targets = targets_of(val)
    for r in (r for r in records if "skipped" not in r):
        mask = read_mask(out / "masks" / f"{r['id']}.png")
        assert tuple(r["output"]) == intersection_union(mask, targets[r["id"]])  # recorded I/U are the saved mask's
        assert r["iou"] == pytest.approx(iou_from(*r["output"]), abs=1e-6)
        assert len(r["candidates"]) == len(r["scores"]) == len(r["candidate_ious"]) == len(r["numbers"])
        assert sorted(r["numbers"]) == list(range(1, len(r["numbers"]) + 1)), "discovery's numbering, ranked"
    # Top-k and oracle never below Top-1
    assert summary["top_k"]["3"]["giou"] >= summary["giou"] - 1e-9
    assert summary["oracle"]["giou"] >= summary["top_k"]["3"]["giou"] - 1e-9

    # the saved masks re-scored with --predictions give the same numbers
    assert cli(["eval", str(val), "--sgdr", "--predictions", str(out / "masks"), "--json"]) == 0
    rescored = json.loads(capsys.readouterr().out)
    assert rescored["giou"] == pytest.approx(summary["giou"]) and rescored["ciou"] == pytest.approx(summary["ciou"])

    # a finished run re-run with the same settings does no work and keeps its results
    def no_model():
        raise AssertionError("nothing should be left to run")
    again = evaluate_pipeline(None, ds, out, top_k=3, model_info={"preset": "tiny-random"}, progress=False,
                              pipeline_factory=no_model)
    assert again == summary


def test_export_scoring_data_tiny_models(tmp_path, tiny_pipe):
    from rea2seg.eval.export import export_scoring_data

    val = make_dataset(tmp_path, n=3)
    add_bad_sample(val)
    out = tmp_path / "scoring"
    summary = export_scoring_data(tiny_pipe, open_dataset(val), out, model_info={"preset": "tiny-random"},
                                  progress=False)
    assert summary["n_samples"] == 3 and summary["n_skipped"] == 1
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    done = [r for r in records if "skipped" not in r]
    assert summary["n_candidates"] == sum(len(r["candidates"]) for r in done) > 0
    assert sum(summary["score_histogram"]) == summary["n_candidates"]
    for r in done:
        target = np.asarray(Image.open(out / r["target"]))
        assert set(np.unique(target).tolist()) <= {0, 1, 255}
        assert np.asarray(Image.open(out / r["image"])).shape == target.shape + (3,)
        assert r["prompts"]["comparative"].count(r["question"]) == 1
        for c in r["candidates"]:
            mask = read_mask(out / c["mask"])
            inter, union = intersection_union(mask, target)
            assert (inter, union) == (c["intersection"], c["union"])
            assert c["iou"] == pytest.approx(iou_from(inter, union), abs=1e-6)
            assert c["target_score"] == int(np.floor(10 * c["iou"] + 0.5))
            assert Image.open(out / c["prompt"]).mode == "RGB"
        if r["candidates"]:
            assert (out / r["sheet"]).exists()
            assert r["best_index"] == int(np.argmax([c["iou"] for c in r["candidates"]]))


def _eval_cmd(val: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "rea2seg", "eval", str(val), "--preset", "tiny-random", "--out", str(out),
            "--quiet"]


def test_kill_and_resume_loses_and_duplicates_nothing(tmp_path, tiny_pipe):
    val = make_dataset(tmp_path, n=6, seed=3)
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_eval_cmd(val, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and results.read_bytes().count(b"\n") >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    err = proc.stderr.read().decode()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err[-2000:]}"
    done_before = results.read_bytes().count(b"\n")
    assert 2 <= done_before < 6
    with open(results, "ab") as f:  # as if the kill had landed in the middle of a write
        f.write(b'{"id": "img5", "output": [1,')

    proc = subprocess.run(_eval_cmd(val, out), capture_output=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    ids = [json.loads(line)["id"] for line in results.read_text().splitlines()]
    assert sorted(ids) == [f"img{i}" for i in range(6)]  # none lost, none duplicated
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_samples"] == 6 and summary["complete"]

    # the resumed results are the ones an uninterrupted run gives
    ref = evaluate_pipeline(tiny_pipe, open_dataset(val), tmp_path / "ref", model_info={"preset": "tiny-random"},
                            progress=False)
    by_id = {json.loads(line)["id"]: json.loads(line) for line in results.read_text().splitlines()}
    ref_by_id = {json.loads(line)["id"]: json.loads(line)
                 for line in (tmp_path / "ref" / "results.jsonl").read_text().splitlines()}
    assert {k: r["output"] for k, r in by_id.items()} == {k: r["output"] for k, r in ref_by_id.items()}
    assert ref["giou"] == pytest.approx(summary["giou"])
