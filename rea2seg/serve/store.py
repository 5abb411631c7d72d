"""Results kept for follow-up calls ("score these candidates", "give me that mask") under server-made ids.

Count-bounded and least-recently-used: a long-running server keeps at most ``max_items`` results (each holds an
image and its candidate masks), so memory stays bounded however many requests arrive.
"""
from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

from ..errors import InputError

T = TypeVar("T")

_ID = re.compile(r"^r[0-9a-f]{12}$")


class ResultStore(Generic[T]):
    """A thread-safe LRU map from generated ids (``r`` + 12 hex digits) to results."""

    def __init__(self, max_items: int = 32):
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = max_items
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def put(self, value: T) -> str:
        """Store ``value``; returns its new id. Drops the least recently used result beyond ``max_items``."""
        with self._lock:
            result_id = "r" + secrets.token_hex(6)
            while result_id in self._items:
                result_id = "r" + secrets.token_hex(6)
            self._items[result_id] = value
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
            return result_id

    def get(self, result_id: str, more_fix: str = "keep more results") -> T:
        """The result for ``result_id`` (and mark it recently used); ``InputError`` if unknown or expired (naming
        ``more_fix``, how the operator keeps more)."""
        if not isinstance(result_id, str) or not _ID.match(result_id):
            raise InputError(f"result_id {result_id!r} is not a result id; pass the result_id a previous call "
                             f"returned (like 'r0123456789ab')")
        with self._lock:
            try:
                self._items.move_to_end(result_id)
                return self._items[result_id]
            except KeyError:
                raise InputError(f"unknown result_id {result_id!r}: it never existed or has expired (only the "
                                 f"{self.max_items} most recent results are kept); run the tool again, or "
                                 f"{more_fix}") from None

    def ids(self) -> list[str]:
        """Ids, least recently used first."""
        with self._lock:
            return list(self._items)
