"""Configuration: frozen dataclasses with documented defaults. Presets (see ``presets.py``) are named instances."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Mapping, get_args

from .errors import InputError

#: How stage 2 scores candidates (every door offers exactly these).
ScoringMode = Literal["yesno", "reasoning", "comparative"]
SCORING_MODES: tuple[str, ...] = get_args(ScoringMode)

# ---- limits: every check of an input uses these (rea2seg/inputs.py), every door publishes them --------------------

#: Images above this many pixels are refused before decoding (decompression-bomb guard). 64 MP covers any camera.
MAX_IMAGE_PIXELS = 64_000_000
#: Each image side must be at least this many pixels.
MIN_IMAGE_SIDE = 2
#: Qwen-VL's processors refuse images whose long side is more than 200x the short side.
MAX_ASPECT_RATIO = 200
#: Longer questions are refused before tokenising ...
MAX_QUESTION_CHARS = 2000
#: ... and so are questions over this many tokens of the VLM's tokenizer.
MAX_QUESTION_TOKENS = 512
#: Ranked candidates a caller may ask to see.
MAX_TOP_K = 64


# ---- candidate sources ------------------------------------------------------------------------------------------------

#: Where discovery's candidates come from (``DiscoveryConfig.sources``): name -> what it adds. Each door offers these
#: names; a new source registers here and in ``discovery.discover_candidates``.
CANDIDATE_SOURCES: dict[str, str] = {
    "attention": "peaks of the VLM's text->image attention as segmenter point prompts (and point+box prompts); "
                 "candidate sources peak:<i>, box:<i>",
    "boxes": "the VLM's own boxes/points in JSON (Seg-Zero / VisionReasoner format) as segmenter prompts; one extra "
             "generation; candidate sources vlm:<i>",
    "concepts": "short noun phrases the VLM names, as SAM 3 text (concept) prompts returning instance masks; one short "
                "generation; needs a SAM 3 segmenter; candidate sources concept:<phrase>",
}

#: The source names as a type (the agent doors publish them as an enum).
CandidateSource = Literal[tuple(CANDIDATE_SOURCES)]  # type: ignore[valid-type]


def check_sources(sources: str | Iterable[str]) -> tuple[str, ...]:
    """Candidate source names, from a comma-separated string or a sequence, as a tuple of distinct known names in the
    order given; ``InputError`` naming the valid ones otherwise."""
    items = sources.split(",") if isinstance(sources, str) else list(sources)
    if not all(isinstance(s, str) for s in items):
        raise InputError(f"candidate sources must be names, got {sources!r}")
    names = [s.strip().lower() for s in items if s.strip()]
    unknown = [s for s in names if s not in CANDIDATE_SOURCES]
    if unknown:
        raise InputError(f"unknown candidate source(s) {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(CANDIDATE_SOURCES)}")
    if not names:
        raise InputError(f"at least one candidate source is needed; choose from {', '.join(CANDIDATE_SOURCES)}")
    return tuple(dict.fromkeys(names))


def switch_sources(current: Iterable[str], switches: Mapping[str, bool | None]) -> tuple[str, ...]:
    """``current`` with each source in ``switches`` turned on (True) or off (False); None leaves it as it is."""
    out = [s for s in current if switches.get(s) is not False]
    out += [s for s, on in switches.items() if on and s not in out]
    return check_sources(out)


@dataclass(frozen=True)
class DiscoveryConfig:
    """Stage 1: VLM attention -> peaks -> SAM prompts -> de-duplicated candidates.

    layer_band: fractions (start, end) of the decoder depth whose attention is recorded; mid-to-late by default
        (ViCrop uses layer 22/28 for Qwen2.5-VL-7B).
    relative_to_generic: divide the map by the same map for a generic prompt (ViCrop "rel-att"), which cancels
        query-independent attention sinks.
    sink_quantile: image tokens above this quantile of the raw map are treated as outlier sinks and clipped.
    smooth_sigma: Gaussian smoothing of the token-grid map, in grid cells.
    peak_threshold: a local maximum is kept if it reaches this fraction of the global maximum.
    peak_min_distance: minimum distance between peaks, in grid cells.
    max_peaks: at most this many point prompts from the map.
    negative_points: add the other peaks as negative points to each prompt.
    box_prompts: also prompt SAM with a box around each peak's region (map >= box_level * peak value).
    sources: where candidates come from, any of ``CANDIDATE_SOURCES`` ("attention", "boxes", "concepts"); a
        comma-separated string is accepted too.
    max_new_tokens_proposals: generation budget for the "boxes" reply.
    max_concepts: at most this many noun phrases from the "concepts" reply, each one SAM 3 text prompt.
    max_new_tokens_concepts: generation budget for the "concepts" reply.
    concept_threshold: SAM 3 instances scoring below this (sigmoid(logit) x presence, as SAM 3's post-processing)
        are dropped, except each phrase's best one.
    concept_instances: at most this many instances per phrase.
    multimask: ask SAM for its three granularities per prompt.
    min_sam_iou / min_stability: SAM masks below these are dropped before post-processing.
    nms_iou: candidates overlapping a better one above this mask IoU are removed.
    min_area_fraction: masks smaller than this fraction of the image are dropped.
    max_candidates: cap on the number of candidates returned.
    sam_chunk: prompts per batched SAM decoder call on an accelerator (memory bound); a CPU decodes one prompt per
        call, which is faster there (see bench/README.md).
    vlm_max_pixels: pixel budget for the VLM's view of the image (None = the checkpoint's own setting).
    """

    layer_band: tuple[float, float] = (0.5, 0.85)
    relative_to_generic: bool = True
    generic_prompt: str = "Write a general description of the image."
    sink_quantile: float = 0.99
    smooth_sigma: float = 1.0
    peak_threshold: float = 0.3
    peak_min_distance: int = 2
    max_peaks: int = 6
    negative_points: bool = False
    box_prompts: bool = True
    box_level: float = 0.5
    sources: tuple[str, ...] = ("attention",)
    max_new_tokens_proposals: int = 128
    max_concepts: int = 3
    max_new_tokens_concepts: int = 48
    concept_threshold: float = 0.3
    concept_instances: int = 4
    multimask: bool = True
    min_sam_iou: float = 0.5
    min_stability: float = 0.7
    stability_offset: float = 1.0
    nms_iou: float = 0.8
    min_area_fraction: float = 0.001
    max_candidates: int = 8
    sam_chunk: int = 32
    vlm_max_pixels: int | None = 1024 * 28 * 28

    def __post_init__(self) -> None:
        lo, hi = self.layer_band
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"layer_band must satisfy 0 <= start < end <= 1, got {self.layer_band}")
        if self.max_candidates < 1 or self.max_peaks < 1:
            raise ValueError("max_candidates and max_peaks must be >= 1")
        if self.max_concepts < 1 or self.concept_instances < 1:
            raise ValueError("max_concepts and concept_instances must be >= 1")
        object.__setattr__(self, "sources", check_sources(self.sources))


@dataclass(frozen=True)
class ScoringConfig:
    """Stage 2: the VLM scores each candidate drawn on the image.

    mode: "yesno" (P(Yes) vs P(No), one batched forward), "reasoning" (short reasoning + a 0-10 score per candidate,
        batched generation) or "comparative" (all candidates numbered in one prompt, scores for each number).
    two_image: yes/no with the original image and the candidate render as two images; on Qwen-VL models the
        shared prefix (system + original image + question) is computed once and its KV cache reused per candidate.
    batch_size: candidates per forward / generate call (memory bound).
    max_new_tokens: generation budget per reply in the reasoning and comparative modes.
    zoom_below: candidates smaller than this fraction of the image are also shown as a zoomed crop.
    alpha: fill opacity of the overlay.
    """

    mode: ScoringMode = "yesno"
    two_image: bool = False
    batch_size: int = 8
    max_new_tokens: int = 96
    zoom_below: float = 0.02
    alpha: float = 0.45

    def __post_init__(self) -> None:
        if self.mode not in SCORING_MODES:
            raise ValueError(f"scoring mode must be one of {SCORING_MODES}, got {self.mode!r}")


#: LLaVA v1's system prompt (LISA's ``conv_llava_v1``; LLaVA-1.5's reads "user" for "human")
LISA_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
               "detailed, and polite answers to the human's questions.")
#: Whose attention becomes the heat map in generator discovery
GeneratorRows = Literal["seg+question", "seg", "question"]


@dataclass(frozen=True)
class GeneratorConfig:
    """Stage 1 with a segmentation MLLM (LISA, SESAME) as the candidate generator; ``DiscoveryConfig`` still sets the
    layer band, the generic-prompt division, the peaks and the SAM filtering.

    system: the conversation's system prompt (LISA's and SESAME's training template).
    query: the user turn after the image; ``{question}`` is replaced. LISA's ReasonSeg validation uses this sentence
        form ("What is {question} in this image? Please output segmentation mask." for short phrases).
    answer: the assistant turn, teacher-forced as in LISA's validation ("[SEG]."); None generates it greedily (LISA's
        chat, SESAME's inference: SESAME may answer without [SEG] when the object is absent, and then gives no mask).
    max_new_tokens: generation budget when ``answer`` is None.
    rows: whose attention over the image tokens becomes the heat map: "seg" (the row whose output predicts [SEG],
        i.e. whose hidden state becomes the SAM prompt), "question" (the question and "ASSISTANT:" rows), or
        "seg+question" (the two maps averaged with equal weight).
    peaks: also turn the heat map's peaks into SAM prompts (False: the generator's own masks only).
    """

    system: str = LISA_SYSTEM
    query: str = "{question} Please output segmentation mask."
    answer: str | None = "[SEG]."
    max_new_tokens: int = 64
    rows: GeneratorRows = "seg+question"
    peaks: bool = True

    def __post_init__(self) -> None:
        if self.rows not in get_args(GeneratorRows):
            raise ValueError(f"rows must be one of {get_args(GeneratorRows)}, got {self.rows!r}")
        if "{question}" not in self.query:
            raise ValueError("query must contain {question}")


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline needs besides the models."""

    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    top_k: int = 3
    cache_images: int = 4
    seed: int | None = 0
