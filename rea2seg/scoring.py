"""Stage 2, comparative scoring: the VLM looks at each candidate drawn on the image and scores it.

Modes: ``yesno`` (P(Yes) vs P(No), all candidates in one batched forward, last-token logits only; optionally the
two-image layout with the original image's prefix cached once), ``reasoning`` (short reasoning + a 0-10 score per
candidate, batched generation) and ``comparative`` (one numbered set-of-marks prompt, scores for every number).
A reply with no usable score marks that candidate unscored and falls back to its yes/no probability.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import torch
from PIL import Image

from .config import ScoringConfig
from .errors import InputError, ModelError
from .models.prompting import chat_inputs, to_device
from .models.vlm import VLM
from .parsing import parse_comparative, parse_score
from .render import candidate_sheet, candidate_view
from .types import CancelCheck, Candidates, Progress, check_cancel

YESNO_PROMPT = ('Question: "{question}"\nThe region highlighted in red (filled, outlined and boxed) is a candidate '
                "answer. Does the highlighted region answer the question? Answer Yes or No.")
TWO_IMAGE_PREFIX = 'Question: "{question}"\nThe first image is the original. Candidate:'
TWO_IMAGE_SUFFIX = ("The second image highlights a candidate region in red. Does the highlighted region answer the "
                    "question? Answer Yes or No.")
REASONING_PROMPT = ('Question: "{question}"\nThe region highlighted in red is a candidate answer. In one or two '
                    "sentences, say whether it is what the question asks for, then end with \"Score: N/10\" where N "
                    "is 0 (wrong) to 10 (exactly right).")
COMPARATIVE_PROMPT = ('Question: "{question}"\nThe second image shows {n} candidate regions of the first image, each '
                      "in its own colour and numbered {numbered}. Compare them: which one answers the question best? "
                      "Reason briefly, then output JSON {{\"scores\": {{\"{first}\": s{first}, ...}}}} giving every "
                      "candidate a score from 0 (wrong) to 10 (exactly right).")


def comparative_prompt(question: str, numbers) -> str:
    """The comparative scorer's prompt for candidates drawn with ``numbers`` on the sheet."""
    numbers = [int(x) for x in numbers]
    if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        numbered = f"{numbers[0]} to {numbers[-1]}" if len(numbers) > 1 else str(numbers[0])
    else:
        numbered = ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"
    return COMPARATIVE_PROMPT.format(question=question, n=len(numbers), numbered=numbered, first=numbers[0])


# ---- what the scorer is shown, and what a trained scorer answers (one source for scoring and `train-scorer`) -----

def yesno_turn(view: np.ndarray, question: str) -> list:
    """The yes/no scorer's user turn: the candidate's view, then the prompt."""
    return [Image.fromarray(view), YESNO_PROMPT.format(question=question)]


def two_image_turn(image: np.ndarray, view: np.ndarray, question: str) -> list:
    """The two-image yes/no turn: the original, the question, the candidate's view, the prompt."""
    return [Image.fromarray(image), TWO_IMAGE_PREFIX.format(question=question), Image.fromarray(view),
            TWO_IMAGE_SUFFIX]


def reasoning_turn(view: np.ndarray, question: str) -> list:
    return [Image.fromarray(view), REASONING_PROMPT.format(question=question)]


def comparative_turn(image: np.ndarray, sheet: np.ndarray, question: str, numbers) -> list:
    """The original, the numbered sheet of all candidates, the prompt naming their numbers."""
    return [Image.fromarray(image), Image.fromarray(sheet), comparative_prompt(question, numbers)]


def yesno_answer(correct: bool) -> str:
    return "Yes" if correct else "No"


def reasoning_answer(score10: int, reasoning: str = "") -> str:
    """A reasoning reply ending in the score ``parse_score`` reads (the reasoning text is optional)."""
    return f"{reasoning.strip()} Score: {int(score10)}/10".strip()


def comparative_answer(numbers, scores10, reasoning: str = "") -> str:
    """A comparative reply ending in the JSON ``parse_comparative`` reads."""
    body = json.dumps({"scores": {str(int(n)): int(s) for n, s in zip(numbers, scores10)}})
    return f"{reasoning.strip()} {body}".strip()


def _yes_no_ids(vlm: VLM) -> tuple[list[int], list[int]]:
    """The single-token spellings of "Yes" and of "No" ("Yes", " Yes", "yes", "YES"...)."""
    yes, no = vlm.answer_token_ids("Yes"), vlm.answer_token_ids("No")
    if set(yes) & set(no):
        raise ModelError(f"the tokenizer of {vlm.source} spells Yes and No with a shared token; use the reasoning or "
                         f"comparative mode")
    return yes, no


def _last_logprobs(logits: torch.Tensor, yes: list[int], no: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """From the last position's logits (N, L, V): P(Yes) / (P(Yes) + P(No)) and P(Yes), each answer's probability
    summed over its spellings' ids."""
    lp = logits[:, -1].float().log_softmax(-1)
    lp_yes = lp[:, yes].logsumexp(-1)
    lp_no = lp[:, no].logsumexp(-1)
    rel = torch.sigmoid(lp_yes - lp_no)
    return rel.cpu().numpy(), lp_yes.exp().cpu().numpy()


@torch.inference_mode()
def yesno_scores(vlm: VLM, views: list[np.ndarray], question: str, batch_size: int = 8,
                 progress: Progress | None = None, cancel: CancelCheck | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """P(Yes) / (P(Yes) + P(No)) and P(Yes) for each view (the candidate highlighted on the image), ``batch_size``
    views per forward pass; each answer's probability is summed over its single-token spellings. Returns two (N,)
    float32 arrays."""
    yes, no = _yes_no_ids(vlm)
    rel, py = np.zeros(len(views), np.float32), np.zeros(len(views), np.float32)
    for s in range(0, len(views), batch_size):
        check_cancel(cancel)
        chunk = views[s:s + batch_size]
        inputs = chat_inputs(vlm, [yesno_turn(v, question) for v in chunk])
        with vlm.lock:
            out = vlm.model(**to_device(vlm, inputs), logits_to_keep=1, use_cache=False)
        rel[s:s + len(chunk)], py[s:s + len(chunk)] = _last_logprobs(out.logits, yes, no)
        if progress:
            progress("scoring", min(s + batch_size, len(views)), len(views))
    return rel, py


def _two_image_inputs(vlm: VLM, image: np.ndarray, views: list[np.ndarray], question: str):
    return chat_inputs(vlm, [two_image_turn(image, v, question) for v in views])


@torch.inference_mode()
def yesno_two_image_full(vlm: VLM, image: np.ndarray, views: list[np.ndarray], question: str
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Two-image yes/no (original + candidate) with full prompts: the reference the prefix cache must equal."""
    inputs = _two_image_inputs(vlm, image, views, question)
    with vlm.lock:
        out = vlm.model(**to_device(vlm, inputs), logits_to_keep=1, use_cache=False)
    return _last_logprobs(out.logits, *_yes_no_ids(vlm))


@torch.inference_mode()
def yesno_two_image_cached(vlm: VLM, image: np.ndarray, views: list[np.ndarray], question: str
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Two-image yes/no where the shared prefix (system + original image + question) runs once and its KV cache is
    reused for every candidate suffix. Explicit 3-D position ids over the whole sequence are passed to both parts
    (the model's stateful ``rope_deltas`` would otherwise give wrong positions). Views must share one size."""
    if len({v.shape for v in views}) != 1:
        raise InputError("prefix-cached scoring needs all candidate views at one size")
    inputs = _two_image_inputs(vlm, image, views, question)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    start_id = vlm.config.vision_start_token_id
    cut = int((ids[0] == start_id).nonzero()[1])  # the second image starts the per-candidate suffix
    n = ids.shape[0]
    grid = inputs["image_grid_thw"]
    per_image = int(grid[0].prod())
    pv = inputs["pixel_values"].view(n, 2, per_image, -1)
    with vlm.lock:
        pos, _ = vlm.model.model.get_rope_index(ids.to(vlm.device), mm_token_type_ids=inputs["mm_token_type_ids"]
                                                .to(vlm.device), image_grid_thw=grid.to(vlm.device),
                                                attention_mask=mask.to(vlm.device))
        pre = vlm.model(input_ids=ids[:1, :cut].to(vlm.device), attention_mask=mask[:1, :cut].to(vlm.device),
                        position_ids=pos[:, :1, :cut], pixel_values=pv[0, 0].to(vlm.device, vlm.dtype),
                        image_grid_thw=grid[:1].to(vlm.device), mm_token_type_ids=inputs["mm_token_type_ids"][:1, :cut]
                        .to(vlm.device), use_cache=True, logits_to_keep=1)
        cache = getattr(pre, "cache", None) or pre.past_key_values
        # one copy of the prefix per candidate; reorder_cache (index_select) works on every layer type, including
        # Qwen3.5's linear-attention state, which has no batch_repeat_interleave
        cache.reorder_cache(torch.zeros(n, dtype=torch.long, device=vlm.device))
        suf = vlm.model(input_ids=ids[:, cut:].to(vlm.device), attention_mask=mask.to(vlm.device),
                        position_ids=pos[:, :, cut:], pixel_values=pv[:, 1].reshape(n * per_image, -1)
                        .to(vlm.device, vlm.dtype), image_grid_thw=grid[1::2].to(vlm.device),
                        mm_token_type_ids=inputs["mm_token_type_ids"][:, cut:].to(vlm.device), cache=cache,
                        use_cache=True, logits_to_keep=1)
    return _last_logprobs(suf.logits, *_yes_no_ids(vlm))


@torch.inference_mode()
def generate_replies(vlm: VLM, conversations: list[list[Image.Image | str]], max_new_tokens: int,
                     batch_size: int = 8, cancel: CancelCheck | None = None,
                     progress: Progress | None = None) -> list[str]:
    """Greedy batched generation, ``batch_size`` conversations per ``generate`` call, at most ``max_new_tokens``
    each. Returns the decoded replies."""
    replies: list[str] = []
    for s in range(0, len(conversations), batch_size):
        check_cancel(cancel)
        inputs = chat_inputs(vlm, conversations[s:s + batch_size])
        with vlm.lock:
            out = vlm.model.generate(**to_device(vlm, inputs), max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=vlm.tokenizer.pad_token_id)
        replies += vlm.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        if progress:
            progress("scoring", min(s + batch_size, len(conversations)), len(conversations))
    return [r.strip() for r in replies]


def candidate_views(image: np.ndarray, candidates: Candidates, config: ScoringConfig, same_size: bool = False
                    ) -> list[np.ndarray]:
    """What the scorer sees for each candidate (see ``render.candidate_view``); ``same_size`` resizes zoomed crops to
    the image's size (the prefix-cached layout needs equal lengths)."""
    views = [candidate_view(image, m, config.zoom_below, config.alpha) for m in candidates.masks]
    if same_size:
        H, W = image.shape[:2]
        views = [v if v.shape[:2] == (H, W) else np.asarray(Image.fromarray(v).resize((W, H), Image.BICUBIC))
                 for v in views]
    return views


def score_candidates(vlm: VLM, image: np.ndarray, question: str, candidates: Candidates,
                     config: ScoringConfig = ScoringConfig(), progress: Progress | None = None,
                     cancel: CancelCheck | None = None) -> Candidates:
    """Score every candidate for ``question`` (checked: ``inputs.check_question``); returns a copy with ``scores`` in
    [0, 1], ``p_yes``, ``scored_by`` and ``reasoning``."""
    out = copy.deepcopy(candidates)
    n = len(out)
    if n == 0:
        return out
    mode = config.mode
    if progress:
        progress("scoring", 0, n)
    if mode == "yesno":
        if config.two_image:
            # The prefix cache needs Qwen-VL's rope index; other families (InternVL, LLaVA...) get the same two-image
            # prompts in full rather than silently losing the layout they asked for.
            cached = vlm.has_rope_index
            two_image = yesno_two_image_cached if cached else yesno_two_image_full
            views = candidate_views(image, out, config, same_size=cached)
            rel, py = np.zeros(n, np.float32), np.zeros(n, np.float32)
            for s in range(0, n, config.batch_size):
                check_cancel(cancel)
                rel[s:s + config.batch_size], py[s:s + config.batch_size] = two_image(
                    vlm, image, views[s:s + config.batch_size], question)
                if progress:
                    progress("scoring", min(s + config.batch_size, n), n)
        else:
            rel, py = yesno_scores(vlm, candidate_views(image, out, config), question, config.batch_size, progress,
                                   cancel)
        out.scores[:], out.p_yes[:] = rel, py
        out.scored_by = ["yesno"] * n
        return out

    if mode == "reasoning":
        views = candidate_views(image, out, config)
        replies = generate_replies(vlm, [reasoning_turn(v, question) for v in views], config.max_new_tokens,
                                   config.batch_size, cancel, progress)
        parsed = {i: parse_score(r) for i, r in enumerate(replies)}
        out.reasoning = replies
    else:  # comparative
        sheet = candidate_sheet(image, out, alpha=config.alpha)
        reply = generate_replies(vlm, [comparative_turn(image, sheet, question, out.numbers)],
                                 max(config.max_new_tokens, 24 * n), 1, cancel)[0]
        found = parse_comparative(reply, out.numbers)
        parsed = {i: found.get(i) for i in range(n)}
        out.reasoning = [reply] * n
    for i, v in parsed.items():
        if v is not None:
            out.scores[i] = v
            out.scored_by[i] = mode
    _fallback_yesno(vlm, image, question, out, config, [i for i, v in parsed.items() if v is None], cancel)
    if progress:
        progress("scoring", n, n)
    return out


def _fallback_yesno(vlm: VLM, image: np.ndarray, question: str, out: Candidates, config: ScoringConfig,
                    missing: list[int], cancel: CancelCheck | None) -> None:
    """Candidates whose reply had no usable score get their yes/no probability instead (marked
    ``fallback:yesno``)."""
    if not missing:
        return
    views = candidate_views(image, out.subset(np.array(missing)), config)
    rel, py = yesno_scores(vlm, views, question, config.batch_size, cancel=cancel)
    for j, i in enumerate(missing):
        out.scores[i], out.p_yes[i] = rel[j], py[j]
        out.scored_by[i] = "fallback:yesno"
