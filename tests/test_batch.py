"""`rea2seg batch`: inputs (folder, CSV, JSONL, parquet), bad rows reported per row, resuming by id, the answer's JSON
per line; and the split of a run into discovery + the rest (what travels between Ray actors) giving what
`Rea2Seg.segment` gives. The Ray runs themselves are in test_scale.py."""
from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rea2seg.errors import InputError, OutputExistsError
from rea2seg.eval.batch import open_batch_input, run_batch
from rea2seg.eval.datasets import Sample
from rea2seg.eval.work import finish_segment, pack_found, unpack_found
from rea2seg.images import read_mask
from rea2seg.inputs import check_image
from rea2seg.selection import select_mask
from rea2seg.types import Candidates, SegmentationResult

from conftest import make_image


class StubPipe:
    """``segment`` answers with the bright pixels (mean > 128) of the image; it records the questions it was asked."""

    warning = None

    def __init__(self) -> None:
        self.asked: list[str] = []

    def segment(self, image, question, top_k=3, mode=None, merge=False):
        self.asked.append(question)
        arr = check_image(image)
        cands = Candidates.from_masks((arr.mean(-1) > 128)[None])
        cands.scores[:] = 0.5
        return select_mask(SegmentationResult(question, arr, cands, kind="discover", mode="yesno"), top_k, merge)


def bright(seed: int, size=(30, 40)) -> np.ndarray:
    img = np.zeros(size + (3,), np.uint8)
    rng = np.random.default_rng(seed)
    y, x = int(rng.integers(0, size[0] - 8)), int(rng.integers(0, size[1] - 8))
    img[y:y + 8, x:x + 8] = 255
    return img


def records_of(out: Path) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert len({r["id"] for r in recs}) == len(recs), "a sample was logged twice"
    return {r["id"]: r for r in recs}


def test_csv_and_jsonl_rows_bad_rows_reported_never_fatal(tmp_path):
    imgs = tmp_path / "pics"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(bright(i)).save(imgs / f"p{i}.png")
    (imgs / "bad.jpg").write_bytes(b"not an image")
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text(
        "id,image,question\n"
        "a,pics/p0.png,the white square\n"
        f"b,{imgs / 'p1.png'},the bright patch\n"  # absolute path
        "c,pics/missing.png,anything\n"
        "d,pics/p2.png,\n"  # no question, no --question
        "a,pics/p2.png,a repeated id\n"
        "e,,no image\n"
        "f,pics/bad.jpg,unreadable\n")
    out = tmp_path / "out"
    pipe = StubPipe()
    summary = run_batch(pipe, open_batch_input(csv_path), out, progress=False)
    recs = records_of(out)
    assert set(recs) == {"a", "b", "c", "d", "a__2", "e", "f"}
    assert summary["n_done"] == 2 and summary["n_skipped"] == 5 and summary["complete"]
    reasons = {r["id"]: r["skipped"] for r in recs.values() if "skipped" in r}
    assert "line 4" in reasons["c"] and "image not found" in reasons["c"]
    assert "line 5" in reasons["d"] and "question is empty" in reasons["d"]
    assert "line 6" in reasons["a__2"] and "used on line 2" in reasons["a__2"]
    assert "line 7" in reasons["e"] and "no image path" in reasons["e"]
    assert "line 8" in reasons["f"] and "not a readable image" in reasons["f"]
    for sid, seed in (("a", 0), ("b", 1)):
        rec = recs[sid]
        # the line is the answer's JSON plus where things are
        assert rec["kind"] == "segment" and rec["question"] and rec["mask_path"] == f"masks/{sid}.png"
        assert rec["image"].endswith(f"p{seed}.png") and rec["image_size"] == [40, 30]
        np.testing.assert_array_equal(read_mask(out / rec["mask_path"]), bright(seed).mean(-1) > 128)
        assert rec["mask_area"] == 64
    assert pipe.asked == ["the white square", "the bright patch"]

    # JSONL: a broken line is a bad row, --question fills rows without one
    jl = tmp_path / "rows.jsonl"
    jl.write_text(json.dumps({"image_path": "pics/p0.png"}) + "\n{broken\n"
                  + json.dumps({"image_path": "pics/p1.png", "prompt": "own question"}) + "\n[1, 2]\n")
    pipe = StubPipe()
    summary = run_batch(pipe, open_batch_input(jl, question="default question"), tmp_path / "out2", progress=False)
    recs = records_of(tmp_path / "out2")
    assert pipe.asked == ["default question", "own question"]
    assert "line 2 is not valid JSON" in recs["line2"]["skipped"]
    assert "line 4 is not a JSON object" in recs["line4"]["skipped"]
    assert summary["n_done"] == 2 and summary["n_skipped"] == 2


def test_folder_input_resumes_by_id_and_refuses_other_settings(tmp_path):
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(bright(i)).save(imgs / f"im{i}.png")
    Image.fromarray(bright(9)).save(imgs / "sub" / "im0.jpg")
    (imgs / ".hidden.png").write_bytes(b"")  # hidden files are not inputs
    out = tmp_path / "out"
    src = open_batch_input(imgs, question="the square")
    assert src.keys() == ["im0", "im1", "im2", "sub_im0"]
    first = StubPipe()
    s1 = run_batch(first, src, out, limit=2, progress=False, overlays=True)
    assert s1["n_done"] == 2 and s1["n_left"] == 0 and len(first.asked) == 2  # --limit selects the first two
    # the same command without --limit: only what is left runs
    with pytest.raises(OutputExistsError, match="different settings"):
        run_batch(StubPipe(), src, out, progress=False, overlays=False)
    second = StubPipe()
    s2 = run_batch(second, src, out, progress=False, overlays=True)
    assert len(second.asked) == 2 and s2["n_done"] == 4 and s2["n_this_run"] == 2 and s2["complete"]
    assert set(records_of(out)) == {"im0", "im1", "im2", "sub_im0"}
    assert Image.open(out / "overlays" / "sub_im0.png").size == (40, 30)
    # finished: nothing to do, no model built
    def no_model():
        raise AssertionError("nothing is left to run")
    s3 = run_batch(None, src, out, progress=False, overlays=True, pipeline_factory=no_model)
    assert s3["n_this_run"] == 0 and s3["n_done"] == 4
    with pytest.raises(OutputExistsError, match="different settings"):
        run_batch(StubPipe(), open_batch_input(imgs, question="another question"), out, progress=False)


def test_batch_input_errors(tmp_path):
    with pytest.raises(InputError, match="input not found"):
        open_batch_input(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="needs --question"):
        open_batch_input(tmp_path / "empty")
    with pytest.raises(InputError, match="no images"):
        open_batch_input(tmp_path / "empty", question="q")
    bad = tmp_path / "t.csv"
    bad.write_text("file_ref,q\nx.png,hello\n")
    with pytest.raises(InputError, match="no image column .*--columns image=NAME"):
        open_batch_input(bad)
    src = open_batch_input(bad, columns="image=file_ref,text=q")
    assert src.keys() == ["x"]
    (tmp_path / "one.png").write_bytes(b"")
    with pytest.raises(InputError, match="rea2seg segment"):
        open_batch_input(tmp_path / "one.png")


def test_parquet_input_reads_images_and_questions_not_masks(tmp_path):
    rows = [{"image": {"bytes": _png(bright(i)), "path": f"img{i}.jpg"}, "text": f"question {i}",
             "mask": [[True, False]], "image_id": f"img{i}"} for i in range(3)]  # masks of the wrong size: unread
    f = tmp_path / "set" / "data" / "train-00000-of-00001.parquet"
    f.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), f)
    src = open_batch_input(tmp_path / "set")
    assert src.keys() == ["img0", "img1", "img2"]
    pipe = StubPipe()
    summary = run_batch(pipe, src, tmp_path / "out", progress=False)
    assert summary["n_done"] == 3 and pipe.asked == ["question 0", "question 1", "question 2"]
    with pytest.raises(InputError, match="brings its own questions"):
        open_batch_input(tmp_path / "set", question="q")


def _png(arr) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ---- what travels between the discovery and the scorer actors ---------------------------------------------------

def test_discovery_answer_travels_exactly_and_compactly(pipeline):
    image = make_image(120, 160, seed=4)
    found = pipeline.discover(image, "the round object")
    assert len(found.candidates) > 0
    data = pack_found(found)
    back = unpack_found(data, found.image)
    np.testing.assert_array_equal(back.candidates.masks, found.candidates.masks)
    np.testing.assert_array_equal(back.heatmap, found.heatmap)  # rebuilt from the grid, bit for bit
    for name in ("boxes", "points", "sam_scores", "attention_scores", "scores", "p_yes", "numbers"):
        np.testing.assert_array_equal(getattr(back.candidates, name), getattr(found.candidates, name))
    assert back.candidates.sources == found.candidates.sources
    for name in ("question", "kind", "grid", "peaks", "timings_ms", "warning", "mode", "top_k"):
        a, b = getattr(back, name), getattr(found, name)
        assert (np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b), name
    raw = found.candidates.masks.nbytes + found.heatmap.nbytes
    assert len(data) < raw / 4, (len(data), raw)  # RLE masks and the grid, not the arrays
    # a heat map that is not the grid's upsampling travels as it is
    found.heatmap = found.heatmap.copy()
    found.heatmap[0, 0] = 0.123
    np.testing.assert_array_equal(unpack_found(pack_found(found), found.image).heatmap, found.heatmap)
    # and the trip survives pickling, as Ray does
    assert unpack_found(pickle.loads(pickle.dumps(data)), image).candidates.numbers.tolist() == \
        found.candidates.numbers.tolist()


@pytest.mark.parametrize("mode,merge", [("yesno", False), ("comparative", True)])
def test_discovery_then_finish_equals_segment(pipeline, mode, merge):
    """What the scorer actors run on a discovery answer that came from elsewhere is what segment runs."""
    image = make_image(60, 80, seed=7)
    sample = Sample("s", "the largest shape", image, None)
    ref = pipeline.segment(image, sample.question, top_k=2, mode=mode, merge=merge)
    found = unpack_found(pack_found(pipeline.discover(image, sample.question)), image)
    got = finish_segment(pipeline, sample, found, top_k=2, mode=mode, merge=merge)
    np.testing.assert_array_equal(got.mask, ref.mask)
    np.testing.assert_array_equal(got.candidates.masks, ref.candidates.masks)
    np.testing.assert_allclose(got.candidates.scores, ref.candidates.scores, atol=1e-6)
    np.testing.assert_array_equal(got.candidates.numbers, ref.candidates.numbers)
    np.testing.assert_array_equal(got.heatmap, ref.heatmap)
    strip = lambda j: {k: v for k, v in j.items() if k != "timings_ms"}  # noqa: E731
    assert strip(got.to_json()) == strip(ref.to_json())
    assert set(got.timings_ms) >= {"attention", "sam_masks", "scoring", "selection"}


# ---- Ray options: checked before anything starts ---------------------------------------------------------------

def test_ray_options_and_their_errors(monkeypatch):
    import argparse
    import sys

    from rea2seg.cli.common import add_ray_arguments, ray_options
    from rea2seg.errors import ModelNotFoundError
    from rea2seg.eval import ray_runner
    from rea2seg.eval.ray_runner import RayOptions, parse_pair

    parser = argparse.ArgumentParser()
    add_ray_arguments(parser)
    opts = ray_options(parser.parse_args(["--ray", "--actors", "3,1", "--num-gpus-per-actor", "0.25,1"]))
    assert (opts.address, opts.discovery_actors, opts.scorer_actors) == ("auto", 3, 1)
    assert (opts.discovery_gpus, opts.scorer_gpus) == (0.25, 1.0)
    assert ray_options(parser.parse_args(["--ray", "10.0.0.1:6379"])).address == "10.0.0.1:6379"
    assert ray_options(parser.parse_args([])) is None
    with pytest.raises(InputError, match="--actors only applies with --ray"):
        ray_options(parser.parse_args(["--actors", "2"]))
    assert parse_pair("2", "--actors") == (2, 2)
    for bad in ("0", "1,2,3", "two", ""):
        with pytest.raises(InputError, match="--actors takes one value"):
            parse_pair(bad, "--actors")
    with pytest.raises(InputError, match="--num-gpus-per-actor takes"):
        parse_pair("-1", "--num-gpus-per-actor", float)
    with pytest.raises(InputError, match="at least 1"):
        RayOptions(discovery_actors=0)

    class FakeRay:  # a 2-CPU, no-GPU cluster
        @staticmethod
        def cluster_resources():
            return {"CPU": 2.0}

    pools = [("discovery", 2, 0.0), ("scorer", 1, 0.0)]
    with pytest.raises(InputError, match="2 discovery \\+ 1 scorer actors need 3 CPUs and 0 GPUs, but the Ray "
                                         "cluster has 2 CPUs"):
        ray_runner._check_resources(FakeRay, RayOptions(), pools)
    ray_runner._check_resources(FakeRay, RayOptions(num_cpus_per_actor=0.5), pools)  # fits
    with pytest.raises(InputError, match="1 GPUs"):
        ray_runner._check_resources(FakeRay, RayOptions(), [("discovery", 1, 1.0)])

    # what an actor raised comes back as the engine's one-line error, not Ray's wrapper
    class Wrapped(Exception):
        pass
    err = Wrapped("ray wrapper")
    err.cause = ModelNotFoundError("SAM checkpoint not found: /x.pth")
    assert isinstance(ray_runner._rea2seg_error(err), ModelNotFoundError)
    assert ray_runner._rea2seg_error(ValueError("x")) is None

    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with pytest.raises(InputError, match=r"pip install 'rea2seg\[ray\]'"):
        ray_runner.connect(RayOptions())


def test_actors_without_ray_pass_the_answer_on_and_report_a_broken_factory(tmp_path, pipeline):
    """The actor classes called directly (as Ray Data calls them): discovery -> scorer gives run_whole's outcome;
    an engine error while building the models comes back as that error, with every row."""
    from rea2seg.errors import ModelNotFoundError
    from rea2seg.eval.batch import BatchWork
    from rea2seg.eval.ray_runner import DiscoveryActor, ScorerActor
    from rea2seg.eval.work import run_whole

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(make_image(48, 64, seed=2)).save(imgs / "a.png")
    (imgs / "b.png").write_bytes(b"broken")
    src = open_batch_input(imgs, "the round shape")
    work = BatchWork(overlays=True)
    batch = {"key": np.array(["a", "b"])}
    own = lambda: copy.copy(pipeline)  # noqa: E731  (the scorer actor drops SAM from its own pipeline object)
    found = DiscoveryActor(src, work, own)(batch)
    done = ScorerActor(work, own)(found)
    outcomes = {o.record["id"]: o for o in (pickle.loads(p) for p in done["payload"])}
    assert list(done["key"]) == ["a", "b"] and "skipped" in outcomes["b"].record
    ref = run_whole(work, pipeline, next(src.iter_samples(["a"])))
    strip = lambda j: {k: v for k, v in j.items() if k != "timings_ms"}  # noqa: E731
    assert strip(outcomes["a"].record) == strip(ref.record)
    assert outcomes["a"].files == ref.files  # the same mask and overlay PNG bytes
    assert pipeline.sam is not None

    def broken():
        raise ModelNotFoundError("SAM checkpoint not found: /models/sams/sam_vit_h_4b8939.pth")
    reply = DiscoveryActor(src, work, broken)(batch)
    assert [type(pickle.loads(p)["error"]) for p in reply["payload"]] == [ModelNotFoundError] * 2


def test_batch_command_line(tmp_path, tiny_dir, capsys):
    from rea2seg.cli.main import main

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(make_image(48, 64, seed=1)).save(imgs / "one.png")
    (imgs / "two.jpg").write_bytes(b"")
    out = tmp_path / "out"
    argv = ["batch", str(imgs), "--question", "the round shape", "--out", str(out), "--preset", "tiny-random",
            "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "batch: 1 segmented, 1 skipped, 0 left" in printed and "skipped two: image file is empty" in printed
    assert "meaningless" in printed  # random weights are flagged
    rec = records_of(out)["one"]
    assert rec["kind"] == "segment" and rec["question"] == "the round shape" and rec["n_candidates"] >= 0
    assert read_mask(out / rec["mask_path"]).shape == (48, 64)
    assert main(argv + ["--json"]) == 0  # the same command again: nothing left, the summary as JSON
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_this_run"] == 0 and summary["n_done"] == 1 and summary["complete"]
    assert main(["batch", str(imgs), "--out", str(tmp_path / "o2")]) == 2
    assert "needs --question" in capsys.readouterr().err
    assert main(argv[:-1] + ["--actors", "2"]) == 2
    assert "--actors only applies with --ray" in capsys.readouterr().err
