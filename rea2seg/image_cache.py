"""A bounded, thread-safe cache of per-image work (SAM embedding, VLM vision features, the generic-prompt attention
map), keyed by image content, so several questions on one image pay for the encoders once."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


def image_key(image: np.ndarray) -> str:
    """Content hash of an (H, W, 3) uint8 image (shape included)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


@dataclass
class ImageEntry:
    values: dict[Any, Any] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def get_or_compute(self, key: Any, compute: Callable[[], Any]) -> Any:
        """The cached value for ``key`` or ``compute()`` (once, even under concurrent callers)."""
        with self.lock:
            if key not in self.values:
                self.values[key] = compute()
            return self.values[key]


class ImageCache:
    """LRU of ``ImageEntry`` per image, at most ``capacity`` images (0 disables caching). Counts hits and misses."""

    def __init__(self, capacity: int = 4):
        self.capacity = capacity
        self._entries: OrderedDict[str, ImageEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def entry(self, image: np.ndarray) -> ImageEntry:
        if self.capacity <= 0:
            self.misses += 1
            return ImageEntry()
        key = image_key(image)
        with self._lock:
            if key in self._entries:
                self.hits += 1
                self._entries.move_to_end(key)
                return self._entries[key]
            self.misses += 1
            entry = self._entries[key] = ImageEntry()
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
            return entry

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict:
        return {"images": len(self), "capacity": self.capacity, "hits": self.hits, "misses": self.misses}
