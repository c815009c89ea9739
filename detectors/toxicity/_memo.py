"""Recent texts' toxicity findings, so a text re-sent is not scored again.

A chat client re-sends the whole conversation on every turn, and most requests of an
application start with the same system prompt: without a memo the input stage scores
turn N's history N times. Entries are keyed by the scorer's checkpoint (a backend switch
starts afresh) and a 128-bit BLAKE2b digest of the text: no text is kept. Bounded (least
recently used out), thread-safe (``detect_sync`` may run in worker threads).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from detectors.base import Finding

MIN_CHARS = 128
"""Shorter texts are not memoised: scoring them costs about what hashing does."""


class ScoreMemo:
    """At most ``entries`` texts' findings (``entries`` > 0)."""

    def __init__(self, entries: int) -> None:
        if entries <= 0:
            raise ValueError("entries must be positive")
        self.entries = entries
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[tuple[str, bytes], tuple[Finding, ...]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(checkpoint: str, text: str) -> tuple[str, bytes] | None:
        """The memo key of ``text`` under ``checkpoint``; None when too short to memoise."""
        if len(text) < MIN_CHARS:
            return None
        data = text.encode("utf-8", "surrogatepass")
        return checkpoint, hashlib.blake2b(data, digest_size=16).digest()

    def get(self, key: tuple[str, bytes]) -> tuple[Finding, ...] | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: tuple[str, bytes], findings: tuple[Finding, ...]) -> None:
        with self._lock:
            self._items[key] = findings
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def state(self) -> dict[str, int]:
        return {"entries": len(self._items), "max_entries": self.entries,
                "hits": self.hits, "misses": self.misses}
