"""The question text: one check shared by the engine and every door."""
from __future__ import annotations

from .errors import InputError

#: Longer questions are refused before tokenising (the pipeline also caps the token count).
MAX_QUESTION_CHARS = 2000


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
    question = question.strip()
    if not question:
        raise InputError("the question is empty; ask something about the image, e.g. 'the cup nearest the laptop'")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"the question is {len(question)} characters long, over the limit of {MAX_QUESTION_CHARS}; "
                         f"shorten it")
    return question
