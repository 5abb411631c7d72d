"""Named model presets (frozen dataclasses): which VLM, which SAM, which scorer, and the pipeline settings."""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import DiscoveryConfig, PipelineConfig, ScoringConfig
from .errors import InputError


@dataclass(frozen=True)
class Preset:
    """vlm: hub id or directory (discovery, and scoring unless ``scorer``); sam: a SAM kind (vit_h / vit_l / vit_b,
    resolved in the models folder) or a file path; scorer: a different VLM for stage 2 (None = the same object)."""

    name: str
    vlm: str
    sam: str
    description: str
    scorer: str | None = None
    config: PipelineConfig = field(default_factory=PipelineConfig)
    random_weights: bool = False


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("default", "Qwen/Qwen2.5-VL-7B-Instruct", "vit_h",
           "Qwen2.5-VL-7B-Instruct (16.6 GB in bf16) + SAM ViT-H (2.6 GB in fp32): about 19 GB of weights"),
    Preset("small", "Qwen/Qwen2.5-VL-3B-Instruct", "vit_b",
           "Qwen2.5-VL-3B-Instruct (7.5 GB in bf16) + SAM ViT-B (0.4 GB in fp32): about 8 GB of weights"),
    Preset("internvl-scorer", "Qwen/Qwen2.5-VL-7B-Instruct", "vit_h",
           "Qwen2.5-VL-7B discovery + SAM ViT-H, scored by InternVL3-8B (transformers -hf format, 15.9 GB in bf16) in "
           "comparative mode: about 35 GB of weights; point --scorer at a converted Rea2Seg scorer checkpoint to use "
           "the paper's fine-tuned model",
           scorer="OpenGVLab/InternVL3-8B-hf",
           config=PipelineConfig(scoring=ScoringConfig(mode="comparative"))),
    Preset("tiny-random", "", "", "tiny random-weight models built offline: smoke tests only, output meaningless",
           config=PipelineConfig(discovery=DiscoveryConfig(vlm_max_pixels=448 * 448)), random_weights=True),
]}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
