"""Random-weight model builders for tests, benchmarks and the ``tiny-random`` smoke preset, and plain reference
implementations to compare the engine with. Not user-facing model choices: nothing here is a quality claim."""
from __future__ import annotations

import os
from pathlib import Path

from .models import (FAMILIES, MEANINGLESS, QWEN_CHAT_TEMPLATE, QWEN_SPECIALS, TEST_SAM_ARCHS, TINY_SEGMENTERS,
                     build_tiny_sam, build_tiny_tokenizer, build_tiny_vlm, ensure_tiny_models)
from .segmenters import build_tiny_sam2, build_tiny_sam3


def tiny_models_dir() -> Path:
    """Where the tiny-random models are built: $REA2SEG_TINY_DIR, else ~/.cache/rea2seg/tiny-random."""
    env = os.environ.get("REA2SEG_TINY_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rea2seg" / "tiny-random"


__all__ = ["FAMILIES", "MEANINGLESS", "QWEN_CHAT_TEMPLATE", "QWEN_SPECIALS", "TEST_SAM_ARCHS", "TINY_SEGMENTERS",
           "build_tiny_sam", "build_tiny_sam2", "build_tiny_sam3", "build_tiny_tokenizer", "build_tiny_vlm",
           "ensure_tiny_models", "tiny_models_dir"]
