"""Text helpers for the stream guard: hold-back, output masks, input restoration.

All offsets are character offsets. Nothing here raises on text content.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable

from detectors.base import Finding
from sidecar.masking import PlaceholderPrefixes

__all__ = [
    "Edit",
    "PlaceholderRestorer",
    "apply_edits",
    "holdback",
    "resolve_spans",
]


@dataclasses.dataclass(slots=True)
class Edit:
    """An output mask over upstream ``[start, end)`` of a choice. Its placeholder is
    issued only when the edit goes out, so a span that grows in the next window
    (``jane.doe@mail.ex`` -> ``jane.doe@mail.example.org``) gets one placeholder
    for its final value, not one per window."""

    start: int
    end: int
    span: Finding
    value: str
    placeholder: str = ""

_SEPARATORS = frozenset(" -.\u00a0")  # between digit groups of phone/card/IBAN numbers
_NUMBER_CHARS = frozenset("0123456789+()-.")
# Until some of a choice's text was cleared, a window that is one plain word is
# released whole (TTFT: the first token goes out at once); a word that already looks
# like part of an entity (a digit, "@", "_", "+", "%", "/", or "." / "-" after a
# letter: "john.do", "alice.", "+1", "4111") is held, and the next content triggers
# the next check at once.
_RISKY = re.compile(r"[\d@_+%/]|\w[.\-]")


def holdback(text: str, cap: int, *, first: bool = False) -> int:
    """How many characters at the end of ``text`` may still be the start of an entity.

    The trailing run of non-space characters (an e-mail, a URL, a placeholder, a
    word being spelled out), extended backwards over digit groups and single
    separators ("+44 20 7946 09", "4111 1111 11"), at most ``cap`` characters.
    With ``first`` (nothing of the choice cleared yet) a window that is a single
    plain word is not held, so the first token goes out at once; see ``_RISKY``.
    """
    n = len(text)
    if n == 0 or cap <= 0:
        return 0
    lo = n - cap if n > cap else 0
    i = n
    while i > lo and not text[i - 1].isspace():
        i -= 1
    if first and i < n and (i == 0 or text[:i].isspace()) and _RISKY.search(text, i) is None:
        i = n  # the window is one plain word: let it go, or nothing would
    if i == n or all(c in _NUMBER_CHARS for c in text[i:n]):
        j = i
        while j > lo:
            k = j
            seps = 0
            while k > lo and seps < 2 and text[k - 1] in _SEPARATORS:
                k -= 1
                seps += 1
            if k == lo or not (text[k - 1].isdigit() or text[k - 1] == ")"):
                break
            while k > lo and text[k - 1] in _NUMBER_CHARS:
                k -= 1
            j = k
        i = j
    return n - i


def apply_edits(text: str, start: int, edits: Iterable[Edit]) -> str:
    """``text`` (upstream ``[start, start+len)``) with the edits applied.

    An edit's replacement goes out with the segment holding the edit's start; the
    rest of its span, in later segments, is dropped. Returns ``text`` itself when
    no edit touches it. ``edits`` are sorted and do not overlap.
    """
    end = start + len(text)
    parts: list[str] = []
    pos = start
    for edit in edits:
        a, b = edit.start, edit.end
        if b <= pos or a >= end:
            if a >= end:
                break
            continue
        if a >= pos:
            parts.append(text[pos - start : a - start])
            parts.append(edit.placeholder)
        pos = min(end, b)
    if pos == start and not parts:
        return text
    parts.append(text[pos - start :])
    return "".join(parts)


def resolve_spans(spans: Iterable[Finding]) -> list[Finding]:
    """Non-overlapping spans in text order: higher score, then longer, then earlier
    wins (the masker's rule). Empty spans are dropped."""
    ranked = sorted(
        (s for s in spans if s.end > s.start),
        key=lambda s: (-s.score, s.start - s.end, s.start),
    )
    kept: list[Finding] = []
    for s in ranked:
        if all(s.end <= k.start or k.end <= s.start for k in kept):
            kept.append(s)
    kept.sort(key=lambda s: s.start)
    return kept


def whole_span(finding: Finding, length: int) -> Finding:
    return dataclasses.replace(finding, start=0, end=length)


class PlaceholderRestorer:
    """Restores input placeholders in a stream of text pieces.

    ``feed`` returns what can go out now, restored; it holds back the tail from the
    last ``<`` while that tail is a proper prefix of one of the placeholders
    (``"<EMAIL_ADD"``), at most the longest placeholder's length. ``flush`` returns
    the rest. Joined output equals ``restore`` of the joined input however the input
    was split. Returns its argument itself when nothing changed.
    """

    __slots__ = ("_held", "_longest", "_prefixes", "_restore")

    def __init__(self, restore: Callable[[str], str], prefixes: PlaceholderPrefixes) -> None:
        self._restore = restore
        self._prefixes = prefixes
        self._longest = prefixes.longest
        self._held = ""

    @property
    def pending(self) -> int:
        return len(self._held)

    def feed(self, text: str) -> str:
        if self._held:
            text = self._held + text
            self._held = ""
        i = text.rfind("<")
        if i == -1:
            return text
        if len(text) - i <= self._longest and text[i:] in self._prefixes:
            self._held = text[i:]
            text = text[:i]
        return self._restore(text) if "<" in text else text

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._restore(text) if text else text
