"""Qwen3.5 as the discovery VLM (tiny random weights, the real classes): its decoder interleaves linear-attention
(Gated DeltaNet) layers, which have no attention map, with full-attention ones; only the latter are recorded, and
there the rows equal eager attention. Its chat template thinks by default; Rea2Seg's prompts turn that off. Its
grounding answers are on a 0..1000 scale."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rea2seg.errors import InputError
from rea2seg.models.attention import layer_band
from rea2seg.models.prompting import chat_inputs
from rea2seg.models.vlm import load_vlm


@pytest.fixture(scope="module")
def qwen35(tmp_path_factory):
    """A 4-layer tiny Qwen3.5: linear, full, linear, full."""
    from rea2seg.testing import build_tiny_vlm

    d = build_tiny_vlm(tmp_path_factory.mktemp("qwen35") / "tiny-qwen3.5", "qwen3_5", layers=4)
    return load_vlm(str(d), device="cpu")


def test_the_layer_band_keeps_full_attention_layers_or_refuses(qwen35):
    """(Rows equal to eager attention on the full-attention layers: tests/test_attention.py.)"""
    vlm = qwen35
    assert vlm.family == "qwen3_5" and vlm.attention_layers == [1, 3]
    assert layer_band(vlm.num_layers, (0.5, 0.85), vlm.attention_layers) == [3]
    assert layer_band(vlm.num_layers, (0.0, 1.0), vlm.attention_layers) == [1, 3]
    with pytest.raises(InputError, match=r"none of which has an attention map .*full-attention layers are 1, 3.*"
                                         r"widen layer_band"):
        layer_band(vlm.num_layers, (0.0, 0.25), vlm.attention_layers)
    # the real Qwen3.5 layout (full attention every fourth layer), 32 layers: the default band holds three
    real = [i for i in range(32) if i % 4 == 3]
    assert layer_band(32, (0.5, 0.85), real) == [19, 23, 27]


def test_discovery_and_a_second_question_run_on_qwen35(qwen35, tiny_paths, image):
    from rea2seg import Rea2Seg
    from rea2seg.models.sam import load_sam

    pipe = Rea2Seg(qwen35, load_sam(str(tiny_paths[1]), device="cpu"))
    a = pipe.discover(image, "the cup")
    b = pipe.discover(image, "the plate on the left")  # reuses the image's cached prefix (hybrid cache, deep-copied)
    assert len(a.candidates) >= 1 and a.grid is not None and a.heatmap.shape == image.shape[:2]
    assert not np.array_equal(a.grid, b.grid)
    from rea2seg.config import DiscoveryConfig
    with pytest.raises(InputError, match="widen layer_band"):
        pipe.discover(image, "the cup", config=DiscoveryConfig(layer_band=(0.0, 0.2)))


def test_prompts_end_without_a_thinking_block(qwen35, tiny_paths):
    img = Image.fromarray(np.zeros((64, 96, 3), np.uint8))
    text = qwen35.tokenizer.decode(chat_inputs(qwen35, [[img, "the cup"]])["input_ids"][0])
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # closed: the answer comes first
    raw = qwen35.processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "q"}]}],
                                               tokenize=False, add_generation_prompt=True)
    assert raw.endswith("<|im_start|>assistant\n<think>\n"), "the template thinks by default, as the real one"
    other = load_vlm(str(tiny_paths[0]), device="cpu")  # a template without the switch is left as it is
    assert other.tokenizer.decode(chat_inputs(other, [[img, "the cup"]])["input_ids"][0]).endswith(
        "<|im_start|>assistant\n")


@pytest.mark.parametrize("family", ["qwen3_5", "qwen3_vl", "qwen2_vl"])
def test_grounding_replies_on_the_0_1000_scale(family_dirs, family, monkeypatch):
    """Qwen2-VL, Qwen3-VL and Qwen3.5 give boxes and points relative to the image, 0..1000 (Qwen2.5-VL: pixels of its
    resized input, tests/test_discovery.py)."""
    from rea2seg.discovery import proposal_prompts

    vlm = load_vlm(str(family_dirs[family]), device="cpu")
    img = Image.new("RGB", (300, 200))
    reply = '[{"bbox_2d": [100, 250, 500, 1000], "point_2d": [300, 500]}]'
    monkeypatch.setattr(vlm.processor, "batch_decode", lambda *a, **k: [reply])
    batch, sources, _ = proposal_prompts(vlm, img, "the cup", max_new_tokens=2)
    assert sources == ["vlm:0"]
    assert np.allclose(batch.boxes[0], [30, 50, 150, 200], atol=1e-3)
    assert np.allclose(batch.points[0, 0], [90, 100], atol=1e-3)
