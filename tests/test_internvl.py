"""InternVL3 in the transformers -hf format as the stage-2 scorer (the paper's released scorer is a fine-tuned
InternVL3-8B): loading, chat inputs, the three scoring modes, batching, and a pipeline whose discovery VLM is Qwen and
whose scorer is InternVL. Tiny random-weight models: plumbing only, never quality.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_image
from rea2seg import Rea2Seg
from rea2seg.models.attention import RECORDING_ATTENTION
from rea2seg.types import Candidates
from rea2seg.config import PipelineConfig, ScoringConfig
from rea2seg.models.vlm import load_vlm
from rea2seg.models.prompting import chat_inputs
from rea2seg.scoring import (candidate_views, generate_replies, score_candidates, yesno_scores,
                             yesno_two_image_full)
from tiny_internvl import build_tiny_internvl

MODES = ("yesno", "reasoning", "comparative")


@pytest.fixture(scope="module")
def internvl_dir(tmp_path_factory):
    return build_tiny_internvl(tmp_path_factory.mktemp("internvl3-hf"))


@pytest.fixture(scope="module")
def scorer(internvl_dir):
    return load_vlm(str(internvl_dir), device="cpu")


@pytest.fixture
def small_image():
    return make_image(120, 160, seed=4)


def _candidates(h=120, w=160) -> Candidates:
    """Four candidates whose views tile differently (5, 3, 5, 5 tiles of 64 px), so a batch of them is padded: a
    small one (a zoomed, nearly square crop), a small one at the border (a tall crop) and two large ones (the image)."""
    masks = np.zeros((4, h, w), bool)
    masks[0, 10:18, 12:22] = True
    masks[1, 50:70, 0:4] = True  # at the border: a tall crop
    masks[2, 20:100, 10:120] = True
    masks[3, 40:110, 30:150] = True
    return Candidates.from_masks(masks)


def test_loads_like_the_hub_checkpoint(scorer, internvl_dir):
    from transformers import InternVLForConditionalGeneration, InternVLProcessor

    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json",
              "chat_template.jinja"):
        assert (internvl_dir / f).exists(), f
    named = json.loads((internvl_dir / "tokenizer_config.json").read_text())["model_specific_special_tokens"]
    assert named == {"start_image_token": "<img>", "end_image_token": "</img>",
                     "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}
    assert scorer.family == "internvl"
    assert isinstance(scorer.model, InternVLForConditionalGeneration)
    assert isinstance(scorer.processor, InternVLProcessor)
    tok = scorer.tokenizer
    assert scorer.processor.image_token == "<IMG_CONTEXT>"
    assert scorer.processor.image_token_id == scorer.image_token_id == tok.convert_tokens_to_ids("<IMG_CONTEXT>")
    assert scorer.processor.image_seq_length == 4 and tok.padding_side == "left"
    cfg = scorer.model.config
    assert cfg.text_config._attn_implementation == RECORDING_ATTENTION
    assert cfg.vision_config._attn_implementation == "sdpa"
    yes, no = scorer.token_id("Yes"), scorer.token_id("No")
    assert yes != no and tok.decode([yes]) == "Yes" and tok.decode([no]) == "No"


def test_chat_inputs_expand_each_image_and_pad_left(scorer, small_image):
    base, crop = Image.fromarray(small_image), Image.fromarray(small_image[:40, :150])
    inputs = chat_inputs(scorer, [[base, "original", crop, "candidates. Which one?"], [crop, "short"]])
    ids, mask, tok = inputs["input_ids"], inputs["attention_mask"], scorer.tokenizer
    start, end = tok.convert_tokens_to_ids("<img>"), tok.convert_tokens_to_ids("</img>")
    assert (ids[0] == start).sum() == 2 and (ids[0] == end).sum() == 2 and (ids[1] == start).sum() == 1
    # every <IMG_CONTEXT> is fed by one tile: image_seq_length tokens per 64 px tile (thumbnail included)
    n_ctx = int((ids == scorer.image_token_id).sum())
    assert n_ctx == scorer.processor.image_seq_length * inputs["pixel_values"].shape[0]
    assert mask[:, -1].all() and not mask[1, 0], "left padding: the shorter prompt is padded at the start"


@pytest.mark.parametrize("mode", MODES)
def test_scoring_modes(scorer, small_image, mode):
    cands = _candidates()
    out = score_candidates(scorer, small_image, "the cup", cands, ScoringConfig(mode=mode, max_new_tokens=12))
    assert len(out) == len(cands) and not np.isnan(out.scores).any()
    assert ((0 <= out.scores) & (out.scores <= 1)).all()
    assert all(s in (mode, "fallback:yesno") for s in out.scored_by)
    assert np.isnan(cands.scores).all(), "the input candidates are not modified"
    if mode == "yesno":
        assert out.scored_by == ["yesno"] * 4 and ((0 <= out.p_yes) & (out.p_yes <= 1)).all()
    else:
        # random weights write noise, so replies rarely parse; they must still be the model's own (non-empty) text
        assert all(isinstance(r, str) and r for r in out.reasoning)
        if mode == "comparative":
            assert len(set(out.reasoning)) == 1, "one reply for the whole set-of-marks prompt"


def test_batched_yesno_equals_one_by_one(scorer, small_image):
    views = candidate_views(small_image, _candidates(), ScoringConfig())
    lengths = {chat_inputs(scorer, [[Image.fromarray(v), "q"]])["input_ids"].shape[1] for v in views}
    assert len(lengths) > 1, "the views tile differently, so the batch is padded"
    rel, py = yesno_scores(scorer, views, "the cup", batch_size=8)
    for i, v in enumerate(views):
        r1, p1 = yesno_scores(scorer, [v], "the cup", batch_size=1)
        assert abs(r1[0] - rel[i]) <= 1e-5 and abs(p1[0] - py[i]) <= 1e-5


def test_two_image_yesno_without_prefix_cache(scorer, small_image):
    """InternVL has no Qwen rope index to cache a prefix with: two_image runs the full two-image prompts, batched."""
    cands = _candidates()
    cfg = ScoringConfig(two_image=True, batch_size=3)  # a padded batch of 3, then 1
    two = score_candidates(scorer, small_image, "the cup", cands, cfg)
    for i, v in enumerate(candidate_views(small_image, cands, cfg)):
        r1, p1 = yesno_two_image_full(scorer, small_image, [v], "the cup")
        assert abs(r1[0] - two.scores[i]) <= 1e-5 and abs(p1[0] - two.p_yes[i]) <= 1e-5
    one = score_candidates(scorer, small_image, "the cup", cands, ScoringConfig())
    assert not np.allclose(two.scores, one.scores, atol=1e-4), "the two-image layout, not the one-image one, ran"


def test_batched_generation_equals_one_by_one(scorer, small_image):
    img = Image.fromarray(small_image)
    convs = [[img, "Score: N/10"], [Image.fromarray(small_image[:30, :140]), "Question: which?"],
             [img, Image.fromarray(small_image[60:]), "Compare them."]]
    batched = generate_replies(scorer, convs, 12, batch_size=3)
    single = [generate_replies(scorer, [c], 12, batch_size=1)[0] for c in convs]
    assert batched == single
    assert all(batched) and len(set(batched)) == 3, "replies differ per prompt (the test would be empty otherwise)"


def test_pipeline_qwen_discovery_internvl_scorer(tiny_paths, internvl_dir, scorer, image):
    vlm_dir, sam_path = tiny_paths
    config = PipelineConfig(scoring=ScoringConfig(max_new_tokens=16))  # random weights never stop: keep replies short
    pipe = Rea2Seg.from_pretrained(str(vlm_dir), str(sam_path), scorer=str(internvl_dir), device="cpu", config=config)
    # one copy of the weights: the pipeline's scorer is a view (its own pixel budget) of the same model
    assert pipe.scorer.model is scorer.model and pipe.scorer.lock is scorer.lock
    assert pipe.vlm.family == "qwen2_5_vl" and not pipe.status()["scorer_shared"]
    q = "the red circle"
    for mode in MODES:
        r = pipe.segment(image, q, top_k=2, mode=mode)
        assert r.mask.shape == image.shape[:2] and r.mask.any() and r.mode == mode
        assert len(r.candidates) >= 1 and not np.isnan(r.candidates.scores).any()
        assert all(s in (mode, "fallback:yesno") for s in r.candidates.scored_by)
    # the scores are InternVL's: the same candidates scored by the InternVL scorer directly give the same numbers
    d = pipe.discover(image, q)
    direct = score_candidates(scorer, image, q, d.candidates, ScoringConfig(mode="yesno"))
    via_pipe = pipe.score(image, q, d.candidates, mode="yesno")
    qwen = score_candidates(pipe.vlm, image, q, d.candidates, ScoringConfig(mode="yesno"))
    assert np.allclose(via_pipe.scores, direct.scores, atol=1e-6)
    assert not np.allclose(via_pipe.scores, qwen.scores, atol=1e-4)


def test_cli_segment_with_internvl_scorer(tiny_paths, internvl_dir, tmp_path):
    """What docs/INTERNVL.md tells users to run, with --vlm/--sam standing in for the preset's 7B models."""
    vlm_dir, sam_path = tiny_paths
    example = Path(__file__).resolve().parents[1] / "assets" / "coffee.jpg"
    r = subprocess.run([sys.executable, "-m", "rea2seg", "segment", str(example), "the cup", "--vlm",
                        str(vlm_dir), "--sam", str(sam_path), "--scorer", str(internvl_dir), "--mode", "comparative",
                        "--device", "cpu", "-o", str(tmp_path / "m.png"), "--overlay", str(tmp_path / "o.png"),
                        "--json"], capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["mode"] == "comparative" and out["candidates"]
    assert all(c["scored_by"] in ("comparative", "fallback:yesno") for c in out["candidates"])
    replies = {c["reasoning"] for c in out["candidates"]}
    assert len(replies) == 1 and replies.pop(), "the InternVL scorer's one comparative reply"
    assert (tmp_path / "m.png").exists()
