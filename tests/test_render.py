"""Visual prompts and previews (what the scorer and the user see)."""
from __future__ import annotations

import numpy as np

from rea2seg import render
from rea2seg.types import Candidates


def _masks(h=90, w=120):
    m = np.zeros((3, h, w), bool)
    m[0, 10:40, 10:50] = True
    m[1, 50:80, 60:110] = True
    m[2, 5:8, 100:104] = True  # small
    return Candidates.from_masks(m)


def test_overlay_fill_contour_box():
    img = np.zeros((90, 120, 3), np.uint8)
    c = _masks()
    out = render.overlay(img, c.masks[0], color=(255, 0, 0), alpha=0.45)
    assert out.shape == img.shape and out.dtype == np.uint8
    inside = out[25, 30]
    assert inside[0] == round(255 * 0.45) and inside[1] == 0  # fill at alpha
    assert tuple(out[10, 30]) == (255, 0, 0)  # contour on the edge
    assert (out[~render._dilate(c.masks[0], 2)] == 0).all()  # nothing drawn far outside


def test_candidate_sheet_numbers_and_colours():
    img = np.full((90, 120, 3), 128, np.uint8)
    sheet = render.candidate_sheet(img, _masks())
    assert sheet.shape == img.shape
    for i, m in enumerate(_masks().masks[:2]):  # each candidate tinted with its own palette colour
        ys, xs = np.nonzero(m)
        px = sheet[ys[0] + 2, xs[-1] - 2].astype(int)
        want = (128 * 0.55 + render.PALETTE[i].astype(int) * 0.45)
        assert np.abs(px - want).max() <= 2 or (px == render.PALETTE[i]).all()


def test_zoom_crop_for_small_masks():
    img = np.zeros((90, 120, 3), np.uint8)
    c = _masks()
    view = render.candidate_view(img, c.masks[2], zoom_below=0.02)
    assert min(view.shape[:2]) >= 336 and view.shape != img.shape
    big = render.candidate_view(img, c.masks[0], zoom_below=0.02)
    assert big.shape == img.shape


def test_heatmap_and_topk_strip():
    img = np.zeros((90, 120, 3), np.uint8)
    heat = np.linspace(0, 1, 90 * 120, dtype=np.float32).reshape(90, 120)
    h = render.heatmap_overlay(img, heat)
    assert h.shape == img.shape and h[-1, -1].sum() > h[0, 0].sum()
    c = _masks()
    c.scores[:] = [0.9, 0.5, 0.1]
    strip = render.topk_strip(img, c, k=2)
    assert strip.shape == (90, 240, 3)
