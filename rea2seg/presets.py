"""Named model presets (frozen dataclasses): which VLM, which SAM, which scorer, and the pipeline settings."""
from __future__ import annotations

from dataclasses import dataclass, field

from .config import DiscoveryConfig, PipelineConfig, ScoringConfig
from .errors import InputError


@dataclass(frozen=True)
class Preset:
    """vlm: hub id or directory of the discovery model: a VLM (which also scores unless ``scorer``) or a LISA-format
    segmentation MLLM (LISA, SESAME: the candidate generator, which needs a ``scorer``); sam: the segmenter, a SAM
    kind (vit_h / vit_l / vit_b, resolved in the models folder), a file path or a SAM 2.1 / SAM 3 hub id, "" for a
    generator's own SAM; scorer: a different VLM for stage 2 (None = the same object). Random-weight presets name
    tiny models instead (``testing.tiny_preset_models``)."""

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
    Preset("sam2", "Qwen/Qwen2.5-VL-7B-Instruct", "facebook/sam2.1-hiera-large",
           "Qwen2.5-VL-7B-Instruct (16.6 GB in bf16) + SAM 2.1 Hiera-L (0.9 GB in fp32): about 17.5 GB of weights"),
    Preset("sam3", "Qwen/Qwen3-VL-8B-Instruct", "facebook/sam3",
           "Qwen3-VL-8B-Instruct (17.5 GB in bf16) + SAM 3 (3.4 GB in fp32) with concept candidates: the VLM names the "
           "object, SAM 3's text prompt segments every instance, next to the attention-peak candidates: about 21 GB "
           "of weights; facebook/sam3 is gated (accept its licence on the hub)",
           config=PipelineConfig(discovery=DiscoveryConfig(sources=("attention", "concepts")))),
    Preset("lisa-7b", "xinlai/LISA-7B-v1", "",
           "LISA-7B-v1 as the candidate generator (its [SEG] mask, its attention peaks through its own SAM ViT-H; "
           "CLIP ViT-L/14 from openai/clip-vit-large-patch14), scored by Qwen2.5-VL-7B yes/no (about 35 GB of GPU "
           "memory in bf16)",
           scorer="Qwen/Qwen2.5-VL-7B-Instruct"),
    Preset("sesame", "snowball521/Sesame_Generator", "",
           "the Rea2Seg paper's SESAME generator (LLaVA-1.5-7B + SAM ViT-H; CLIP ViT-L/14-336) for discovery, scored "
           "by Qwen2.5-VL-7B yes/no (about 35 GB of GPU memory in bf16)",
           scorer="Qwen/Qwen2.5-VL-7B-Instruct"),
    Preset("sesame-internvl", "snowball521/Sesame_Generator", "",
           "the paper's LLaVA row: the SESAME generator for discovery, InternVL3-8B (-hf format) scoring in "
           "comparative mode; point --scorer at a converted Rea2Seg scorer for the fine-tuned model",
           scorer="OpenGVLab/InternVL3-8B-hf", config=PipelineConfig(scoring=ScoringConfig(mode="comparative"))),
    Preset("tiny-random", "qwen2_5_vl", "sam",
           "tiny random-weight models built offline: smoke tests only, output meaningless",
           config=PipelineConfig(discovery=DiscoveryConfig(vlm_max_pixels=448 * 448)), random_weights=True),
    Preset("tiny-random-sam2", "qwen2_5_vl", "sam2",
           "tiny random-weight Qwen2.5-VL + SAM 2.1 (hub layout), built offline: smoke tests only, output meaningless",
           config=PipelineConfig(discovery=DiscoveryConfig(vlm_max_pixels=448 * 448)), random_weights=True),
    Preset("tiny-random-sam3", "qwen3_vl", "sam3",
           "tiny random-weight Qwen3-VL + SAM 3 (hub layout) with concept candidates, built offline: smoke tests only, "
           "output meaningless",
           config=PipelineConfig(discovery=DiscoveryConfig(vlm_max_pixels=448 * 448, sources=("attention", "concepts"),
                                                           max_new_tokens_concepts=12)), random_weights=True),
    Preset("tiny-random-lisa", "lisa", "",
           "tiny random-weight LISA-format generator (released checkpoint layout) + tiny Qwen2.5-VL scorer, built "
           "offline: smoke tests only, output meaningless", scorer="qwen2_5_vl", random_weights=True),
]}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}") from None
