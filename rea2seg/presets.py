"""Named model presets (frozen dataclasses): which VLM, which SAM, which scorer, and the pipeline settings."""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import DiscoveryConfig, PipelineConfig, ScoringConfig
from .errors import InputError


@dataclass(frozen=True)
class Preset:
    """vlm: hub id or directory (discovery, and scoring unless ``scorer``); sam: a SAM v1 kind (vit_h / vit_l / vit_b,
    resolved in the models folder), a file path, or a SAM 2.1 / SAM 3 hub id; scorer: a different VLM for stage 2
    (None = the same object). Random-weight presets name the tiny builders instead: vlm a tiny VLM family
    (``testing.FAMILIES``), sam a tiny segmenter ("sam", "sam2", "sam3")."""

    name: str
    vlm: str
    sam: str
    description: str
    scorer: str | None = None
    config: PipelineConfig = field(default_factory=PipelineConfig)
    random_weights: bool = False


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("default", "Qwen/Qwen2.5-VL-7B-Instruct", "vit_h",
           "Qwen2.5-VL-7B-Instruct + SAM ViT-H (about 17 GB of GPU memory in bf16)"),
    Preset("small", "Qwen/Qwen2.5-VL-3B-Instruct", "vit_b",
           "Qwen2.5-VL-3B-Instruct + SAM ViT-B (about 8 GB of GPU memory in bf16)"),
    Preset("internvl-scorer", "Qwen/Qwen2.5-VL-7B-Instruct", "vit_h",
           "Qwen2.5-VL-7B discovery + SAM ViT-H, scored by InternVL3-8B (transformers -hf format) in comparative mode; "
           "point --scorer at a converted Rea2Seg scorer checkpoint to use the paper's fine-tuned model",
           scorer="OpenGVLab/InternVL3-8B-hf",
           config=PipelineConfig(scoring=ScoringConfig(mode="comparative"))),
    Preset("sam2", "Qwen/Qwen2.5-VL-7B-Instruct", "facebook/sam2.1-hiera-large",
           "Qwen2.5-VL-7B-Instruct + SAM 2.1 Hiera-L (about 18 GB of GPU memory; weights: VLM 16.6 GB in bf16, SAM 2.1 "
           "0.9 GB in fp32)"),
    Preset("sam3", "Qwen/Qwen3-VL-8B-Instruct", "facebook/sam3",
           "Qwen3-VL-8B-Instruct + SAM 3 with concept candidates: the VLM names the object, SAM 3's text prompt "
           "segments every instance, next to the attention-peak candidates (about 21 GB of GPU memory; weights: VLM "
           "17.5 GB in bf16, SAM 3 3.4 GB in fp32; facebook/sam3 is gated)",
           config=PipelineConfig(discovery=DiscoveryConfig(sources=("attention", "concepts")))),
    Preset("tiny-random", "qwen2_5_vl", "sam", "tiny random-weight models built offline: smoke tests only, output "
           "meaningless", random_weights=True),
    Preset("tiny-random-sam2", "qwen2_5_vl", "sam2", "tiny random-weight Qwen2.5-VL + SAM 2.1 (hub layout), built "
           "offline: smoke tests only, output meaningless", random_weights=True),
    Preset("tiny-random-sam3", "qwen3_vl", "sam3", "tiny random-weight Qwen3-VL + SAM 3 (hub layout) with concept "
           "candidates, built offline: smoke tests only, output meaningless", random_weights=True,
           config=PipelineConfig(discovery=DiscoveryConfig(sources=("attention", "concepts"),
                                                           max_new_tokens_concepts=12))),
]}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
