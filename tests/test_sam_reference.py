"""The engine's SAM decoding (``SamModel.embed / decode / upscale``) against Meta's own ``SamPredictor`` on the same
images and prompts, and a SAM that actually segments (``rea2seg.testing.planted``: weights set by hand) clicked on
planted shapes: the mask must land on the clicked shape, in the image's coordinates. Non-square images throughout:
a missing or doubled coordinate transform moves a click to another place."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rea2seg.models.sam import PromptBatch, SamModel, load_sam
from rea2seg.testing import build_tiny_sam
from rea2seg.testing.planted import BLOB_RADIUS, OBJECT_COLOUR, build_planted_sam

H, W = 480, 640  # landscape: SAM resizes the long side to its input size and pads the bottom
SHAPES = {"A": ((120, 160), 50), "B": ((300, 400), 60), "C": ((380, 120), 40)}  # (row, col) centre, radius


@pytest.fixture(scope="module")
def planted():
    return SamModel(build_planted_sam(), "planted", Path("planted"), torch.device("cpu"))


@pytest.fixture(scope="module")
def random_tiny(tmp_path_factory):
    return load_sam(build_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny.safetensors", seed=7), device="cpu")


def _scene(h=H, w=W, shapes=SHAPES):
    img = np.full((h, w, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    masks = {}
    for name, ((r, c), rad) in shapes.items():
        masks[name] = (yy - r) ** 2 + (xx - c) ** 2 < rad ** 2
        img[masks[name]] = OBJECT_COLOUR
    return img, masks


def _iou(a, b) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _predictor(sam: SamModel, image):
    from segment_anything import SamPredictor

    p = SamPredictor(sam.sam)
    p.set_image(image)
    return p


PROMPTS = [  # (points xy, labels, box xyxy or None): all in original-image pixels
    ([[160, 120]], [1], None),
    ([[400, 300]], [1], None),
    ([[600, 40]], [1], None),
    ([[160, 120], [400, 300]], [1, 0], None),
    ([[150, 130]], [1], [90, 60, 230, 190]),
    ([[395, 310], [120, 380]], [1, 1], [320, 220, 480, 380]),
]


@pytest.mark.parametrize("which", ["planted", "random_tiny"])
@pytest.mark.parametrize("shape", [(H, W), (W, H)])
def test_decode_equals_segment_anything_predictor(request, which, shape):
    """Same image, same prompts: the engine's masks, predicted IoUs and low-res logits equal SamPredictor.predict's
    (random weights react to every input, so any difference in the transforms shows; the planted SAM gives masks
    with meaning). Prompts of one point count go in one batch, as discovery sends them."""
    sam = request.getfixturevalue(which)
    image, _ = _scene(*shape)
    emb = sam.embed(image)
    ref = _predictor(sam, image)
    assert emb.input_size == tuple(ref.input_size) and emb.original_size == tuple(ref.original_size)
    assert torch.allclose(emb.features, ref.features, atol=1e-5)
    for n_points in (1, 2):
        group = [p for p in PROMPTS if len(p[0]) == n_points]
        for with_box in (False, True):
            batch = [p for p in group if (p[2] is not None) == with_box]
            if not batch:
                continue
            prompts = PromptBatch(np.array([p[0] for p in batch], np.float32), np.array([p[1] for p in batch]),
                                  np.array([p[2] or [np.nan] * 4 for p in batch], np.float32))
            low, iou = sam.decode(emb, prompts, multimask=True, chunk=8)
            for i, (pts, labels, box) in enumerate(batch):
                masks, scores, logits = ref.predict(point_coords=np.array(pts, np.float32),
                                                    point_labels=np.array(labels), box=None if box is None else
                                                    np.array(box, np.float32), multimask_output=True)
                assert np.allclose(iou[i].numpy(), scores, atol=1e-5), (pts, box)
                assert np.allclose(low[i].numpy(), logits, atol=1e-4), (pts, box)
                ours = sam.upscale(emb, low[i])
                assert (ours != masks).mean() < 1e-4, (pts, box)  # float noise at the 0-logit boundary only


def test_click_on_a_planted_shape_returns_that_shape(planted):
    """The planted SAM segments the object-coloured shape around a click: a click on each shape gives that shape
    (and nothing of the others) in the image's own pixels; a click on the background gives nothing."""
    image, masks = _scene()
    emb = planted.embed(image)
    names = list(SHAPES)
    clicks = np.array([[[SHAPES[n][0][1], SHAPES[n][0][0]]] for n in names] + [[[600, 40]]], np.float32)
    prompts = PromptBatch(clicks, np.ones((len(clicks), 1), np.int64), np.full((len(clicks), 4), np.nan, np.float32))
    low, iou = planted.decode(emb, prompts, multimask=False)
    got = planted.upscale(emb, low[:, 0])
    for i, name in enumerate(names):
        assert _iou(got[i], masks[name]) > 0.75, (name, _iou(got[i], masks[name]))
        for other in names:
            if other != name:
                assert not (got[i] & masks[other]).any(), (name, other)
    assert not got[-1].any(), "a click on the background selects nothing"


def test_click_off_centre_and_on_a_portrait_image(planted):
    """Clicks near a shape's edge, on a portrait image (padding on the right instead of the bottom)."""
    shapes = {"top": ((100, 120), 45), "bottom": ((520, 200), 55)}
    image, masks = _scene(640, 320, shapes)
    emb = planted.embed(image)
    clicks = np.array([[[150, 110]], [[170, 540]]], np.float32)  # inside each, off its centre
    low, _ = planted.decode(emb, PromptBatch(clicks, np.ones((2, 1), np.int64), np.full((2, 4), np.nan, np.float32)),
                            multimask=False)
    got = planted.upscale(emb, low[:, 0])
    assert _iou(got[0], masks["top"]) > 0.75 and not (got[0] & masks["bottom"]).any()
    assert _iou(got[1], masks["bottom"]) > 0.75 and not (got[1] & masks["top"]).any()


def test_planted_sam_reach_is_bounded():
    """What the planted SAM is: object pixels beyond BLOB_RADIUS of the long side from the click are never selected
    (so a click lands on one shape, not on every object-coloured pixel)."""
    sam = SamModel(build_planted_sam(), "planted", Path("planted"), torch.device("cpu"))
    image = np.zeros((256, 256, 3), np.uint8)
    image[:] = OBJECT_COLOUR  # everything is object
    emb = sam.embed(image)
    low, _ = sam.decode(emb, PromptBatch(np.array([[[128, 128]]], np.float32), np.ones((1, 1), np.int64),
                                         np.full((1, 4), np.nan, np.float32)), multimask=False)
    got = sam.upscale(emb, low[:, 0])[0]
    yy, xx = np.mgrid[0:256, 0:256]
    dist = np.hypot(yy - 128, xx - 128) / 256
    assert got[dist < 0.6 * BLOB_RADIUS].all() and not got[dist > 1.4 * BLOB_RADIUS].any()
