"""The real Qwen2.5 tokenizer with Qwen2.5-VL's published chat template, end to end through a tiny Qwen2.5-VL whose
vocabulary is the real one (152,064 rows): answer token ids, the question-token limit, the chat inputs the model
gets, reply parsing, and a scorer planted to say "Yes" to one candidate, which must rank it first.

The planted model is built by hand on top of the random one: its vision tower turns every image token that is red
over blue (the highlight drawn on the blue target) into a positive feature, the first decoder layer averages that
feature into the last prompt position, and the output head turns it into the logit of one answer token. Nothing else
reaches the output: with the Yes/No ids swapped or the spelling variants ignored, the ranking breaks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rea2seg import errors
from rea2seg.config import MAX_QUESTION_TOKENS, ScoringConfig
from rea2seg.models.prompting import chat_inputs
from rea2seg.models.vlm import load_vlm
from rea2seg.scoring import score_candidates
from rea2seg.selection import select_mask
from rea2seg.testing import published
from rea2seg.types import Candidates, SegmentationResult
from real_qwen import build_real_vocab_qwen25_vl

YES = {"Yes": 9454, " Yes": 7414, "yes": 9693, " yes": 9834, "YES": 14004, " YES": 14080}
NO = {"No": 2753, " No": 2308, "no": 2152, " no": 902, "NO": 8996, " NO": 5664}
IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, PAD = 151644, 151645, 151652, 151653, 151655, 151643
ASSISTANT, NEWLINE = 77091, 198


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    work = tmp_path_factory.mktemp("real-vocab")
    return build_real_vocab_qwen25_vl(work / "model", work)


@pytest.fixture(scope="module")
def real_vlm(real_dir):
    return load_vlm(str(real_dir), device="cpu", max_pixels=448 * 448)


def test_answer_ids_are_the_real_ones(real_vlm):
    tok = real_vlm.tokenizer
    assert len(tok) == published.QWEN2_5_TOKENIZER_SIZE
    assert real_vlm.model.config.get_text_config().vocab_size == 152064
    for word, ids in (("Yes", YES), ("No", NO)):
        for text, i in ids.items():
            assert tok.encode(text, add_special_tokens=False) == [i], text
        assert real_vlm.answer_token_ids(word) == list(ids.values())
    assert real_vlm.token_id("Yes") == 9454 and real_vlm.token_id("No") == 2753
    assert tok.decode([9454]) == "Yes" and tok.decode([7414]) == " Yes"


def test_question_token_limit_counts_real_tokens(real_dir, tiny_paths, image):
    """The limit is in the VLM's own tokens: " a" is one Qwen2.5 token, so 1 + 511 of them pass and one more fails."""
    from rea2seg import Rea2Seg
    from rea2seg.inputs import check_question_tokens

    tok = load_vlm(str(real_dir), device="cpu", max_pixels=448 * 448).tokenizer
    ok = "a" + " a" * (MAX_QUESTION_TOKENS - 1)
    assert len(tok.encode(ok, add_special_tokens=False)) == MAX_QUESTION_TOKENS
    assert check_question_tokens(ok, tok) == ok
    with pytest.raises(errors.InputError, match=f"{MAX_QUESTION_TOKENS + 1} tokens"):
        check_question_tokens(ok + " a", tok)
    pipe = Rea2Seg.from_pretrained(str(real_dir), str(tiny_paths[1]), device="cpu")
    with pytest.raises(errors.InputError, match="tokens long"):
        pipe.discover(image, ok + " a")


def test_chat_inputs_follow_the_published_template(real_vlm):
    img = Image.new("RGB", (300, 200), (10, 20, 30))
    inputs = chat_inputs(real_vlm, [[img, "Where is the cup?"]])
    ids = inputs["input_ids"][0].tolist()
    _, gh, gw = (int(v) for v in inputs["image_grid_thw"][0])
    n = gh * gw // 4
    tok = real_vlm.tokenizer
    text = tok.decode(ids)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
                    + "<|image_pad|>" * n + "<|vision_end|>Where is the cup?<|im_end|>\n<|im_start|>assistant\n")
    s = ids.index(VISION_START)
    assert ids[s + 1:s + 1 + n] == [IMAGE_PAD] * n and ids[s + 1 + n] == VISION_END
    assert ids[:1] == [IM_START] and ids[-3:] == [IM_START, ASSISTANT, NEWLINE]
    # two conversations of different lengths: left-padded with <|endoftext|>, both end at the generation prompt
    batch = chat_inputs(real_vlm, [[img, "a"], [img, Image.new("RGB", (200, 300)), "the cup on the left"]])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert (ids[0, ~mask[0].bool()] == PAD).all() and not mask[0, 0] and mask[:, -1].all()
    assert (ids == VISION_START).sum(1).tolist() == [1, 2]
    assert ids[:, -3:].tolist() == [[IM_START, ASSISTANT, NEWLINE]] * 2


def _reply_as_generation(monkeypatch, vlm, replies: list[str]):
    """``generate`` returns the prompt followed by the real token ids of ``replies`` (then <|im_end|> and padding):
    what decoding and parsing meet with the real tokenizer."""
    tok = vlm.tokenizer
    queue = list(replies)

    def generate(input_ids=None, **kwargs):
        outs = [tok.encode(queue.pop(0), add_special_tokens=False) + [IM_END] for _ in range(input_ids.shape[0])]
        width = max(len(o) for o in outs)
        new = torch.tensor([o + [PAD] * (width - len(o)) for o in outs])
        return torch.cat([input_ids, new], 1)

    monkeypatch.setattr(vlm.model, "generate", generate)


def test_proposals_parsed_from_real_tokens(real_vlm, monkeypatch):
    """A VisionReasoner-style reply in real tokens, wrapped in <think>/<answer>, becomes SAM prompts in image pixels
    (Qwen2.5-VL answers in the pixels of its resized input)."""
    from rea2seg.discovery import proposal_prompts

    img = Image.new("RGB", (600, 400))
    _, gh, gw = (int(v) for v in chat_inputs(real_vlm, [[img, "x"]])["image_grid_thw"][0])
    rw, rh = gw * 14, gh * 14
    reply = ('<think>The mug is left of the laptop.</think>\n<answer>[{"bbox_2d": [0, 0, %d, %d], "point_2d": '
             '[%d, %d]}]</answer>' % (rw // 2, rh // 2, rw // 4, rh // 4))
    _reply_as_generation(monkeypatch, real_vlm, [reply])
    batch, sources, text = proposal_prompts(real_vlm, img, "the mug", max_new_tokens=64)
    assert text == reply and sources == ["vlm:0"]
    assert np.allclose(batch.boxes[0], [0, 0, 300, 200], atol=1.5)
    assert np.allclose(batch.points[0, 0], [150, 100], atol=1.5)


def test_reasoning_replies_in_think_tags(real_vlm, monkeypatch, image):
    """Replies decoded from real tokens: a score inside <think> is not the answer; a reply cut off inside <think>
    has no answer (that candidate falls back to its yes/no probability)."""
    masks = np.zeros((3, *image.shape[:2]), bool)
    masks[0, 20:120, 20:120] = masks[1, 100:200, 150:300] = masks[2, 50:150, 200:300] = True
    replies = ["<think>At first glance Score: 2/10, but the handle matches.</think>It is the mug. Score: 9/10",
               "<think>Not sure. Maybe Score: 8/10 if", "Score: 3/10"]
    _reply_as_generation(monkeypatch, real_vlm, replies)
    out = score_candidates(real_vlm, image, "the mug", Candidates.from_masks(masks),
                           ScoringConfig(mode="reasoning", max_new_tokens=64, batch_size=1))
    assert out.reasoning == replies
    assert out.scored_by == ["reasoning", "fallback:yesno", "reasoning"]
    assert out.scores[0] == pytest.approx(0.9) and out.scores[2] == pytest.approx(0.3)


# ---- a scorer planted to say Yes to one candidate -------------------------------------------------------------

@torch.no_grad()
def plant_yes_detector(model, yes_id: int, no_id: int) -> None:
    """Make the last-token logit of ``yes_id`` (and minus that of ``no_id``) rise with the number of image tokens
    that are red over blue. Vision tower: channels 0-2 = the patch's mean normalised R, G, B, a large constant
    channel (so the merger's RMSNorm is nearly linear), and per merged token f = GELU(2R + B - 3G - 330) in pixel
    units: positive only for the highlight drawn over blue (115, 0, 140), negative for red over grey or white, pure
    red contours, blue, grey, green. Decoder: layer 0 attends uniformly (q = 0) and copies the mean of channel 0
    into channel 1 of the last position, whose embedding ("\\n") is a large constant in channel 2; every other
    layer adds nothing; the head reads channel 1."""
    mean = torch.tensor(published.QWEN2_5_VL_7B_PREPROCESSOR["image_mean"])
    std = torch.tensor(published.QWEN2_5_VL_7B_PREPROCESSOR["image_std"])
    vis = model.model.visual
    c = vis.config.hidden_size
    for p in vis.parameters():
        p.zero_()
    w = vis.patch_embed.proj.weight.view(c, 3, -1)
    w[[0, 1, 2], [0, 1, 2]] = 1.0 / w.shape[-1]
    const = 1000.0
    vis.blocks[0].mlp.down_proj.bias[3] = const
    for blk in vis.blocks:
        blk.norm1.weight.fill_(1)
        blk.norm2.weight.fill_(1)
    vis.merger.ln_q.weight.fill_(1)
    scale = c ** 0.5 / const  # what ln_q multiplies a channel by
    coef, threshold = torch.tensor([2.0, -3.0, 1.0]), 330.0
    w1 = vis.merger.mlp[0].weight
    for k in range(4):  # the 2x2 patches of a merged token, averaged
        w1[0, k * c:k * c + 3] = 255 * coef * std / scale / 4
        w1[0, k * c + 3] = (255 * float((coef * mean).sum()) - threshold) / c ** 0.5 / 4
    vis.merger.mlp[2].weight[0, 0] = 1.0
    vis.merger.mlp[2].bias[2] = 50.0
    lm = model.model.language_model
    lm.embed_tokens.weight[:, 0] = 0
    lm.embed_tokens.weight[NEWLINE] = 0
    lm.embed_tokens.weight[NEWLINE, 2] = 100.0
    for layer in lm.layers:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    attn = lm.layers[0].self_attn
    attn.q_proj.weight.zero_()
    attn.q_proj.bias.zero_()
    attn.v_proj.weight.zero_()
    attn.v_proj.bias.zero_()
    attn.v_proj.weight[0, 0] = 1.0
    attn.o_proj.weight[1, 0] = 100.0
    head = model.lm_head.weight
    head.zero_()
    head[yes_id, 1] = 20.0
    head[no_id, 1] = -20.0


def _scene():
    """A blue square (the planted answer), a green disk and a grey bar on light grey, and four candidates."""
    h = w = 336
    img = np.full((h, w, 3), 200, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    disk = (yy - 240) ** 2 + (xx - 240) ** 2 < 50 ** 2
    img[40:140, 40:140] = (0, 0, 255)
    img[disk] = (0, 200, 0)
    img[200:300, 30:150] = (128, 128, 128)
    masks = np.zeros((4, h, w), bool)
    masks[0] = disk
    masks[1, 40:140, 40:140] = True
    masks[2, 200:300, 30:150] = True
    masks[3, 150:200, 180:330] = True
    return img, Candidates.from_masks(masks), 1


@pytest.fixture(scope="module")
def planted(real_dir, tmp_path_factory):
    """Two planted copies saved and loaded like checkpoints: one biased on "Yes"/"No", one on " Yes"/" No"."""
    from transformers import AutoModelForImageTextToText

    out = {}
    for name, (yes, no) in {"Yes": (YES["Yes"], NO["No"]), " Yes": (YES[" Yes"], NO[" No"])}.items():
        d = tmp_path_factory.mktemp("planted")
        model = AutoModelForImageTextToText.from_pretrained(real_dir)
        plant_yes_detector(model, yes, no)
        model.save_pretrained(d)
        for f in real_dir.iterdir():
            if not f.name.startswith(("model", "config")):
                (d / f.name).write_bytes(f.read_bytes())
        out[name] = load_vlm(str(d), device="cpu", max_pixels=448 * 448)
    return out


@pytest.mark.parametrize("spelling", ["Yes", " Yes"])
@pytest.mark.parametrize("two_image", [False, True])
def test_planted_scorer_ranks_its_candidate_first(planted, spelling, two_image):
    """The scorer says Yes only to the blue square's highlight: scoring + selection must put it first. With the
    Yes/No ids swapped it comes last; a scorer that reads only "Yes" misses a model that answers " Yes"."""
    image, cands, target = _scene()
    scored = score_candidates(planted[spelling], image, "the blue square", cands, ScoringConfig(two_image=two_image))
    assert scored.scores[target] > 0.9, scored.scores
    others = np.delete(scored.scores, target)
    assert np.allclose(others, 0.5, atol=1e-3), "no highlight over blue: no evidence either way"
    ranked = select_mask(SegmentationResult("the blue square", image, scored), top_k=1)
    assert np.array_equal(ranked.mask, cands.masks[target])
    assert int(ranked.candidates.numbers[0]) == int(cands.numbers[target])
