"""Parsers for model text. They never raise on any input: a reply with nothing usable gives None / an empty result,
and the caller falls back (unscored candidate -> yes/no probability; unparsable proposal -> skipped)."""
from __future__ import annotations

import json
import math
import re
from typing import Sequence

_NUM = r"(-?\d+(?:\.\d+)?)"
_SCORE_PATTERNS = [
    re.compile(r"score\s*(?:is|of|=|:)?\s*\**\s*" + _NUM + r"\s*(?:/\s*10|out of 10)?", re.I),
    re.compile(_NUM + r"\s*(?:/\s*10|out of 10)", re.I),
    re.compile(r"rating\s*(?:is|of|=|:)?\s*" + _NUM, re.I),
]


def _to_unit(value: str | float, scale: float = 10.0) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if not math.isfinite(v) or v < 0 or v > scale:
        return None
    return v / scale


def strip_thinking(text: str) -> str:
    """The answer part of a reply: inside ``<answer>``, else after the last ``</think>``; nothing when the reply
    stopped inside ``<think>`` (a thought cut off by the token limit is not an answer); else the whole text."""
    if not isinstance(text, str):
        return ""
    m = re.search(r"<answer>(.*?)(?:</answer>|$)", text, re.S | re.I)
    if m:
        return m.group(1)
    if "</think>" in text:
        return text.rsplit("</think>", 1)[-1]
    return "" if "<think>" in text else text


def parse_score(text: str) -> float | None:
    """A 0-10 score in a reasoning reply ("Score: 7", "7/10", "score of 8.5 out of 10") -> [0, 1], else None.
    The last match wins (models reason first, then conclude)."""
    if not isinstance(text, str) or not text:
        return None
    body = strip_thinking(text)
    for pattern in _SCORE_PATTERNS:
        hits = pattern.findall(body)
        for h in reversed(hits):
            v = _to_unit(h)
            if v is not None:
                return v
    stripped = body.strip().rstrip(".")
    if re.fullmatch(_NUM, stripped):
        return _to_unit(stripped)
    return None


def _json_objects(text: str) -> list:
    """Every JSON value (object or list) that can be decoded starting at a '{' or '['; single quotes tolerated."""
    out = []
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch not in "{[":
            continue
        for candidate in (text[i:], text[i:].replace("'", '"')):
            try:
                obj, _ = dec.raw_decode(candidate)
            except (ValueError, RecursionError):
                continue
            out.append(obj)
            break
    return out


def parse_comparative(text: str, numbers: int | Sequence[int]) -> dict[int, float]:
    """Scores for the candidates numbered ``numbers`` (an int n means 1..n) from a comparative reply ->
    {index into ``numbers``: [0, 1]}. Accepts {"scores": {"1": 8, ...}}, {"1": 8, ...}, [{"id": 1, "score": 8}, ...],
    and "Candidate 1: 8/10" lines."""
    numbers = list(range(1, numbers + 1)) if isinstance(numbers, int) else [int(x) for x in numbers]
    if not isinstance(text, str) or not numbers:
        return {}
    body = strip_thinking(text)
    found: dict[int, float] = {}
    where = {number: i for i, number in enumerate(numbers)}

    def put(key, value):
        try:
            k = int(str(key).strip().lstrip("#"))
        except (TypeError, ValueError, OverflowError):
            return
        v = _to_unit(value) if not isinstance(value, (dict, list, bool)) else None
        if k in where and v is not None:
            found[where[k]] = v

    for obj in reversed(_json_objects(body)):
        if isinstance(obj, dict) and isinstance(obj.get("scores"), (dict, list)):
            obj = obj["scores"]
        if isinstance(obj, dict):
            for key, value in obj.items():
                put(key, value)
        elif isinstance(obj, list):
            for item in obj:
                if isinstance(item, dict):
                    key = item.get("id", item.get("candidate", item.get("index")))
                    put(key, item.get("score"))
        if found:
            return found
    for m in re.finditer(r"(?:candidate|mask|region|#)\s*(\d+)\s*[:\-=)]\s*(?:score\s*[:=]?\s*)?" + _NUM, body, re.I):
        put(m.group(1), m.group(2))
    return found


def _xy_pair(v) -> list[float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                            and math.isfinite(x) for x in v):
        return [float(v[0]), float(v[1])]
    return None


def _box(v) -> list[float] | None:
    if isinstance(v, (list, tuple)) and len(v) == 4 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                            and math.isfinite(x) for x in v):
        x1, y1, x2, y2 = (float(x) for x in v)
        if x2 > x1 and y2 > y1:
            return [x1, y1, x2, y2]
    return None


def parse_proposals(text: str) -> list[tuple[list[float] | None, list[list[float]]]]:
    """Boxes/points the VLM proposes, in the JSON formats of Seg-Zero ({"bbox": [...], "points_1": [x, y], ...})
    and VisionReasoner ([{"bbox_2d": [...], "point_2d": [x, y]}, ...]) -> [(box xyxy | None, [[x, y], ...])], in the
    model's coordinate frame. Anything unparsable is skipped."""
    if not isinstance(text, str):
        return []
    out = []
    for obj in _json_objects(strip_thinking(text)):
        items = obj if isinstance(obj, list) else [obj]
        for item in items:
            if not isinstance(item, dict):
                continue
            box = _box(item.get("bbox_2d", item.get("bbox", item.get("box"))))
            points = []
            for key, value in item.items():
                if str(key).startswith(("point", "points")):
                    p = _xy_pair(value)
                    if p is not None:
                        points.append(p)
                    elif isinstance(value, list):
                        points.extend(q for q in (_xy_pair(x) for x in value) if q is not None)
            if box is not None or points:
                out.append((box, points))
        if out:
            break
    return out


_ARTICLES = {"the", "a", "an", "some", "any", "this", "that", "these", "those"}
_LEAD_IN = re.compile(r"^(?:answer|objects?|phrases?|concepts?|nouns?|output|result|response|final answer)\s*[:\-=]\s*",
                      re.I)
_BULLET = re.compile(r"^\s*(?:[-*\u2022+]|\d{1,2}[.):]|\(\d{1,2}\)|[a-z][.)])\s+", re.I)
_NOTHING = {"none", "nothing", "n/a", "na", "null", "unknown", "object", "objects", "thing", "things", "it", "image",
            "the image", "picture", "photo"}
_CONCEPT_KEYS = ("phrases", "objects", "concepts", "nouns", "labels", "answer", "names")
_ITEM_KEYS = ("phrase", "label", "name", "object", "concept", "noun", "category", "text")


_CLAUSE = {"that", "which", "who", "whose", "where", "lying", "sitting", "standing", "placed", "located", "on", "in",
           "at", "near", "next", "beside", "by", "under", "above", "below", "behind", "with", "to", "for", "from",
           "because", "as", "so"}


def _shorten(words: list[str], max_words: int) -> list[str]:
    """A sentence cut down to its noun phrase: what follows the last "is"/"are", up to the first clause word."""
    if len(words) <= max_words:
        return words
    for i in range(len(words) - 1, -1, -1):
        if words[i] in ("is", "are", "be") and i + 1 < len(words):
            words = words[i + 1:]
            break
    while words and words[0] in _ARTICLES:
        words = words[1:]
    cut = next((i for i, w in enumerate(words) if w in _CLAUSE and i > 0), len(words))
    return words[:min(cut, max_words)]


def _clean_phrase(text: str, max_words: int) -> str | None:
    text = re.sub(r"<[^>]{0,40}>", " ", text)  # leftover tags (<ref>, </answer> ...)
    text = _LEAD_IN.sub("", text.strip())
    text = re.sub(r"[\"'`\u201c\u201d\u2018\u2019*_#\[\]{}()]", " ", text)
    text = re.sub(r"[^\w\s&-]", " ", text, flags=re.UNICODE)  # '/' and punctuation: SAM 3's phrases are plain words
    words = text.lower().split()
    while words and words[0] in _ARTICLES:
        words = words[1:]
    words = _shorten([w for w in words if w.strip("-&")], max_words)
    phrase = " ".join(words)
    if not phrase or phrase in _NOTHING or not re.search(r"[^\W\d_]", phrase):
        return None
    return phrase


def _concept_items(body: str) -> list[str]:
    """Candidate phrase strings in a reply: a JSON list (of strings or of objects with a label), or bullet /
    numbered lines, or one comma / semicolon separated line."""
    for obj in _json_objects(body):
        if isinstance(obj, dict):
            obj = next((obj[k] for k in _CONCEPT_KEYS if isinstance(obj.get(k), (list, str))), None)
            obj = [obj] if isinstance(obj, str) else obj
        if not isinstance(obj, list):
            continue
        items = []
        for it in obj:
            if isinstance(it, str):
                items.append(it)
            elif isinstance(it, dict):
                value = next((it[k] for k in _ITEM_KEYS if isinstance(it.get(k), str)), None)
                if value is not None:
                    items.append(value)
        if items:
            return items
    lines = [ln for ln in body.splitlines() if ln.strip()]
    bullets = [_BULLET.sub("", ln) for ln in lines if _BULLET.match(ln)]
    if bullets:
        return bullets
    text = " ".join(lines)
    text = re.sub(r"^[^:\n]{0,40}:\s*(?=\S)", "", text) if ":" in text[:42] else text  # "Objects: mug, spoon"
    return re.split(r"\s*(?:[,;\n]|\band\b|\bor\b)\s*", text)


def parse_concepts(text: str, max_phrases: int = 3, max_words: int = 6) -> list[str]:
    """Short noun phrases naming what a question is about, from a VLM reply that may be a JSON list, a bullet list,
    quoted words, a sentence or a ``<think>`` block followed by the answer -> at most ``max_phrases`` distinct
    lower-case phrases of at most ``max_words`` words, articles ("the", "a") removed, in the reply's order. Empty when
    nothing usable is there; never raises."""
    if not isinstance(text, str) or not text.strip():
        return []
    try:
        max_phrases, max_words = max(0, int(max_phrases)), max(1, int(max_words))
    except (TypeError, ValueError, OverflowError):
        return []
    body = strip_thinking(text)
    if "<think>" in body.lower():  # an unclosed thinking block: its own text is reasoning, not the answer
        body = re.split(r"<think>", body, flags=re.I)[0]
    out: list[str] = []
    for item in _concept_items(body[:4000]):
        if len(out) >= max_phrases:
            break
        phrase = _clean_phrase(item, max_words) if isinstance(item, str) else None
        if phrase and phrase not in out:
            out.append(phrase)
    return out
