"""Candidate sources: the names and switches every door shares, concept phrases parsed from messy replies, and SAM 3
concept candidates joining the attention-peak candidates (tiny random-weight models; the VLM's replies are scripted
where a test needs real words, since random weights write noise)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rea2seg.config import CANDIDATE_SOURCES, DiscoveryConfig, check_sources, switch_sources
from rea2seg.discovery import CONCEPT_PROMPT, discover_candidates, source_of
from rea2seg.errors import InputError
from rea2seg.parsing import parse_concepts


# ---- names and switches ----------------------------------------------------------------------------------------------

def test_source_names_are_checked_and_normalised():
    assert check_sources("attention, Concepts,attention") == ("attention", "concepts")
    assert check_sources(["boxes"]) == ("boxes",)
    assert DiscoveryConfig(sources="attention,boxes").sources == ("attention", "boxes")
    assert DiscoveryConfig().sources == ("attention",)
    with pytest.raises(InputError, match="unknown candidate source.*'peaks'.*choose from attention, boxes, concepts"):
        check_sources("attention,peaks")
    with pytest.raises(InputError, match="at least one candidate source"):
        DiscoveryConfig(sources=())
    with pytest.raises(InputError, match="must be names"):
        check_sources([1])


def test_switches_turn_sources_on_and_off():
    assert switch_sources(("attention",), {"concepts": True, "boxes": None}) == ("attention", "concepts")
    assert switch_sources(("attention", "concepts"), {"attention": False}) == ("concepts",)
    assert switch_sources(("attention",), {}) == ("attention",)
    with pytest.raises(InputError, match="at least one"):
        switch_sources(("attention",), {"attention": False})


# ---- concept phrases -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reply, want", [
    ('["red mug", "the spoon"]', ["red mug", "spoon"]),
    ('```json\n["Red Mug", "a Teaspoon."]\n```', ["red mug", "teaspoon"]),
    ("<think>the user wants the cup, maybe the saucer</think>\n- The red mug\n- a spoon.", ["red mug", "spoon"]),
    ("<answer>['knife']</answer>", ["knife"]),
    ('{"objects": [{"label": "cup"}, {"name": "salt/pepper shaker"}]}', ["cup", "salt pepper shaker"]),
    ("Objects: mug, spoon and bread knife", ["mug", "spoon", "bread knife"]),
    ("1. knife\n2) fork\n3. spoon\n4. plate", ["knife", "fork", "spoon"]),
    ('"coffee cup"', ["coffee cup"]),
    ("The utensil you would use is the small silver teaspoon lying on the saucer next to the cup.",
     ["small silver teaspoon"]),
    ('["mug", "Mug", "the mug"]', ["mug"]),
    ("<think>I should look for [\"x\"] but I never finish", []),
    ("none", []),
    ("[]", []),
    ("", []),
    ("...", []),
])
def test_concepts_parsed_from_messy_replies(reply, want):
    assert parse_concepts(reply, max_phrases=3) == want


def test_concept_phrases_are_cut_to_length():
    long = "the big old rusty red metal watering can with a handle"
    assert parse_concepts(f'["{long}"]', max_words=4) == ["big old rusty red"]
    assert parse_concepts('["cup", "plate", "cat", "dog"]', max_phrases=2) == ["cup", "plate"]
    assert parse_concepts('["cup"]', max_phrases=0) == []


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300),
                 st.lists(st.one_of(st.text(max_size=30), st.integers(), st.none(), st.dictionaries(
                     st.sampled_from(["label", "name", "x"]), st.text(max_size=10))), max_size=6).map(repr),
                 st.builds(lambda a, b: f"<think>{a}</think>{b}", st.text(max_size=50), st.text(max_size=50))),
       st.integers(-2, 6), st.integers(-2, 8))
def test_concept_parser_never_raises(text, max_phrases, max_words):
    out = parse_concepts(text, max_phrases, max_words)
    assert isinstance(out, list) and len(out) <= max(0, max_phrases) and len(set(out)) == len(out)
    for phrase in out:
        words = phrase.split()
        assert phrase == phrase.lower().strip() and 1 <= len(words) <= max(1, max_words)
        assert words[0] not in ("the", "a", "an")
        assert "/" not in phrase and "\n" not in phrase


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["list"]])
def test_concept_parser_takes_anything(bad):
    assert parse_concepts(bad) == []


# ---- discovery with concept candidates -------------------------------------------------------------------------------

def _script_reply(monkeypatch, vlm, reply: str, prompts: list | None = None):
    """The VLM's generated text (random weights write noise) replaced by ``reply``; the prompts it was asked
    recorded."""
    from rea2seg import discovery

    real = discovery.chat_inputs

    def spy(v, conversations):
        if prompts is not None:
            prompts.extend(p for turn in conversations for p in turn if isinstance(p, str))
        return real(v, conversations)

    monkeypatch.setattr(discovery, "chat_inputs", spy)
    monkeypatch.setattr(vlm.processor, "batch_decode", lambda *a, **k: [reply])


def test_concept_candidates_join_the_attention_candidates(pipelines, image, monkeypatch):
    pipe = pipelines["sam3"]
    prompts, asked = [], []
    _script_reply(monkeypatch, pipe.vlm, '<think>cup</think>["red cup", "The Saucer"]', prompts)
    real = pipe.sam.segment_concepts
    monkeypatch.setattr(pipe.sam, "segment_concepts",
                        lambda emb, phrases, *a, **k: asked.append(list(phrases)) or real(emb, phrases, *a, **k))
    cfg = DiscoveryConfig(sources=("attention", "concepts"), max_candidates=32, min_area_fraction=0.0,
                          nms_iou=1.0, concept_instances=2, concept_threshold=0.0)
    d = discover_candidates(pipe.vlm, pipe.sam, image, "the cup", cfg)
    assert CONCEPT_PROMPT.format(question="the cup", n=cfg.max_concepts) in prompts
    assert asked == [["red cup", "saucer"]]  # one batched call with the parsed phrases
    kinds = {s.split(":")[0] for s in d.candidates.sources}
    assert {"peak", "concept"} <= kinds, d.candidates.sources
    concept = [s for s in d.candidates.sources if s.startswith("concept:")]
    # nothing is merged away here (NMS off, no minimum area): every phrase's two instances are candidates
    assert sorted(concept) == ["concept:red cup/i0", "concept:red cup/i1", "concept:saucer/i0", "concept:saucer/i1"]
    assert {"concepts", "concept_masks", "attention"} <= set(d.timings_ms)
    rows = d.candidates.summary()
    assert all(np.isnan(d.candidates.points[i]).all() for i, s in enumerate(d.candidates.sources)
               if s.startswith("concept:"))
    assert [r["number"] for r in rows] == list(range(1, len(rows) + 1))
    # a tight cap still leaves the scorer each source's best candidate (random SAM 3 scores rank them last)
    tight = discover_candidates(pipe.vlm, pipe.sam, image, "the cup", replace(cfg, max_candidates=2, nms_iou=0.8))
    kinds = {source_of(s) for s in tight.candidates.sources}
    assert len(tight.candidates) == 2 and kinds == {"attention", "concepts"}, tight.candidates.sources


def test_concepts_alone_skip_the_attention_pass(pipelines, image, monkeypatch):
    from rea2seg import discovery

    pipe = pipelines["sam3"]
    _script_reply(monkeypatch, pipe.vlm, '["red cup"]')
    monkeypatch.setattr(discovery, "attention_grid", lambda *a, **k: pytest.fail("attention is off"))
    d = pipe.discover(image, "the cup", sources=["concepts"])
    assert d.candidates.sources and all(s.startswith("concept:red cup/") for s in d.candidates.sources)
    assert d.grid is None and len(d.peaks) == 0 and not d.heatmap.any() and "attention" not in d.timings_ms


def test_an_unusable_concept_reply_gives_no_concept_candidates(pipelines, image, monkeypatch):
    pipe = pipelines["sam3"]
    _script_reply(monkeypatch, pipe.vlm, "I cannot tell.")  # parses to "i cannot tell": still a phrase
    d = pipe.discover(image, "the cup", sources=["attention", "concepts"])
    assert d.candidates.masks.shape[1:] == image.shape[:2]
    _script_reply(monkeypatch, pipe.vlm, "none")
    monkeypatch.setattr(pipe.sam, "segment_concepts", lambda *a, **k: pytest.fail("no phrase to prompt"))
    d = pipe.discover(image, "the cup", sources=["concepts"])
    assert len(d.candidates) == 0 and "concept_masks" not in d.timings_ms


def test_concepts_need_sam3(pipelines, pipeline, image):
    for pipe in (pipelines["sam2"], pipeline):
        with pytest.raises(InputError, match="'concepts' candidate source needs SAM 3.*--sam facebook/sam3"):
            pipe.segment(image, "the cup", sources="attention,concepts")


def test_sources_per_call_and_in_status(pipelines, image):
    pipe = pipelines["sam3"]
    st_ = pipe.status()
    assert st_["sources"] == ["attention", "concepts"]  # the tiny-random-sam3 preset's
    assert st_["segmenter"]["backend"] == "sam3" and st_["segmenter"]["concepts"] is True
    r = pipe.segment(image, "the cup", sources=["attention"], top_k=2)
    assert "concepts" not in r.timings_ms and all(not s.startswith("concept:") for s in r.candidates.sources)
    assert pipe.config.discovery.sources == ("attention", "concepts")  # the per-call choice did not stick


def test_every_source_has_a_description():
    assert set(CANDIDATE_SOURCES) == {"attention", "boxes", "concepts"}
    assert all(len(v) > 30 for v in CANDIDATE_SOURCES.values())


def test_the_cap_keeps_each_sources_best_candidate():
    from rea2seg.discovery import cap_keeping_each_source

    assert [source_of(s) for s in ("peak:0/m1", "box:2/m0", "vlm:1/m2", "concept:red mug/i0", "lisa:0")] == \
        ["attention", "attention", "boxes", "concepts", "lisa"]
    labels = ["peak:0/m0", "box:0/m0", "peak:1/m0", "concept:cup/i0", "vlm:0/m0", "concept:cup/i1"]
    order = np.array([0, 1, 2, 3, 4, 5])
    assert cap_keeping_each_source(order, labels, 6).tolist() == [0, 1, 2, 3, 4, 5]
    assert cap_keeping_each_source(order, labels, 3).tolist() == [0, 3, 4]  # attention's 2nd and 3rd make room
    assert cap_keeping_each_source(order, labels, 2).tolist() == [0, 3]  # no room left for a third source
    assert cap_keeping_each_source(np.array([2, 0, 1]), labels, 2).tolist() == [2, 0]  # one source: plain cap


def test_a_lisa_generator_with_sam2_peaks_and_no_sources(tiny_dir, tiny_segmenter_dirs, image):
    """A LISA-format generator's attention peaks go to any segmenter (here SAM 2.1); its candidates are its own, so a
    per-call choice of sources is refused with the reason."""
    from rea2seg import Rea2Seg
    from rea2seg.testing import tiny_preset_models

    lisa, _, scorer = tiny_preset_models("lisa", "", "qwen2_5_vl", tiny_dir)
    pipe = Rea2Seg.from_pretrained(str(lisa), str(tiny_segmenter_dirs["sam2"]), scorer=str(scorer), device="cpu")
    assert pipe.status()["segmenter"]["backend"] == "sam2"
    d = pipe.discover(image, "the cup")
    assert {s.split(":")[0].split("/")[0] for s in d.candidates.sources} <= {"generator", "peak", "box"}
    with pytest.raises(InputError, match="LISA-format generator.*drop the sources"):
        pipe.discover(image, "the cup", sources=["attention"])
