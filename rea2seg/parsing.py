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
