"""Candidate discovery on the tiny models: batched SAM equals one-by-one, de-duplication, shapes."""
from __future__ import annotations

import numpy as np
import pytest

from rea2seg.types import Candidates
from rea2seg.config import DiscoveryConfig
from rea2seg.discovery import discover_candidates, mask_iou_matrix, mask_nms, prompts_from_peaks
from rea2seg.models.sam import PromptBatch
from rea2seg.testing.reference import predict_one_by_one


def _prompts(h, w, n=7, seed=0):
    rng = np.random.default_rng(seed)
    pts = np.stack([rng.uniform(0, w - 1, n), rng.uniform(0, h - 1, n)], 1).astype(np.float32)[:, None]
    labels = np.ones((n, 1), np.int64)
    boxes = np.full((n, 4), np.nan, np.float32)
    boxes[::2] = np.concatenate([pts[::2, 0] - 20, pts[::2, 0] + 30], 1)  # every other prompt also has a box
    return PromptBatch(pts, labels, boxes)


def test_batched_sam_equals_one_by_one(pipeline, image):
    sam = pipeline.sam
    emb = sam.embed(image)
    prompts = _prompts(*image.shape[:2])
    low, iou = sam.decode(emb, prompts, multimask=True, chunk=3)
    n = len(prompts)
    batched = sam.upscale(emb, low.reshape(n * 3, *low.shape[-2:])).reshape(n, 3, *image.shape[:2])
    single, single_iou = predict_one_by_one(sam, emb, prompts)
    assert np.allclose(iou.numpy(), single_iou, atol=1e-5)
    mismatch = (batched != single).mean()
    assert mismatch < 1e-4, mismatch  # identical up to float noise at the 0-logit boundary


def test_prompts_from_peaks_layout():
    import torch
    grid = torch.zeros(10, 10)
    grid[2, 3] = 1.0
    grid[7, 7] = 0.8
    cfg = DiscoveryConfig(negative_points=True, box_prompts=True)
    batch, sources, xy = prompts_from_peaks(grid, np.array([[2.0, 3.0], [7.0, 7.0]]), (100, 200), cfg)
    assert sources == ["peak:0", "box:0", "peak:1", "box:1"]
    assert batch.points.shape == (4, 2, 2) and batch.labels.tolist()[0] == [1, 0]
    assert np.allclose(xy[0], [(3 + 0.5) / 10 * 200, (2 + 0.5) / 10 * 100])
    assert np.isnan(batch.boxes[0]).all() and not np.isnan(batch.boxes[1]).any()


def test_mask_nms_removes_duplicates():
    m = np.zeros((4, 20, 20), bool)
    m[0, 2:10, 2:10] = True
    m[1, 2:10, 2:11] = True  # near-duplicate of 0
    m[2, 12:18, 12:18] = True
    m[3] = m[2]
    keep = mask_nms(m, np.array([0.9, 0.95, 0.5, 0.4]), 0.8)
    assert keep.tolist() == [1, 2]


def test_discover_candidates(pipeline, image):
    cfg = DiscoveryConfig(max_candidates=5, min_area_fraction=0.0005)
    d = discover_candidates(pipeline.vlm, pipeline.sam, image, "the red circle", cfg)
    c = d.candidates
    H, W = image.shape[:2]
    assert isinstance(c, Candidates) and 1 <= len(c) <= 5
    assert c.masks.shape == (len(c), H, W) and c.masks.dtype == bool
    assert d.heatmap.shape == (H, W)
    assert (c.areas >= 0.0005 * H * W).all()
    iou = mask_iou_matrix(c.masks)
    np.fill_diagonal(iou, 0)
    assert iou.max() <= cfg.nms_iou + 1e-6, "candidates must be de-duplicated"
    assert all(s.split("/")[0].split(":")[0] in ("peak", "box", "vlm") for s in c.sources)
    for i in range(len(c)):  # boxes are the masks' boxes
        ys, xs = np.nonzero(c.masks[i])
        assert c.boxes[i].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_vlm_proposals_never_crash(pipeline, image):
    """The tiny model's reply is random text: unparsable proposals are skipped, discovery still works."""
    cfg = DiscoveryConfig(sources=("attention", "boxes"), max_new_tokens_proposals=16)
    d = discover_candidates(pipeline.vlm, pipeline.sam, image, "the cup", cfg)
    assert d.candidates.masks.shape[1:] == image.shape[:2]


def test_empty_question_rejected(pipeline, image):
    from rea2seg.errors import InputError
    with pytest.raises(InputError, match="empty"):
        pipeline.discover(image, "   ")


def test_vlm_proposals_scaled_to_image_pixels(pipeline, monkeypatch):
    """A Seg-Zero/VisionReasoner-style reply (scripted here: random weights write noise) becomes SAM prompts in the
    image's pixels: Qwen2.5-VL answers in the pixels of its resized input."""
    from PIL import Image
    from rea2seg.discovery import proposal_prompts
    from rea2seg.models.prompting import chat_inputs
    vlm = pipeline.vlm
    img = Image.new("RGB", (300, 200))
    _, gh, gw = (int(v) for v in chat_inputs(vlm, [[img, "x"]])["image_grid_thw"][0])
    rw, rh = gw * 14, gh * 14  # the resized input the model sees
    reply = ('<think>the cup</think><answer>[{"bbox_2d": [0, 0, %d, %d], "point_2d": [%d, %d]}, {"oops": 1}]'
             '</answer>' % (rw // 2, rh // 2, rw // 4, rh // 4))
    monkeypatch.setattr(vlm.processor, "batch_decode", lambda *a, **k: [reply])
    batch, sources, text = proposal_prompts(vlm, img, "the cup", max_new_tokens=2)
    assert sources == ["vlm:0"] and text == reply
    assert np.allclose(batch.boxes[0], [0, 0, 150, 100], atol=1)
    assert np.allclose(batch.points[0, 0], [75, 50], atol=1) and batch.labels[0].tolist() == [1, -1]
    monkeypatch.setattr(vlm.processor, "batch_decode", lambda *a, **k: ["no json here"])
    assert proposal_prompts(vlm, img, "the cup", max_new_tokens=2)[0] is None
