"""A Qwen2.5-VL with the real 7B attention dimensions (text: 28 heads, 4 KV heads, head dim 128, hidden 3584; vision:
width 1280, 16 heads, 112 px windows, full attention in block 7 of 8 as in blocks 7/15/23/31 of 32) and few layers,
with the published processor: image-token counts against image size, the token order (window reordering undone)
against a planted bright window, and the recorded attention rows against eager attention at these dimensions.
Random weights, built once for the module (~185M parameters, in memory)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from rea2seg.models.attention import (RECORDING_ATTENTION, image_token_span, record_attention,
                                      register_recording_attention)
from rea2seg.models.prompting import chat_inputs
from rea2seg.models.vlm import VLM, load_processor
from rea2seg.testing import QWEN_CHAT_TEMPLATE, QWEN_SPECIALS, build_tiny_tokenizer, published

BUDGET = 1024 * 28 * 28
pytestmark = pytest.mark.slow  # a 185M-parameter model: about half a minute on 2 cores


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> VLM:
    import transformers as tf

    real = published.QWEN2_5_VL_7B_CONFIG
    tok = build_tiny_tokenizer()
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    text = dict(real["text"], num_hidden_layers=2, intermediate_size=256, vocab_size=len(tok),
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = dict(real["vision"], depth=8, fullatt_block_indexes=[7], intermediate_size=256)
    cfg = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"])
    assert (cfg.text_config.num_attention_heads, cfg.text_config.num_key_value_heads,
            cfg.text_config.hidden_size // cfg.text_config.num_attention_heads) == (28, 4, 128)
    register_recording_attention()
    torch.manual_seed(0)
    model = tf.Qwen2_5_VLForConditionalGeneration._from_config(
        cfg, dtype=torch.float32, attn_implementation={"text_config": RECORDING_ATTENTION, "vision_config": "sdpa"})
    d = tmp_path_factory.mktemp("medium-processor")
    tok.save_pretrained(d)
    (d / "preprocessor_config.json").write_text(json.dumps(published.QWEN2_5_VL_7B_PREPROCESSOR))
    (d / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_CHAT_TEMPLATE}))
    processor = load_processor(d)
    processor.tokenizer.padding_side = "left"
    return VLM(model.eval(), processor, "medium Qwen2.5-VL", torch.device("cpu"), torch.float32, "qwen2_5_vl", BUDGET)


def _smart_resize(h: int, w: int, factor: int = 28, min_pixels: int = 3136, max_pixels: int = BUDGET):
    """Qwen2-VL's resize rule, written out: sides rounded to multiples of 28, scaled down to fit ``max_pixels``."""
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


@pytest.mark.parametrize("wh", [(224, 224), (500, 300), (640, 480), (4000, 3000), (3000, 4000), (1000, 60)])
def test_image_token_count_follows_the_resize_rule(medium, wh):
    w, h = wh
    inputs = chat_inputs(medium, [[Image.new("RGB", (w, h)), "q"]])
    hb, wb = _smart_resize(h, w)
    assert inputs["image_grid_thw"][0].tolist() == [1, hb // 14, wb // 14]
    n = int((inputs["input_ids"] == medium.image_token_id).sum())
    assert n == hb * wb // 28 ** 2 <= 1024
    if w * h <= 500 * 300:  # the vision tower makes exactly one feature per image token
        with torch.inference_mode():
            feats = medium.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"],
                                                          return_dict=True).pooler_output
        assert sum(f.shape[0] for f in feats) == n and feats[0].shape[-1] == 3584


@pytest.mark.parametrize("wh", [(448, 448), (336, 448)])
def test_planted_window_lands_in_its_cells(medium, wh):
    """With the full-attention block silenced, vision tokens mix only inside their 112 px window (Qwen2.5-VL reorders
    the patches window by window and back). A bright square inside one window must change exactly that window's
    4x4 merged tokens, at their row-major places in the grid the engine reads."""
    from rea2seg.models.attention import token_grid

    blk = medium.model.model.visual.blocks[7]
    silenced = [blk.attn.proj.weight, blk.attn.proj.bias, blk.mlp.down_proj.weight, blk.mlp.down_proj.bias]
    kept = [t.detach().clone() for t in silenced]
    w, h = wh
    img = np.zeros((h, w, 3), np.uint8)
    img[120:200, 20:90] = 255  # inside the window at window-row 1, window-col 0 (windows are 112 px)
    inputs = chat_inputs(medium, [[Image.fromarray(img), "x"]])
    try:
        with torch.no_grad():
            for t in silenced:
                t.zero_()
        with torch.inference_mode():
            feats = medium.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"],
                                                          return_dict=True).pooler_output[0]
    finally:
        with torch.no_grad():
            for t, v in zip(silenced, kept):
                t.copy_(v)
    dark = feats[-1]  # the bottom-right token: a dark window
    far = ((feats - dark).norm(dim=-1) > 1e-4 * dark.norm()).float()
    changed = token_grid(far, inputs["image_grid_thw"][0], 2) > 0
    expected = torch.zeros_like(changed, dtype=torch.bool)
    expected[4:8, 0:4] = True  # window (1, 0): merged-token rows 4-7, columns 0-3
    assert torch.equal(changed, expected), changed.int()


def test_recorded_rows_equal_eager_at_7b_dimensions(medium):
    """The rows-only recorder (SDPA output, rows recomputed with repeat_kv over 7 query heads per KV head, scale
    1/sqrt(128)) against eager attention's probabilities."""
    img = Image.fromarray(np.random.default_rng(3).integers(0, 255, (224, 308, 3), dtype=np.uint8))
    inputs = chat_inputs(medium, [[img, "the second cup from the left"]])
    ids = inputs["input_ids"][0]
    s, e = image_token_span(ids, medium.image_token_id)
    rows = torch.arange(e + 1, ids.shape[0])
    with torch.inference_mode(), record_attention(rows, slice(s, e)) as rec:
        medium.model(**inputs)
    medium.model.set_attn_implementation({"text_config": "eager"})
    try:
        with torch.inference_mode():
            eager = medium.model(**inputs, output_attentions=True).attentions
    finally:
        medium.model.set_attn_implementation({"text_config": RECORDING_ATTENTION})
    assert sorted(rec.out) == [0, 1]
    for layer, got in rec.out.items():
        want = eager[layer][:, :, rows][..., s:e]
        assert got.shape == want.shape == (1, 28, rows.numel(), e - s)
        assert (got - want).abs().max().item() <= 1e-5
