"""The public API end to end on the tiny models (plumbing only: random weights, meaningless masks)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rea2seg import Rea2Seg, errors
from rea2seg.images import load_image


def test_segment_end_to_end(pipeline, image):
    r = pipeline.segment(image, "the red circle", top_k=3)
    H, W = image.shape[:2]
    assert r.mask.shape == (H, W) and r.mask.dtype == bool and r.heatmap.shape == (H, W)
    assert 1 <= len(r.candidates)
    scores = r.candidates.scores
    assert np.all(np.diff(scores[~np.isnan(scores)]) <= 0), "candidates ranked by score"
    assert np.array_equal(r.mask, r.candidates.masks[0])
    j = r.to_json()
    assert len(j["candidates"]) == min(3, len(r.candidates))
    assert {"box_xyxy", "score", "reasoning", "image_size", "timings_ms", "candidates"} <= set(j)
    assert {"attention", "sam_embedding", "sam_masks", "scoring", "total"} <= set(r.timings_ms)
    assert "meaningless" in r.warning


def test_segment_is_deterministic(tiny_dir, image):
    a = Rea2Seg.from_preset("tiny-random", device="cpu")
    r1 = a.segment(image, "the cup", mode="reasoning")
    a.clear_cache()
    r2 = a.segment(image, "the cup", mode="reasoning")
    assert np.array_equal(r1.mask, r2.mask)
    assert np.allclose(r1.candidates.scores, r2.candidates.scores, equal_nan=True)
    assert r1.candidates.reasoning == r2.candidates.reasoning


def test_stages_compose(pipeline, image):
    d = pipeline.discover(image, "the cup")
    scored = pipeline.score(image, "the cup", d.candidates, mode="yesno")
    r = pipeline.select("the cup", scored, top_k=2, heatmap=d.heatmap)
    assert r.top_k == 2 and len(r.top) == min(2, len(scored))
    with pytest.raises(errors.InputError, match="unknown scoring mode"):
        pipeline.score(image, "the cup", d.candidates, mode="vibes")
    with pytest.raises(errors.InputError, match="image they came from"):
        pipeline.score(image[:50], "the cup", d.candidates)


def test_second_question_reuses_encoders(tiny_dir, image):
    """A second question on the same image skips the SAM encoder and the VLM vision tower (call counts)."""
    pipe = Rea2Seg.from_preset("tiny-random", device="cpu")
    pipe.clear_cache()
    calls = {"sam": 0, "vision": 0}
    h1 = pipe.sam.sam.image_encoder.register_forward_hook(lambda *a: calls.__setitem__("sam", calls["sam"] + 1))
    visual = pipe.vlm.model.model.visual
    h2 = visual.register_forward_hook(lambda *a: calls.__setitem__("vision", calls["vision"] + 1))
    try:
        pipe.discover(image, "the cup")
        first = dict(calls)
        pipe.discover(image, "the plate on the left")
        assert calls["sam"] == first["sam"] == 1
        assert calls["vision"] == first["vision"], "vision features must come from the cache"
        pipe.discover(np.ascontiguousarray(image[::-1]), "the cup")  # another image: encoders run again
        assert calls["sam"] == 2 and calls["vision"] > first["vision"]
    finally:
        h1.remove()
        h2.remove()
    assert pipe.cache.stats()["hits"] >= 1


def test_shared_scorer_object(tiny_paths):
    vlm_dir, sam_path = tiny_paths
    pipe = Rea2Seg.from_pretrained(str(vlm_dir), str(sam_path), scorer=str(vlm_dir), device="cpu")
    assert pipe.scorer is pipe.vlm


def test_question_checks(pipeline, image):
    with pytest.raises(errors.InputError, match="UTF-8"):
        pipeline.segment(image, b"\xff\xfe bad")
    assert pipeline._question(" the cup ".encode()) == "the cup"
    with pytest.raises(errors.InputError, match="characters long"):
        pipeline.segment(image, "word " * 2000)
    with pytest.raises(errors.InputError, match="tokens long"):  # under the character cap, over the token budget
        pipeline.segment(image, "x" * 1900)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "1"])
def test_image_modes(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    img = rgb.convert(mode) if mode != "I;16" else Image.fromarray(
        (np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)).convert("I;16")
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    arr = load_image(path)
    assert arr.shape == (20, 30, 3) and arr.dtype == np.uint8


def test_exif_rotation(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (40, 20, 3)


def test_numpy_and_pil_inputs():
    a = np.zeros((10, 12, 4), np.uint8)
    a[..., 3] = 255
    assert load_image(a).shape == (10, 12, 3)
    assert load_image(np.zeros((10, 12), np.float32)).shape == (10, 12, 3)
    assert load_image(Image.new("LA", (12, 10))).shape == (10, 12, 3)
    with pytest.raises(errors.InputError, match="shape"):
        load_image(np.zeros((10, 12, 2), np.uint8))
    with pytest.raises(errors.InputError, match="at least"):
        load_image(np.zeros((1, 1, 3), np.uint8))
