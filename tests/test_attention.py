"""Rows-only attention recording vs the eager oracle, token->grid mapping, heat maps and peaks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rea2seg.discovery import attention_grid
from rea2seg.heatmap import find_peaks, heatmap_from_grids, upsample
from rea2seg.models.attention import image_token_span, layer_band, record_attention, token_grid
from rea2seg.models.vlm import load_vlm
from rea2seg.models.prompting import chat_inputs


def _eager_rows(vlm, inputs, rows):
    vlm.model.set_attn_implementation({"text_config": "eager"})
    try:
        with torch.inference_mode():
            out = vlm.model(**inputs, output_attentions=True)
    finally:
        vlm.model.set_attn_implementation({"text_config": "rea2seg_sdpa_rows"})
    return out.attentions


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"])
@pytest.mark.parametrize("size", [(224, 224), (200, 330)])
def test_rows_equal_eager(family_dirs, family, size):
    """Qwen3.5 (hybrid): its linear-attention layers never call the attention function, so only the full-attention
    layers are recorded; eager returns one map per full-attention layer, in order."""
    vlm = load_vlm(str(family_dirs[family]), device="cpu")
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (*size, 3), dtype=np.uint8))
    inputs = chat_inputs(vlm, [[img, "the second car from the left"]])
    ids = inputs["input_ids"][0]
    s, e = image_token_span(ids, vlm.image_token_id)
    rows = torch.arange(e + 1, ids.shape[0])
    with torch.inference_mode(), record_attention(rows, slice(s, e)) as rec:
        vlm.model(**inputs)
    eager = _eager_rows(vlm, inputs, rows)
    assert sorted(rec.out) == vlm.attention_layers
    assert vlm.attention_layers == (list(range(vlm.num_layers)) if family != "qwen3_5" else [1])
    assert len(eager) == len(vlm.attention_layers)
    for j, layer in enumerate(vlm.attention_layers):
        want = eager[j][:, :, rows][..., s:e]
        got = rec.out[layer]
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= 1e-5


def test_rows_equal_eager_padded_batch(tiny_paths):
    vlm = load_vlm(str(tiny_paths[0]), device="cpu")
    rng = np.random.default_rng(2)
    imgs = [Image.fromarray(rng.integers(0, 255, (160, 240, 3), dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8))]
    inputs = chat_inputs(vlm, [[imgs[0], "a"], [imgs[1], "the cup on the table next to the bread"]])
    assert (inputs["attention_mask"] == 0).any(), "the batch must be padded for this test"
    L = inputs["input_ids"].shape[1]
    rows = torch.arange(L - 12, L)
    with torch.inference_mode(), record_attention(rows, slice(None), {0, 1}) as rec:
        vlm.model(**inputs)
    eager = _eager_rows(vlm, inputs, rows)
    for layer, got in rec.out.items():
        want = eager[layer][:, :, rows]
        valid = inputs["attention_mask"][:, rows].bool()  # padded query rows are undefined in both
        diff = (got - want).abs().amax(dim=(1, 3))
        assert diff[valid].max().item() <= 1e-5


def test_layer_band():
    assert layer_band(28, (0.5, 0.85)) == list(range(14, 24))
    assert layer_band(2, (0.5, 0.85)) == [1]
    assert layer_band(1, (0.0, 0.1)) == [0]


def test_token_grid_row_major():
    vals = torch.arange(2 * 3 * 4, dtype=torch.float32)  # t=2 frames of a 3x4 merged grid
    g = token_grid(vals, (2, 6, 8), merge=2)
    assert g.shape == (3, 4)
    assert torch.equal(g, (vals[:12] + vals[12:]).reshape(3, 4) / 2)


def test_token_grid_matches_image_layout(tiny_paths):
    """A planted bright region lands in the same cells of the token grid: with the vision blocks zeroed, each merged
    token's feature depends only on its own patches, so the grid of feature distances mirrors the image."""
    import copy
    vlm = load_vlm(str(tiny_paths[0]), device="cpu")
    model = copy.deepcopy(vlm.model)
    with torch.no_grad():
        for blk in model.model.visual.blocks:
            for p in blk.parameters():
                p.zero_()
    img = np.zeros((224, 336, 3), np.uint8)
    img[:84, 224:] = 255  # top-right bright patch: rows 0..2, cols 8..11 of the 8x12 merged grid
    inputs = chat_inputs(vlm, [[Image.fromarray(img), "x"]])
    with torch.no_grad():
        feats = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"],
                                               return_dict=True).pooler_output[0]
    background = feats[0]  # the top-left token is dark
    per_token = (feats - background).norm(dim=-1)
    grid = token_grid(per_token, inputs["image_grid_thw"][0], vlm.merge_size)
    assert grid.shape == (8, 12)
    expected = np.zeros((8, 12), bool)
    expected[:3, 8:] = True
    assert np.array_equal(grid.numpy() > grid.max().item() / 2, expected)


def _blobs(h=24, w=32, centres=((6, 8), (16, 24)), sigma=2.0):
    yy, xx = np.mgrid[0:h, 0:w]
    g = sum(np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma ** 2)) for r, c in centres)
    return torch.tensor(g, dtype=torch.float32)


def test_peaks_recover_blob_centres_and_ignore_sink():
    centres = ((6.0, 8.0), (16.0, 24.0))
    raw = _blobs(centres=centres)
    raw[20, 3] = 25.0  # an attention sink: one background token soaking up attention
    generic = torch.full_like(raw, 0.1)
    generic[20, 3] = 25.0  # ... whatever the prompt (it is in the generic map too)
    for g in (None, generic):
        heat = heatmap_from_grids(raw, g, sink_quantile=0.99, sigma=1.0)
        peaks, values = find_peaks(heat, threshold=0.3, min_distance=2, max_peaks=4)
        assert len(peaks) == 2, peaks
        found = sorted(tuple(p) for p in peaks)
        for (r, c), (pr, pc) in zip(sorted(centres), found):
            assert abs(pr - r) <= 1 and abs(pc - c) <= 1


def test_peaks_max_count_and_distance():
    g = _blobs(centres=((4, 4), (4, 7), (18, 20), (12, 28)), sigma=1.0)
    peaks, values = find_peaks(g, threshold=0.1, min_distance=4, max_peaks=2)
    assert len(peaks) == 2
    assert np.all(np.diff(values) <= 0)
    flat = find_peaks(torch.zeros(5, 5), 0.3, 2, 4)[0]
    assert len(flat) == 1  # a flat map still gives one prompt


def test_heatmap_has_image_size(tiny_paths):
    vlm = load_vlm(str(tiny_paths[0]), device="cpu")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 410, 3), dtype=np.uint8))
    grid = attention_grid(vlm, img, "the cup", layer_band(vlm.num_layers, (0.5, 1.0)))
    heat = upsample(heatmap_from_grids(grid, None, 0.99, 1.0), (150, 410))
    assert heat.shape == (150, 410) and heat.dtype == np.float32
    assert 0.0 <= heat.min() and heat.max() <= 1.0
