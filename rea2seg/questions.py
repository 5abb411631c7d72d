"""The question text: one check shared by the engine and every door."""
from __future__ import annotations

from .errors import InputError


def clean_question(question) -> str:
    """bytes (UTF-8) or str -> stripped str; ``InputError`` for non-UTF-8 bytes, non-text and empty questions."""
    if isinstance(question, bytes):
        try:
            question = question.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("the question is not valid UTF-8 text; re-encode it as UTF-8") from None
    if not isinstance(question, str):
        raise InputError(f"the question must be text, got {type(question).__name__}")
    if "\x00" in question:
        raise InputError("the question contains NUL characters; pass plain text")
    if not question.strip():
        raise InputError("the question is empty; ask something about the image, e.g. 'the cup nearest the laptop'")
    return question.strip()
