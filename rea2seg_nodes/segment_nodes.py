"""The stage nodes: discover -> score -> select, the top-k view and the one-node shortcut. Each converts ComfyUI
types, calls the engine once per image of the batch, and converts back."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from rea2seg.config import CANDIDATE_SOURCES, MAX_TOP_K, SCORING_MODES, switch_sources
from rea2seg.types import SegmentationResult, format_score, json_score

from . import comfy_bridge, tensors
from .model_nodes import CATEGORY, LoadedModels, engine_call

CANDIDATES = "REA2SEG_CANDIDATES"
QUESTION = ("STRING", {"multiline": True, "default": "",
                       "tooltip": "What to segment, in words; it may need reasoning (\"what keeps the rain off?\")."})
MODE = (list(SCORING_MODES), {"default": "yesno", "tooltip": (
    "yesno: P(yes) for each candidate, in batched forward passes (fastest); reasoning: the VLM explains, then "
    "scores 0-10; comparative: all candidates numbered in one prompt, the VLM ranks them")})
HIDDEN = {"hidden": {"node_id": "UNIQUE_ID"}}
SWITCH = ["from preset", "on", "off"]


def source_switches(skip: tuple[str, ...] = ()) -> dict:
    """Optional inputs, one per candidate source (``source_<name>``: from preset / on / off). Optional with a default,
    so workflows saved before a source existed still load."""
    return {f"source_{name}": (SWITCH, {"default": "from preset", "tooltip": (
        f"{what[0].upper() + what[1:]}. 'from preset': as the loaded models' preset says.")})
        for name, what in CANDIDATE_SOURCES.items() if name not in skip}


def chosen_sources(models: LoadedModels, switches: dict, **fixed: bool) -> tuple[str, ...] | None:
    """The preset's sources with the node's switches (``source_<name>`` inputs) and ``fixed`` ones applied; None
    when nothing is switched (the pipeline's own choice)."""
    wanted = {k[len("source_"):]: {"on": True, "off": False}[v] for k, v in switches.items()
              if k.startswith("source_") and v in ("on", "off")}
    if not wanted and not fixed:
        return None
    return switch_sources(models.pipe.config.discovery.sources, {**wanted, **fixed})


@dataclass
class CandidateBatch:
    """The ``REA2SEG_CANDIDATES`` value: the engine's answer per image of the batch, in batch order."""

    items: list[SegmentationResult]


def _score_or_zero(value: float) -> float:
    """The FLOAT socket's value: a score rounded as JSON shows it, or 0.0 when there is none (a socket cannot carry
    'unscored')."""
    return json_score(value) or 0.0


def describe(item: SegmentationResult, limit: int | None = None) -> str:
    """Candidates best first, one numbered list item each, which reads the same as plain text and as Markdown (the
    editor renders STRING previews as Markdown, where plain lines would run into one paragraph): rank, candidate
    number (as in the numbered preview), score, how it was scored, and the scorer's reasoning (on one line)."""
    c = item.candidates
    head = [f"Warning: {item.warning}", ""] if item.warning else []
    if not len(c):
        return "\n".join(head + ["No candidates found."])
    rows = c.summary()
    lines = []
    for rank, i in enumerate(c.ranking()[:limit], 1):
        r = rows[i]
        score = format_score(c.scores[i])
        how = f" ({r['scored_by']})" if r["scored_by"] else ""
        why = " ".join(r["reasoning"].split())
        lines.append(f"{rank}. candidate {r['number']}: score {score}{how}, area {r['area']} px"
                     + (f" - {why}" if why else ""))
    return "\n".join(head + lines)


def describe_batch(batch: CandidateBatch, limit: int | None = None) -> str:
    if len(batch.items) == 1:
        return describe(batch.items[0], limit)
    return "\n\n".join(f"Image {i + 1}:\n\n{describe(it, limit)}" for i, it in enumerate(batch.items))


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _done_text(items: list[SegmentationResult], verb: str, how: str = "") -> str:
    """The node's text after a run (replacing the last stage's label): what it produced."""
    n = sum(len(it.candidates) for it in items)
    where = f" in {_count(len(items), 'image')}" if len(items) > 1 else ""
    return f"{verb} {_count(n, 'candidate')}{where}{how}"


class DiscoverCandidates:
    DESCRIPTION = ("Stage 1: the VLM's attention to the question becomes a heat map; its peaks prompt the segmenter, "
                   "and the de-duplicated masks are the candidates (with SAM 3, the noun phrases the VLM names can "
                   "add concept candidates). Outputs the candidates, a numbered preview and the heat map.")
    CATEGORY = CATEGORY
    FUNCTION = "discover"
    RETURN_TYPES = (CANDIDATES, "IMAGE", "IMAGE")
    RETURN_NAMES = ("candidates", "candidates_preview", "heatmap")
    OUTPUT_TOOLTIPS = ("Candidate masks per image (unscored)", "The candidates numbered on the image",
                       "The VLM's attention heat map on the image")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "An image or a batch; each image is processed on its own."}),
            "question": QUESTION,
            "models": ("REA2SEG_MODELS",),
            "max_candidates": ("INT", {"default": 8, "min": 1, "max": 32, "step": 1,
                                       "tooltip": "At most this many candidate masks per image."}),
            "peak_threshold": ("FLOAT", {"default": 0.3, "min": 0.05, "max": 1.0, "step": 0.05, "tooltip": (
                "A heat-map peak becomes a SAM prompt if it reaches this fraction of the strongest peak.")}),
            "vlm_proposals": ("BOOLEAN", {"default": False, "tooltip": (
                "Also ask the VLM for boxes/points in words (one extra generation per image): the 'boxes' "
                "candidate source.")}),
        }, "optional": source_switches(skip=("boxes",)), **HIDDEN}

    def discover(self, image, question, models: LoadedModels, max_candidates, peak_threshold, vlm_proposals,
                 node_id=None, **switches):
        from rea2seg import render

        frames = tensors.image_list(image)
        progress = comfy_bridge.StageProgress(node_id, len(frames))
        sources = engine_call(chosen_sources, models, switches, boxes=bool(vlm_proposals))
        config = models.discovery_config(max_candidates=int(max_candidates), peak_threshold=float(peak_threshold),
                                         sources=sources)
        items = []
        with models.use() as pipe:
            for i, frame in enumerate(frames):
                items.append(engine_call(pipe.discover, frame, question, config=config, progress=progress.image(i),
                                         cancel=comfy_bridge.interrupted))
        previews = [render.candidate_sheet(it.image, it.candidates) for it in items]
        heatmaps = [render.heatmap_overlay(it.image, it.heatmap) for it in items]
        comfy_bridge.progress_text(node_id, _done_text(items, "found"))
        return CandidateBatch(items), tensors.image_tensor(previews), tensors.image_tensor(heatmaps)


class ScoreCandidates:
    DESCRIPTION = ("Stage 2: the VLM scores every candidate drawn on the image. Outputs the scored candidates and the "
                   "scores/reasoning as text, best first.")
    CATEGORY = CATEGORY
    FUNCTION = "score"
    RETURN_TYPES = (CANDIDATES, "STRING")
    RETURN_NAMES = ("scored_candidates", "reasoning")
    OUTPUT_TOOLTIPS = ("The same candidates with scores", "Scores and reasoning per candidate, best first")

    @classmethod
    def INPUT_TYPES(cls):
        question = (QUESTION[0], {**QUESTION[1], "tooltip": (
            "Leave empty to score against the question given to Discover Candidates.")})
        return {"required": {"candidates": (CANDIDATES,), "question": question, "models": ("REA2SEG_MODELS",),
                             "mode": MODE}, **HIDDEN}

    def score(self, candidates: CandidateBatch, question, models: LoadedModels, mode, node_id=None):
        progress = comfy_bridge.StageProgress(node_id, len(candidates.items))
        out = []
        with models.use() as pipe:
            for i, it in enumerate(candidates.items):
                q = question.strip() or it.question
                scored = it.candidates if not len(it.candidates) else engine_call(
                    pipe.score, it.image, q, it.candidates, mode=mode, progress=progress.image(i),
                    cancel=comfy_bridge.interrupted)
                out.append(replace(it, kind="score", question=q, candidates=scored, mode=mode))
        batch = CandidateBatch(out)
        comfy_bridge.progress_text(node_id, _done_text(out, "scored", f" ({mode})"))
        return batch, describe_batch(batch)


class SelectMask:
    DESCRIPTION = "Stage 3: the answer mask (the best candidate, or the union of the top k), an overlay and its score."
    CATEGORY = CATEGORY
    FUNCTION = "select"
    RETURN_TYPES = ("MASK", "IMAGE", "FLOAT")
    RETURN_NAMES = ("mask", "overlay", "score")
    OUTPUT_TOOLTIPS = ("The answer mask per image, the input's size", "The mask drawn on the image",
                       "The answer's score in 0..1 (the lowest over a batch; 0 when nothing could be scored)")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "candidates": (CANDIDATES, {"tooltip": "Scored candidates (unscored ones rank by attention x SAM score)."}),
            "top_k": ("INT", {"default": 3, "min": 1, "max": MAX_TOP_K, "step": 1,
                              "tooltip": "How many of the best candidates 'merge' joins."}),
            "merge": ("BOOLEAN", {"default": False, "tooltip": (
                "Off: the best candidate. On: the union of the best top_k (for answers made of several parts).")}),
        }}

    def select(self, candidates: CandidateBatch, top_k, merge):
        from rea2seg import render
        from rea2seg.selection import select_mask

        results = [engine_call(select_mask, it, int(top_k), bool(merge)) for it in candidates.items]
        masks = [r.mask for r in results]
        overlays = [render.overlay(it.image, r.mask) for it, r in zip(candidates.items, results)]
        score = min(_score_or_zero(r.score) for r in results)
        return tensors.mask_tensor(masks), tensors.image_tensor(overlays), score


class CandidateMasks:
    DESCRIPTION = ("The best k candidates side by side, to compare them: their masks and overlays as a batch "
                   "(image 1's candidates first), and their scores as text.")
    CATEGORY = CATEGORY
    FUNCTION = "top_k"
    RETURN_TYPES = ("MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("masks", "overlays", "ranking")
    OUTPUT_TOOLTIPS = ("k masks per image, best first", "Each of them drawn on its image", "Scores, best first")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "candidates": (CANDIDATES,),
            "top_k": ("INT", {"default": 4, "min": 1, "max": MAX_TOP_K, "step": 1,
                              "tooltip": "How many candidates per image (fewer if fewer were found)."}),
        }}

    def top_k(self, candidates: CandidateBatch, top_k):
        from rea2seg import render

        masks, overlays = [], []
        for it in candidates.items:
            c = it.candidates
            order = c.ranking()[: int(top_k)]
            if not len(order):  # nothing found: one empty mask, so the image still shows
                masks.append(np.zeros(it.image.shape[:2], bool))
                overlays.append(it.image)
            for rank, i in enumerate(order, 1):
                masks.append(c.masks[i])
                overlays.append(render.overlay(it.image, c.masks[i], render.candidate_color(c.numbers[i]),
                                               label=f"#{rank} (candidate {c.numbers[i]}) {format_score(c.scores[i])}"))
        return tensors.mask_tensor(masks), tensors.image_tensor(overlays), describe_batch(candidates, int(top_k))


class ReasoningSegment:
    DESCRIPTION = ("Image + question -> mask in one node (discover, score and select). Use the three stage nodes to "
                   "see or change what happens in between.")
    CATEGORY = CATEGORY
    FUNCTION = "segment"
    RETURN_TYPES = ("MASK", "IMAGE", "FLOAT", "STRING")
    RETURN_NAMES = ("mask", "overlay", "score", "reasoning")
    OUTPUT_TOOLTIPS = SelectMask.OUTPUT_TOOLTIPS + ("Scores and reasoning per candidate, best first",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": DiscoverCandidates.INPUT_TYPES()["required"]["image"],
            "question": QUESTION,
            "models": ("REA2SEG_MODELS",),
            "mode": MODE,
            "top_k": SelectMask.INPUT_TYPES()["required"]["top_k"],
            "merge": SelectMask.INPUT_TYPES()["required"]["merge"],
        }, "optional": source_switches(), **HIDDEN}

    def segment(self, image, question, models: LoadedModels, mode, top_k, merge, node_id=None, **switches):
        from rea2seg import render

        frames = tensors.image_list(image)
        progress = comfy_bridge.StageProgress(node_id, len(frames))
        sources = engine_call(chosen_sources, models, switches)
        results = []
        with models.use() as pipe:
            for i, frame in enumerate(frames):
                results.append(engine_call(pipe.segment, frame, question, top_k=int(top_k), mode=mode,
                                           merge=bool(merge), sources=sources, progress=progress.image(i),
                                           cancel=comfy_bridge.interrupted))
        overlays = [render.overlay(f, r.mask) for f, r in zip(frames, results)]
        batch = CandidateBatch(results)
        score = min(_score_or_zero(r.score) for r in results)
        scored = [r.score for r in results if r.score == r.score]  # NaN: unscored
        comfy_bridge.progress_text(node_id, f"score {format_score(min(scored) if scored else None)} "
                                            + _done_text(results, "from"))
        return (tensors.mask_tensor([r.mask for r in results]), tensors.image_tensor(overlays), score,
                describe_batch(batch))
