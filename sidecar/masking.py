"""Reversible masking: finding spans become stable placeholders, and back.

One :class:`Masker` per request (it lives in the request's context and dies with
it; nothing is shared or stored). It works from finding offsets only, so it serves
every detector alike:

- :meth:`Masker.mask` replaces each kept span with ``<LABEL_n>``. The same
  ``(label, value)`` gets the same placeholder everywhere in the request, across
  all of its messages; numbering is per label, from 1, in order of first sight.
  Overlapping findings are resolved first: higher score wins, then the longer
  span, then the earlier one.
- :meth:`Masker.restore` puts the values back into the model's answer wherever it
  wrote a placeholder we issued, in any order and any number of times. Anything
  else that looks like a placeholder is left as it is.
- :class:`StreamRestorer` does the same for a streamed answer, chunk by chunk,
  holding back only a tail that could still become one of *our* placeholders
  (``"...<EMAIL_ADD"``), so text is released as soon as it is safe.

Placeholders that already occur in the input text are never issued, so a user's
literal ``<EMAIL_ADDRESS_1>`` is not confused with a masked value.

Measured against presidio-anonymizer (``bench/bench_detectors_pii.py``): its
AnonymizerEngine with a custom operator producing the same placeholders takes about
7x the CPU time of this splice for the same spans (58 vs 8 us per 2 KB text with
five spans), so it is not used.

Nothing here raises on text content; ``mask`` raises ``ValueError`` for a finding
whose offsets do not fit the text (a detector bug), naming only the offsets.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Protocol

__all__ = ["PLACEHOLDER_PATTERN", "Masker", "StreamRestorer"]

# What a placeholder looks like: "<" LABEL "_" number ">", LABEL upper-case.
PLACEHOLDER_PATTERN = re.compile(r"<[A-Z][A-Z0-9_]*_[0-9]+>")
_NOT_LABEL = re.compile(r"[^A-Z0-9]+")


class _Span(Protocol):
    """What the masker needs of a finding (``detectors.base.Finding`` has it)."""

    @property
    def label(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


class Masker:
    """Per-request placeholder vault. Not thread-safe: one request, one task."""

    __slots__ = ("_by_key", "_by_placeholder", "_counters", "_labels", "_prefixes", "_reserved")

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        self._labels: dict[str, str] = {}
        self._reserved: set[str] = set()
        self._prefixes: frozenset[str] | None = frozenset()

    @property
    def mapping(self) -> Mapping[str, str]:
        """Read-only live view: placeholder -> original value."""
        return MappingProxyType(self._by_placeholder)

    def __len__(self) -> int:
        return len(self._by_placeholder)

    # -- masking -------------------------------------------------------------------

    def mask(self, text: str, findings: Iterable[_Span]) -> str:
        """``text`` with the kept spans replaced by placeholders.

        Findings may come from several detectors, in any order, overlapping.
        Raises ValueError if a finding's offsets are outside ``text``.
        """
        spans = _resolve(text, findings)
        if not spans:
            return text
        if "<" in text:
            self._reserved.update(PLACEHOLDER_PATTERN.findall(text))
        parts: list[str] = []
        pos = 0
        for label, start, end in spans:
            parts.append(text[pos:start])
            parts.append(self._placeholder(label, text[start:end]))
            pos = end
        parts.append(text[pos:])
        return "".join(parts)

    def reserve(self, texts: Iterable[str]) -> None:
        """Never issue a placeholder that already occurs literally in any of ``texts``
        (all of a request's texts, before the first ``mask``)."""
        for text in texts:
            if "<" in text:
                self._reserved.update(PLACEHOLDER_PATTERN.findall(text))

    def _placeholder(self, label: str, value: str) -> str:
        token = self._labels.get(label)
        if token is None:
            token = _NOT_LABEL.sub("_", label.upper()).strip("_")
            if not token or not token[0].isalpha():
                token = "PII_" + token if token else "PII"
            self._labels[label] = token
        key = (token, value)
        placeholder = self._by_key.get(key)
        if placeholder is not None:
            return placeholder
        n = self._counters.get(token, 0)
        while True:
            n += 1
            placeholder = f"<{token}_{n}>"
            if placeholder not in self._reserved:
                break
        self._counters[token] = n
        self._by_key[key] = placeholder
        self._by_placeholder[placeholder] = value
        self._prefixes = None  # rebuilt lazily for the stream restorer
        return placeholder

    # -- restoring -----------------------------------------------------------------

    def restore(self, text: str) -> str:
        """``text`` with every placeholder this masker issued replaced by its value."""
        if "<" not in text or not self._by_placeholder:
            return text
        table = self._by_placeholder
        return PLACEHOLDER_PATTERN.sub(lambda m: table.get(m.group(0), m.group(0)), text)

    def stream_restorer(self) -> StreamRestorer:
        return StreamRestorer(self)

    def _partial_prefixes(self) -> frozenset[str]:
        """Every proper prefix of every issued placeholder (for hold-back checks)."""
        if self._prefixes is None:
            self._prefixes = frozenset(
                p[:i] for p in self._by_placeholder for i in range(1, len(p))
            )
        return self._prefixes


class StreamRestorer:
    """Restores placeholders in a streamed answer, chunk by chunk.

    ``feed(chunk)`` returns the text that is safe to release now (restored); it
    holds back at most the tail from the last ``<`` when that tail is a proper
    prefix of a placeholder the masker issued. ``flush()`` returns the rest at
    the end of the stream. The output, joined, equals ``masker.restore`` of the
    whole input, however the input was split. O(chunk) per call.
    """

    __slots__ = ("_buffer", "_masker")

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._buffer = ""

    @property
    def pending(self) -> int:
        """Characters held back right now."""
        return len(self._buffer)

    def feed(self, chunk: str) -> str:
        text = self._buffer + chunk if self._buffer else chunk
        cut = self._safe_end(text)
        self._buffer = text[cut:]
        return self._masker.restore(text[:cut]) if cut else ""

    def flush(self) -> str:
        text, self._buffer = self._buffer, ""
        return self._masker.restore(text)

    def _safe_end(self, text: str) -> int:
        i = text.rfind("<")
        if i == -1 or ">" in text[i:]:
            return len(text)
        if text[i:] in self._masker._partial_prefixes():
            return i
        return len(text)


def _resolve(text: str, findings: Iterable[_Span]) -> list[tuple[str, int, int]]:
    """Non-overlapping (label, start, end) spans in text order.

    Greedy by priority: higher score, then longer span, then earlier start. Empty
    spans are ignored.
    """
    n = len(text)
    ranked: list[tuple[float, int, int, int, str]] = []
    for f in findings:
        start, end = f.start, f.end
        if not 0 <= start <= end <= n:
            raise ValueError(f"finding span {start}..{end} outside text of length {n}")
        if start < end:
            ranked.append((-f.score, start - end, start, end, f.label))
    if not ranked:
        return []
    ranked.sort()
    # kept spans never overlap, so sorted by start they are sorted by end too: a new
    # span collides only with its neighbours (bisect), not with every kept span
    starts: list[int] = []
    kept: list[tuple[int, int, str]] = []
    for _, _, start, end, label in ranked:
        i = bisect.bisect_left(starts, start)
        if i > 0 and kept[i - 1][1] > start:
            continue
        if i < len(kept) and kept[i][0] < end:
            continue
        starts.insert(i, start)
        kept.insert(i, (start, end, label))
    return [(label, start, end) for start, end, label in kept]
