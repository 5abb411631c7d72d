"""What the pipeline accepts, checked once: the question, the image, top_k and the scoring mode. The pipeline calls
these at its boundary; a door may call the same functions earlier for a faster answer, never its own copies."""
from __future__ import annotations

import numpy as np

from .config import MAX_ASPECT_RATIO, MAX_IMAGE_PIXELS, MAX_QUESTION_CHARS, MAX_QUESTION_TOKENS, MAX_TOP_K, \
    SCORING_MODES
from .errors import InputError
from .images import ImageLike, load_image


def check_question(question) -> str:
    """bytes (UTF-8) or str -> stripped str; ``InputError`` for non-UTF-8 bytes, non-text, NUL, empty or too long."""
    if isinstance(question, bytes):
        try:
            question = question.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("the question is not valid UTF-8 text; re-encode it as UTF-8") from None
    if not isinstance(question, str):
        raise InputError(f"the question must be text, got {type(question).__name__}")
    if "\x00" in question:
        raise InputError("the question contains NUL characters; pass plain text")
    question = question.strip()
    if not question:
        raise InputError("the question is empty; ask something about the image, e.g. 'the cup nearest the laptop'")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"the question is {len(question)} characters long, over the limit of {MAX_QUESTION_CHARS}; "
                         f"shorten it")
    return question


def check_question_tokens(question: str, tokenizer) -> str:
    """``InputError`` if ``question`` is over ``MAX_QUESTION_TOKENS`` tokens of ``tokenizer``."""
    n = len(tokenizer.encode(question, add_special_tokens=False))
    if n > MAX_QUESTION_TOKENS:
        raise InputError(f"the question is {n} tokens long, over the limit of {MAX_QUESTION_TOKENS}; shorten it")
    return question


def check_image(image: ImageLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """A path, PIL image or array -> (H, W, 3) uint8 (see ``images.load_image``), refused if more elongated than the
    VLM accepts."""
    arr = load_image(image, max_pixels)
    h, w = arr.shape[:2]
    if max(h, w) > MAX_ASPECT_RATIO * min(h, w):
        raise InputError(f"image is {w}x{h}: its aspect ratio is {max(h, w) / min(h, w):.0f}:1, over the "
                         f"{MAX_ASPECT_RATIO}:1 the VLM accepts; crop it or pad it to a less extreme shape")
    return arr


def check_top_k(top_k) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= MAX_TOP_K:
        raise InputError(f"top_k must be a whole number from 1 to {MAX_TOP_K}, got {top_k!r}")
    return int(top_k)


def check_mode(mode) -> str | None:
    """A scoring mode, or None for the configured default."""
    if mode is not None and mode not in SCORING_MODES:
        raise InputError(f"unknown scoring mode {mode!r}; use one of {', '.join(SCORING_MODES)} (or leave it out)")
    return mode
