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
- :meth:`Masker.snapshot` freezes the placeholders issued so far into a restore
  function (and their prefixes, which a stream holds back as a possibly split
  placeholder), so answers get the input's values back but never output-leak masks.

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
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Protocol

__all__ = ["PLACEHOLDER_PATTERN", "Masker", "Span"]

# What a placeholder looks like: "<" LABEL "_" number ">", LABEL upper-case.
PLACEHOLDER_PATTERN = re.compile(r"<[A-Z][A-Z0-9_]*_[0-9]+>")
_NOT_LABEL = re.compile(r"[^A-Z0-9]+")


class Span(Protocol):
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

    __slots__ = ("_by_key", "_by_placeholder", "_counters", "_labels", "_reserved")

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        self._labels: dict[str, str] = {}
        self._reserved: set[str] = set()

    @property
    def mapping(self) -> Mapping[str, str]:
        """Read-only live view: placeholder -> original value."""
        return MappingProxyType(self._by_placeholder)

    def __len__(self) -> int:
        return len(self._by_placeholder)

    # -- masking -------------------------------------------------------------------

    def mask(self, text: str, findings: Iterable[Span]) -> str:
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
        return placeholder

    # -- restoring -----------------------------------------------------------------

    def restore(self, text: str) -> str:
        """``text`` with every placeholder this masker issued replaced by its value."""
        if not self._by_placeholder:
            return text
        return _restore(self._by_placeholder, text)

    def snapshot(self) -> tuple[Callable[[str], str], PlaceholderPrefixes]:
        """A restore function over the placeholders issued *so far*, and their proper
        prefixes (for streams holding back a tail that may still become one). Taken
        after the input guard, it never restores masks issued later (output leaks).
        Cheap: a copy of the table (the prefixes are looked up, not listed)."""
        table = dict(self._by_placeholder)
        return functools.partial(_restore, table), PlaceholderPrefixes(table)


def _restore(table: Mapping[str, str], text: str) -> str:
    """``text`` with each placeholder in ``table`` replaced by its value."""
    if "<" not in text:
        return text
    return PLACEHOLDER_PATTERN.sub(lambda m: table.get(m.group(0), m.group(0)), text)


class PlaceholderPrefixes:
    """``text in prefixes``: is ``text`` a proper, non-empty prefix of one of the
    placeholders? A sorted list and a binary search: listing every prefix of every
    placeholder cost 1-2 ms on the event loop for a prompt with 500 masked values."""

    __slots__ = ("_sorted", "longest")

    def __init__(self, placeholders: Iterable[str]) -> None:
        self._sorted = sorted(placeholders)
        self.longest = max(map(len, self._sorted), default=1) - 1  # of a proper prefix

    def __len__(self) -> int:
        return len(self._sorted)  # placeholders, not prefixes

    def __contains__(self, text: object) -> bool:
        if not isinstance(text, str) or not text:
            return False
        ordered = self._sorted
        i = bisect.bisect_left(ordered, text)
        # every placeholder starting with ``text`` sorts from ``i`` on; one equal to it
        # (a whole placeholder) comes first
        for candidate in ordered[i : i + 2]:
            if len(candidate) > len(text) and candidate.startswith(text):
                return True
        return False


def _resolve(text: str, findings: Iterable[Span]) -> list[tuple[str, int, int]]:
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
