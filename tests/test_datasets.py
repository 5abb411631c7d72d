"""Loaders on small synthetic LabelMe and parquet fixtures; polygon rasterisation against OpenCV-made references."""
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rea2seg.eval.datasets import (LabelMeDataset, ParquetDataset, Sample, SkippedSample, coco_rle_counts,
                              decode_mask_cell, lisa_mask_from_shapes, normalize_category, open_dataset,
                              parse_column_mapping, rasterize_polygon)
from rea2seg.errors import InputError

FIXTURE = Path(__file__).parent / "data" / "lisa_polygons.npz"


def test_rasterisation_is_pixel_identical_to_lisa_opencv():
    """400 cases (star, self-intersecting, border, far-outside polygons; target/ignore/flag mixes) drawn by LISA's
    get_mask_from_json with OpenCV (tests/data/make_lisa_polygon_fixture.py)."""
    data = np.load(FIXTURE)
    cases = json.loads(bytes(data["cases"]).decode())
    flat = data["masks"]
    pos = 0
    for case in cases:
        h, w = case["height"], case["width"]
        expected = flat[pos:pos + h * w].reshape(h, w)
        pos += h * w
        mask, _ = lisa_mask_from_shapes(case["shapes"], h, w)
        np.testing.assert_array_equal(mask, expected, err_msg=json.dumps(case))
    assert pos == flat.size
    assert {255, 1} <= set(np.unique(flat).tolist())  # the fixture does exercise ignore and target


def test_rasterize_polygon_basics():
    m = rasterize_polygon([[1, 1], [4, 1], [4, 3], [1, 3]], 5, 6)
    assert m[1:4, 1:5].all() and m.sum() == 12  # boundary pixels included, as cv2 draws the outline
    assert rasterize_polygon([[2.9, 2.9]], 5, 5).sum() == 1  # a single point is a pixel (truncated to (2, 2))
    assert rasterize_polygon([[-50, -50], [-10, -50], [-10, -10]], 5, 5).sum() == 0
    with pytest.raises(InputError):
        rasterize_polygon([], 5, 5)
    with pytest.raises(InputError):
        rasterize_polygon([[0, float("nan")]], 5, 5)


def test_larger_polygons_first_ignore_overwrites_target():
    shapes = [{"label": "ignore", "points": [[2, 2], [5, 2], [5, 5], [2, 5]]},
              {"label": "target", "points": [[0, 0], [9, 0], [9, 9], [0, 9]]},
              {"label": "flag", "points": [[0, 0], [9, 0], [9, 9]]}]
    mask, n = lisa_mask_from_shapes(shapes, 10, 10)
    assert n == 2
    assert (mask[2:6, 2:6] == 255).all()
    assert (mask == 1).sum() == 100 - 16


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _labelme(folder: Path, stem: str, shapes, text=("what is it?",), is_sentence=False, image=True, size=(24, 32),
             **extra):
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    if image:
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(folder / f"{stem}.jpg")
    anno = {"text": text if isinstance(text, str) else list(text), "is_sentence": is_sentence, "shapes": shapes, "imageHeight": h, "imageWidth": w,
            **extra}
    (folder / f"{stem}.json").write_text(json.dumps(anno))


SQUARE = [[4, 4], [12, 4], [12, 12], [4, 12]]


def test_labelme_layout_first_text_bad_samples_reported(tmp_path):
    val = tmp_path / "ReasonSeg" / "val"
    _labelme(val, "a", [{"label": "target", "points": SQUARE},
                        {"label": "ignore", "points": [[5, 5], [7, 5], [7, 7]]}],
             text=["first question", "second"], is_sentence=True)
    _labelme(val, "b", [{"label": "target", "points": SQUARE}], text="a phrase")
    _labelme(val, "nopoly", [], text=["x"])
    _labelme(val, "flagonly", [{"label": "flag", "points": SQUARE}])
    _labelme(val, "malformed", ["not a shape"])
    _labelme(val, "ragged", [{"label": "target", "points": [[1, 2], [3]]}])
    _labelme(val, "noimage", [{"label": "target", "points": SQUARE}], image=False)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(val / "orphan.png")
    (val / "broken.json").write_text("{not json")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(val / "broken.jpg")
    (tmp_path / "ReasonSeg" / "test").mkdir()

    ds = open_dataset(tmp_path / "ReasonSeg", "val")
    assert isinstance(ds, LabelMeDataset) and ds.split == "val"
    assert ds.keys() == ["a", "b", "broken", "flagonly", "malformed", "noimage", "nopoly", "orphan", "ragged"]
    out = {s.id: s for s in ds.iter_samples()}
    a = out["a"]
    assert isinstance(a, Sample) and a.question == "first question" and a.is_sentence is True
    assert a.texts == ["first question", "second"] and a.image.shape == (24, 32, 3)
    assert set(np.unique(a.target).tolist()) == {0, 1, 255}
    assert out["b"].question == "a phrase" and out["b"].is_sentence is False
    reasons = {k: s.reason for k, s in out.items() if isinstance(s, SkippedSample)}
    assert set(reasons) == {"broken", "flagonly", "malformed", "noimage", "nopoly", "orphan", "ragged"}
    assert "each shape must be an object" in reasons["malformed"]
    assert "[x, y]" in reasons["ragged"]
    assert "no polygon" in reasons["nopoly"] and "no polygon" in reasons["flagonly"]
    assert "image missing" in reasons["noimage"]
    assert "no annotation JSON" in reasons["orphan"]
    assert "not valid JSON" in reasons["broken"]
    # only the requested keys, in dataset order
    assert [s.id for s in ds.iter_samples(["b", "a"])] == ["a", "b"]
    # the split folder itself works too, and the default split is val
    assert open_dataset(tmp_path / "ReasonSeg" / "val").keys() == ds.keys()
    assert open_dataset(tmp_path / "ReasonSeg").split == "val"
    with pytest.raises(InputError, match="train"):
        open_dataset(tmp_path / "ReasonSeg", "train")
    # splits but no val: never mix them, ask for one
    (tmp_path / "ReasonSeg" / "val").rename(tmp_path / "ReasonSeg" / "train")
    with pytest.raises(InputError, match="--split"):
        open_dataset(tmp_path / "ReasonSeg")
    assert open_dataset(tmp_path / "ReasonSeg", "train").keys() == ds.keys()


def test_labelme_all_texts_cp1252_and_sgdr_categories(tmp_path):
    root = tmp_path / "sgdr"
    _labelme(root / "spatial", "s1", [{"label": "target", "points": SQUARE}], text=["left one", "the left one"])
    _labelme(root / "misc", "g1", [{"label": "target", "points": SQUARE}], type="geometry")
    _labelme(root / "misc", "x1", [{"label": "target", "points": SQUARE}])
    # a cp1252-encoded JSON (LISA falls back to cp1252)
    (root / "spatial" / "c1.json").write_bytes(json.dumps(
        {"text": ["caf\u00e9 sign"], "is_sentence": False, "shapes": [{"label": "target", "points": SQUARE}]},
        ensure_ascii=False).encode("cp1252"))
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "spatial" / "c1.jpg")

    ds = open_dataset(root, texts="all", sgdr=True)
    samples = {s.id: s for s in ds.iter_samples()}
    assert samples["s1__t0"].question == "left one" and samples["s1__t1"].question == "the left one"
    assert samples["s1__t0"].category == "Spatial"
    assert samples["g1__t0"].category == "Geometric"
    assert samples["c1__t0"].question == "caf\u00e9 sign"
    assert isinstance(samples["x1__t0"], SkippedSample) and "category" in samples["x1__t0"].reason
    # the SGDR check counts annotation files, not texts
    check = ds.checks()["sgdr_check"]
    assert check["found"] == {"Discriminative": 0, "Geometric": 1, "Spatial": 2, "Multi-step": 0}
    assert check["no_category"] == 1 and not check["matches_published"]


def _write_parquet(path: Path, rows: list[dict], schema=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=2)


def test_parquet_hf_layout_with_splits_and_bad_rows(tmp_path):
    h, w = 20, 30
    img = _png(np.full((h, w, 3), 50, np.uint8))
    mask = np.zeros((h, w), bool)
    mask[5:10, 5:15] = True
    rows = [{"image": {"bytes": img, "path": f"img{i}.jpg"}, "text": f"question {i}", "mask": mask.tolist(),
             "image_id": f"img{i}", "ann_id": str(i), "img_height": h, "img_width": w} for i in range(5)]
    rows[3]["mask"] = np.zeros((h + 1, w), bool).tolist()  # wrong size -> skipped
    rows[4]["image"] = {"bytes": None, "path": "missing.jpg"}  # missing image -> skipped
    _write_parquet(tmp_path / "hf" / "data" / "test-00000-of-00001.parquet", rows)
    _write_parquet(tmp_path / "hf" / "data" / "val-00000-of-00001.parquet", rows[:2])

    with pytest.raises(InputError, match="several splits"):
        open_dataset(tmp_path / "hf")
    with pytest.raises(InputError, match="found splits"):
        open_dataset(tmp_path / "hf", "train")
    ds = open_dataset(tmp_path / "hf", "test")
    assert isinstance(ds, ParquetDataset) and ds.split == "test"
    assert ds.keys() == [f"img{i}" for i in range(5)]
    assert any("ignore" in n for n in ds.notes)  # merged-ignore convention is stated
    out = {s.id: s for s in ds.iter_samples()}
    assert out["img0"].question == "question 0"
    np.testing.assert_array_equal(out["img1"].target, mask.astype(np.uint8))
    assert "mask is 30x21" in out["img3"].reason
    assert "image missing" in out["img4"].reason
    assert [s.id for s in ds.iter_samples(["img2"])] == ["img2"]
    assert open_dataset(tmp_path / "hf" / "data" / "val-00000-of-00001.parquet").keys() == ["img0", "img1"]
    # without an id column, an HF Image struct's file name names the sample
    for r in rows:
        del r["image_id"]
    _write_parquet(tmp_path / "noid.parquet", rows[:2])
    assert open_dataset(tmp_path / "noid.parquet").keys() == ["img0", "img1"]


def test_parquet_sgdr_column_mapping_png_mask_rle_and_shapes(tmp_path):
    h, w = 16, 16
    img = _png(np.zeros((h, w, 3), np.uint8))
    lisa = np.zeros((h, w), np.uint8)
    lisa[2:8, 2:8] = 1
    lisa[3:4, 3:4] = 255
    rows = [
        {"picture": img, "query": "the round thing", "gt": _png(lisa), "kind": "multi_step", "uid": "q/1"},
        {"picture": img, "query": "the square", "gt": _png(((lisa > 0) * 255).astype(np.uint8)), "kind": "Discriminative",
         "uid": "q2"},
        {"picture": img, "query": "nothing", "gt": _png(lisa), "kind": None, "uid": "q3"},
    ]
    f = tmp_path / "sgdr.parquet"
    _write_parquet(f, rows)
    with pytest.raises(InputError, match="--columns"):
        open_dataset(f, sgdr=True)
    cols = parse_column_mapping("image=picture,text=query,mask=gt,category=kind,id=uid")
    ds = open_dataset(f, columns=cols, sgdr=True)
    out = {s.id: s for s in ds.iter_samples()}
    assert list(out) == ["q_1", "q2", "q3"]
    assert out["q_1"].category == "Multi-step" and out["q2"].category == "Discriminative"
    np.testing.assert_array_equal(out["q_1"].target, lisa)  # 0/1/255 PNG keeps ignore
    np.testing.assert_array_equal(out["q2"].target, (lisa > 0).astype(np.uint8))  # 0/255 PNG is binary
    assert isinstance(out["q3"], SkippedSample) and "category" in out["q3"].reason
    with pytest.raises(InputError, match="unknown column role"):
        parse_column_mapping("picture=img")
    with pytest.raises(InputError, match="not in"):
        open_dataset(f, columns={"text": "nope"})

    shapes = json.dumps([{"label": "target", "points": SQUARE}, {"label": "ignore", "points": [[5, 5], [6, 5],
                                                                                                [6, 6]]}])
    g = tmp_path / "poly" / "test.parquet"
    _write_parquet(g, [{"image": img, "text": ["one", "two"], "shapes": shapes, "is_sentence": True},
                       {"image": img, "text": ["three"], "shapes": "[]", "is_sentence": False}])
    ds = open_dataset(g.parent)
    s = list(ds.iter_samples())
    expected, _ = lisa_mask_from_shapes(json.loads(shapes), h, w)
    assert s[0].id == "row00000" and s[0].question == "one" and s[0].is_sentence is True
    np.testing.assert_array_equal(s[0].target, expected)
    assert isinstance(s[1], SkippedSample) and "no polygon" in s[1].reason
    assert not any("ignore" in n for n in ds.notes)  # polygons keep LISA's ignore regions


def coco_rle_string(counts):
    """pycocotools rleToString (LEB128-like, deltas from the count two back)."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def test_mask_cells_and_categories():
    m = np.zeros((3, 4), bool)
    m[1, 1:3] = True
    from rea2seg.images import rle_encode
    np.testing.assert_array_equal(decode_mask_cell(rle_encode(m)), m.astype(np.uint8))
    rng = np.random.default_rng(1)
    for _ in range(50):
        counts = rng.integers(0, 3000, rng.integers(1, 12)).tolist()
        assert coco_rle_counts(coco_rle_string(counts)) == counts
    assert decode_mask_cell({"size": [3, 4], "counts": coco_rle_string(rle_encode(m)["counts"])}).sum() == 2
    assert normalize_category("multi-step reasoning") == "Multi-step"
    assert normalize_category(" GEOMETRIC ") == "Geometric"
    assert normalize_category("s") == "Spatial"
    assert normalize_category("") is None
    with pytest.raises(InputError):
        decode_mask_cell(None)


# ---- the ReasonSeg copies people download (Seg-Zero's parquet copies), mask layouts, ReasonSeg-SGDR -------------

#: the published schema of Ricky06662/ReasonSeg_val and ReasonSeg_test (create_reasonseg_hf.py)
SEGZERO_SCHEMA = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                            ("text", pa.string()), ("mask", pa.list_(pa.list_(pa.bool_()))),
                            ("image_id", pa.string()), ("ann_id", pa.string()), ("img_height", pa.int64()),
                            ("img_width", pa.int64())])


def _segzero_copy(root: Path, name: str, n: int, seed: int) -> list[np.ndarray]:
    """``root/<name>/data/test-00000-of-00001.parquet`` in the published schema (both copies name their file test-*)."""
    rng = np.random.default_rng(seed)
    rows, masks = [], []
    for i in range(n):
        h, w = int(rng.integers(12, 30)), int(rng.integers(12, 30))
        mask = rng.random((h, w)) < 0.3
        masks.append(mask)
        rows.append({"image": {"bytes": _png(np.zeros((h, w, 3), np.uint8)), "path": f"{name}_{i}.jpg"},
                     "text": f"{name} question {i}", "mask": mask.tolist(), "image_id": f"{name}_{i}",
                     "ann_id": str(i), "img_height": h, "img_width": w})
    f = root / name / "data" / "test-00000-of-00001.parquet"
    f.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SEGZERO_SCHEMA), f)
    (root / name / "README.md").write_text("---\ndataset_info:\n  splits:\n  - name: test\n---\n")
    return masks


def test_segzero_copies_split_by_their_folder_never_merged(tmp_path):
    hf = tmp_path / "hf"
    val_masks = _segzero_copy(hf, "ReasonSeg_val", 2, seed=1)
    test_masks = _segzero_copy(hf, "ReasonSeg_test", 3, seed=2)
    val = open_dataset(hf / "ReasonSeg_val")
    assert val.split == "val" and val.keys() == ["ReasonSeg_val_0", "ReasonSeg_val_1"]
    assert open_dataset(hf / "ReasonSeg_val", "val").keys() == val.keys()  # --split val on the val copy works
    note = val.notes[0]
    assert "read the parquet copy" in note and str(hf / "ReasonSeg_val") in note
    assert "from the folder name 'ReasonSeg_val'" in note and "test-*" in note  # which copy, and why val
    with pytest.raises(InputError, match=r"found splits: val \(ReasonSeg_val\)"):
        open_dataset(hf / "ReasonSeg_val", "test")
    # a folder holding both copies: each split is its own copy, nothing merged, no ids suffixed
    assert open_dataset(hf, "val").keys() == val.keys()
    test = open_dataset(hf, "test")
    assert test.split == "test" and test.keys() == [f"ReasonSeg_test_{i}" for i in range(3)]
    assert test.name == "ReasonSeg_test"
    with pytest.raises(InputError, match="several splits"):
        open_dataset(hf)
    assert open_dataset(hf / "ReasonSeg_val" / "data" / "test-00000-of-00001.parquet").split == "val"
    for sample, mask in zip(test.iter_samples(), test_masks):
        np.testing.assert_array_equal(sample.target, mask.astype(np.uint8))
    # two copies of one split are refused, not merged
    _segzero_copy(hf, "ReasonSeg_test_mirror", 1, seed=3)
    with pytest.raises(InputError, match="2 copies of split 'test'.*never merged"):
        open_dataset(hf, "test")
    # the reports say which copy was read
    from rea2seg.eval.evaluate import markdown_table, score_predictions

    preds = tmp_path / "preds"
    preds.mkdir()
    Image.fromarray(val_masks[0].astype(np.uint8) * 255).save(preds / "ReasonSeg_val_0.png")
    summary, _ = score_predictions(val, preds)
    assert any(str(hf / "ReasonSeg_val") in n for n in summary["dataset"]["notes"])
    assert str(hf / "ReasonSeg_val") in markdown_table(summary, "M")


def _arrow_cell(value, type_=None):
    return pa.array([value], type=type_)


def test_mask_column_through_arrow_buffers_equals_python_path():
    from rea2seg.eval.datasets import mask_from_arrow

    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (3, 7), (17, 5), (40, 33)):
        m = rng.random((h, w)) < 0.4
        cell = _arrow_cell(m.tolist())
        assert str(cell.type) == "list<item: list<item: bool>>"
        got = mask_from_arrow(cell)
        np.testing.assert_array_equal(got, decode_mask_cell(m.tolist()))
        np.testing.assert_array_equal(got, m.astype(np.uint8))  # rows are rows: no transpose
        assert got.dtype == np.uint8
        # a slice of a longer column (offsets into shared buffers)
        col = pa.array([np.zeros((2, 2), bool).tolist(), m.tolist(), np.ones((3, 1), bool).tolist()])
        np.testing.assert_array_equal(mask_from_arrow(col.slice(1, 1)), m.astype(np.uint8))
    lisa = np.zeros((6, 8), np.uint8)
    lisa[1:4, 2:6] = 1
    lisa[2, 3] = 255
    cell = _arrow_cell(lisa.tolist(), pa.list_(pa.list_(pa.uint8())))
    np.testing.assert_array_equal(mask_from_arrow(cell), lisa)  # 0/1/255 integers keep ignore
    with pytest.raises(InputError, match="empty cell"):
        mask_from_arrow(_arrow_cell(None, pa.list_(pa.list_(pa.bool_()))))
    with pytest.raises(InputError, match="different lengths"):
        mask_from_arrow(_arrow_cell([[True, False], [True]]))


def test_mask_layouts_that_are_not_one_mask_are_named(tmp_path):
    from rea2seg.eval.datasets import mask_from_arrow

    two = np.zeros((2, 4, 5), bool)
    with pytest.raises(InputError, match=r"2 per-instance masks \(2x4x5\)"):
        mask_from_arrow(_arrow_cell(two.tolist()))
    with pytest.raises(InputError, match=r"2 per-instance masks \(2x4x5\)"):
        decode_mask_cell(two.tolist())
    np.testing.assert_array_equal(mask_from_arrow(_arrow_cell(two[:1].tolist())), two[0].astype(np.uint8))
    rles = [{"size": [4, 5], "counts": [3, 2, 15]}, {"size": [4, 5], "counts": [0, 20]}]
    with pytest.raises(InputError, match="list of 2 RLE masks"):
        mask_from_arrow(_arrow_cell(rles))
    with pytest.raises(InputError, match="list of 2 RLE masks"):
        decode_mask_cell(rles)
    polygons = [[10.5, 20.0, 30.0, 20.0, 30.0, 40.0], [1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]]
    for decode in (lambda c: mask_from_arrow(_arrow_cell(c)), decode_mask_cell):
        with pytest.raises(InputError, match=r"2 COCO polygon\(s\)"):
            decode(polygons)
    with pytest.raises(InputError, match=r"1 COCO polygon"):
        decode_mask_cell([[10.5, 20.25, 30.0, 20.0]])
    # in a dataset: the row is reported with the layout, the run goes on
    h, w = 4, 5
    rows = [{"image": _png(np.zeros((h, w, 3), np.uint8)), "text": "q", "mask": two.tolist()},
            {"image": _png(np.zeros((h, w, 3), np.uint8)), "text": "q", "mask": two[:1].tolist()}]
    _write_parquet(tmp_path / "inst.parquet", rows)
    out = list(open_dataset(tmp_path / "inst.parquet").iter_samples())
    assert isinstance(out[0], SkippedSample) and "per-instance masks" in out[0].reason
    assert isinstance(out[1], Sample)


def test_sgdr_categories_checked_against_the_published_counts(tmp_path):
    from rea2seg.eval.datasets import SGDR_PUBLISHED_COUNTS, sgdr_check
    from rea2seg.eval.evaluate import markdown_table, score_predictions

    exact = [c for c, n in SGDR_PUBLISHED_COUNTS.items() for _ in range(n)]
    assert sum(SGDR_PUBLISHED_COUNTS.values()) == 1190
    ok = sgdr_check(exact)
    assert ok["matches_published"] and ok["found"] == SGDR_PUBLISHED_COUNTS and not ok["differences"]
    off = sgdr_check(exact[1:] + ["counting", None])  # one Discriminative fewer, an unknown code, one missing
    assert not off["matches_published"]
    assert "Discriminative: 278 found, 279 published (-1)" in off["differences"]
    assert off["unknown_categories"] == {"counting": 1} and off["no_category"] == 1
    assert "Counting" not in off["found"] and len(off["found"]) == 4

    h, w = 8, 8
    img = _png(np.zeros((h, w, 3), np.uint8))
    mask = np.ones((h, w), bool).tolist()
    cats = ["Discriminative", "geometry", "spatial", "multi_step", "Counting", "7"]
    rows = [{"image": img, "text": f"q{i}", "mask": mask, "category": c, "id": f"s{i}"} for i, c in enumerate(cats)]
    _write_parquet(tmp_path / "sgdr" / "data" / "test-00000-of-00001.parquet", rows)
    ds = open_dataset(tmp_path / "sgdr", sgdr=True)
    check = ds.checks()["sgdr_check"]
    assert check["found"] == {"Discriminative": 1, "Geometric": 1, "Spatial": 1, "Multi-step": 1}
    assert check["unknown_categories"] == {"Counting": 1, "7": 1}
    samples = {s.id: s for s in ds.iter_samples()}
    for sid in ("s4", "s5"):  # reported with the code, not a fifth category
        assert isinstance(samples[sid], SkippedSample) and "not one of the four SGDR categories" in \
            samples[sid].reason
    preds = tmp_path / "preds"
    preds.mkdir()
    for i in range(6):
        Image.fromarray(np.full((h, w), 255, np.uint8)).save(preds / f"s{i}.png")
    summary, _ = score_predictions(ds, preds)
    assert set(summary["by_category"]) == {"Discriminative", "Geometric", "Spatial", "Multi-step"}
    assert summary["n_skipped"] == 2 and summary["sgdr_check"]["unknown_categories"] == {"Counting": 1, "7": 1}
    table = markdown_table(summary, "M")
    assert "SGDR check: differs from the published counts" in table and "'Counting' (1 rows)" in table
    assert "Geometric: 1 found, 396 published (-395)" in table


def test_a_copy_whose_files_name_several_splits_keeps_them(tmp_path):
    """The folder name decides only when the files do not tell splits apart (a folder named like a split, holding
    train/val/test files, keeps each file's split)."""
    rows = [{"image": _png(np.zeros((4, 4, 3), np.uint8)), "text": "q", "mask": np.ones((4, 4), bool).tolist()}]
    for split in ("train", "val"):
        _write_parquet(tmp_path / "my_test_copy" / "data" / f"{split}-00000-of-00001.parquet", rows)
    assert open_dataset(tmp_path / "my_test_copy", "train").split == "train"
    with pytest.raises(InputError, match="several splits \\(train, val\\)"):
        open_dataset(tmp_path / "my_test_copy")
