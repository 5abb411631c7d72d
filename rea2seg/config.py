"""Configuration: frozen dataclasses with documented defaults. Presets (see ``presets.py``) are named instances."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

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
    vlm_proposals: also ask the VLM for boxes/points in JSON (Seg-Zero / VisionReasoner format).
    max_new_tokens_proposals: generation budget for the proposal reply.
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
    vlm_proposals: bool = False
    max_new_tokens_proposals: int = 128
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
