"""Random-weight model builders for tests, benchmarks and the ``tiny-random`` smoke preset, and plain reference
implementations to compare the engine with. Not user-facing model choices: nothing here is a quality claim."""
from __future__ import annotations

import os
from pathlib import Path

from .lisa import VARIANTS as LISA_VARIANTS
from .lisa import build_tiny_clip, build_tiny_lisa, ensure_tiny_lisa
from .models import (FAMILIES, MEANINGLESS, QWEN_CHAT_TEMPLATE, QWEN_SPECIALS, TEST_SAM_ARCHS, TINY_SEGMENTERS,
                     build_tiny_sam, build_tiny_tokenizer, build_tiny_vlm, ensure_tiny_models, ensure_tiny_segmenter)
from .segmenters import build_tiny_sam2, build_tiny_sam3


def tiny_preset_models(vlm: str, sam: str, scorer: str | None, root: str | os.PathLike
                       ) -> tuple[Path, Path | None, Path | None]:
    """Build (once, under ``root``) the tiny models a random-weight preset names: a Qwen-VL family
    ("qwen2_5_vl", ...), a LISA-format variant ("lisa", "sesame"), "sam" (SAM v1), or "sam2" / "sam3" (SAM 2.1 / SAM 3
    in the hub layout); "" / None for none. Returns the paths (vlm, sam, scorer)."""
    def build(name: str | None) -> Path | None:
        if not name:
            return None
        if name in LISA_VARIANTS:
            return ensure_tiny_lisa(root, name)
        if name == "sam":
            return ensure_tiny_models(root)[1]
        if name in TINY_SEGMENTERS:
            return ensure_tiny_segmenter(root, name)
        return ensure_tiny_models(root, name)[0]

    return build(vlm), build(sam), build(scorer)


def tiny_models_dir() -> Path:
    """Where the tiny-random models are built: $REA2SEG_TINY_DIR, else ~/.cache/rea2seg/tiny-random."""
    env = os.environ.get("REA2SEG_TINY_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rea2seg" / "tiny-random"


__all__ = ["FAMILIES", "LISA_VARIANTS", "MEANINGLESS", "QWEN_CHAT_TEMPLATE", "QWEN_SPECIALS", "TEST_SAM_ARCHS",
           "TINY_SEGMENTERS", "build_tiny_clip", "build_tiny_lisa", "build_tiny_sam", "build_tiny_sam2",
           "build_tiny_sam3", "build_tiny_tokenizer", "build_tiny_vlm", "ensure_tiny_lisa", "ensure_tiny_models",
           "ensure_tiny_segmenter", "tiny_models_dir", "tiny_preset_models"]
