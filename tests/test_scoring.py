"""Scoring: batched == one-by-one, prefix cache == full prompts, robust parsing, fallbacks, selection."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rea2seg import scoring
from rea2seg.types import Candidates, SegmentationResult
from rea2seg.config import ScoringConfig
from rea2seg.models.vlm import load_vlm
from rea2seg.parsing import parse_comparative, parse_proposals, parse_score
from rea2seg.scoring import (candidate_views, score_candidates, yesno_scores, yesno_two_image_cached,
                             yesno_two_image_full)
from rea2seg.selection import select_mask


def _candidates(h=120, w=160, n=4, seed=0) -> Candidates:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), bool)
    for i in range(n):
        y, x = rng.integers(0, h - 30), rng.integers(0, w - 30)
        masks[i, y:y + int(rng.integers(2, 30)), x:x + int(rng.integers(2, 30))] = True
    return Candidates.from_masks(masks)


@pytest.fixture
def small_image():
    from conftest import make_image
    return make_image(120, 160, seed=4)


def test_batched_yesno_equals_one_by_one(pipeline, small_image):
    views = candidate_views(small_image, _candidates(), ScoringConfig())
    rel, py = yesno_scores(pipeline.vlm, views, "the cup", batch_size=8)
    for i, v in enumerate(views):
        r1, p1 = yesno_scores(pipeline.vlm, [v], "the cup", batch_size=1)
        assert abs(r1[0] - rel[i]) < 1e-5 and abs(p1[0] - py[i]) < 1e-5


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen3_5"])
def test_prefix_cache_equals_full_prompts(family_dirs, small_image, family):
    vlm = load_vlm(str(family_dirs[family]), device="cpu")
    views = candidate_views(small_image, _candidates(), ScoringConfig(), same_size=True)
    cached = yesno_two_image_cached(vlm, small_image, views, "the cup")
    full = yesno_two_image_full(vlm, small_image, views, "the cup")
    assert np.allclose(cached[0], full[0], atol=1e-5) and np.allclose(cached[1], full[1], atol=1e-5)
    # the model's stateful rope_deltas must not leak into the next call
    again = yesno_two_image_cached(vlm, small_image, views[:2], "the cup")
    assert np.allclose(again[0], full[0][:2], atol=1e-5)


@pytest.mark.parametrize("mode", ["yesno", "reasoning", "comparative"])
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_modes_run_on_two_families(family_dirs, small_image, mode, family):
    vlm = load_vlm(str(family_dirs[family]), device="cpu")
    cands = _candidates()
    out = score_candidates(vlm, small_image, "the cup", cands, ScoringConfig(mode=mode, max_new_tokens=8))
    assert len(out) == len(cands) and not np.isnan(out.scores).any()
    assert ((0 <= out.scores) & (out.scores <= 1)).all()
    assert all(s in (mode, "fallback:yesno") for s in out.scored_by)
    assert np.isnan(cands.scores).all(), "the input candidates are not modified"
    if mode != "yesno":
        assert all(isinstance(r, str) for r in out.reasoning)


def test_reasoning_replies_parsed_and_unparsable_fall_back(pipeline, small_image, monkeypatch):
    """The model text is scripted here (a stand-in for a real scorer's replies: random weights write noise)."""
    replies = ["It is the cup. Score: 9/10", "no idea", "Score: 2", "<think>maybe</think> 7 out of 10"]
    monkeypatch.setattr(scoring, "generate_replies", lambda *a, **k: list(replies))
    out = score_candidates(pipeline.vlm, small_image, "the cup", _candidates(),
                           ScoringConfig(mode="reasoning"))
    assert out.scored_by == ["reasoning", "fallback:yesno", "reasoning", "reasoning"]
    assert np.allclose(out.scores[[0, 2, 3]], [0.9, 0.2, 0.7])
    assert out.reasoning == replies
    assert not np.isnan(out.p_yes[1]) and out.scores[1] == pytest.approx(
        yesno_scores(pipeline.vlm, candidate_views(small_image, _candidates().subset([1]), ScoringConfig()),
                     "the cup")[0][0], abs=1e-5)


def test_comparative_reply_parsed(pipeline, small_image, monkeypatch):
    monkeypatch.setattr(scoring, "generate_replies",
                        lambda *a, **k: ['1 is a plate. {"scores": {"1": 3, "2": 10, "4": 6}}'])
    out = score_candidates(pipeline.vlm, small_image, "the cup", _candidates(), ScoringConfig(mode="comparative"))
    assert out.scored_by == ["comparative", "comparative", "fallback:yesno", "comparative"]
    assert np.allclose(out.scores[[0, 1, 3]], [0.3, 1.0, 0.6])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_parsers_survive_fuzzed_text(text):
    s = parse_score(text)
    assert s is None or 0.0 <= s <= 1.0
    for k, v in parse_comparative(text, 5).items():
        assert 0 <= k < 5 and 0.0 <= v <= 1.0
    for box, points in parse_proposals(text):
        assert box is None or (len(box) == 4 and box[2] > box[0] and box[3] > box[1])
        assert all(len(p) == 2 for p in points)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(-5, 15), st.floats(allow_nan=True), st.text(max_size=5)), max_size=6))
def test_comparative_parser_on_json_like_text(values):
    import json
    text = "reasoning... " + json.dumps({"scores": {str(i + 1): v for i, v in enumerate(values)}})
    got = parse_comparative(text, len(values))
    for i, v in enumerate(values):  # numbers, and numeric strings ("8"), in 0..10 count; anything else is skipped
        try:
            x = float(v)
        except ValueError:
            x = float("nan")
        ok = x == x and 0 <= x <= 10
        assert (i in got) == ok, (v, got)
        if ok:
            assert got[i] == pytest.approx(x / 10)


def test_selection_picks_planted_best():
    c = _candidates(n=4)
    c.scores[:] = [0.2, 0.9, 0.5, np.nan]
    r = select_mask(SegmentationResult("q", None, c), top_k=3)
    assert np.array_equal(r.mask, c.masks[1]) and r.score == pytest.approx(0.9)
    assert r.candidates.scores[:3].tolist() == pytest.approx([0.9, 0.5, 0.2])
    assert np.isnan(r.candidates.scores[3]), "unscored candidates rank last"
    merged = select_mask(SegmentationResult("q", None, c), top_k=2, merge=True)
    assert np.array_equal(merged.mask, c.masks[1] | c.masks[2]) and merged.merged


def test_selection_ties_broken_by_discovery_score():
    c = _candidates(n=3)
    c.scores[:] = 0.5
    c.attention_scores[:] = [0.1, 0.7, 0.3]
    assert select_mask(SegmentationResult("q", None, c), top_k=1).candidates.attention_scores[0] == pytest.approx(0.7)


def test_selection_with_no_candidates():
    r = select_mask(SegmentationResult("q", None, Candidates.empty(30, 40)), top_k=3)
    assert r.mask.shape == (30, 40) and not r.mask.any() and "no candidate" in r.warning
