"""Check windows of the stream guard: what text to check when, and what a verdict does.

Pure bookkeeping over :class:`~sidecar.pipeline._stream_state.Choice` offsets; the
guard runs the checks and keeps the clock. Sizes are characters (``tokens``: content
deltas).

A window is *due* when nothing of the choice was cleared yet (time to first token),
when ``window`` new characters (``tokens`` deltas) arrived, when new text of at least
:data:`MIN_BOUNDARY_CHARS` characters holds a natural boundary (a sentence or clause
end, a line break), or when the guard's clock says the oldest held text waited ``max_hold_ms``
(the guard asks :meth:`Windows.plan` then). A planned round covers
all the text received so far, in windows of at most ``window`` characters, except
that a choice's first window is a round of its own (its text goes out before the
rest is checked).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from detectors.base import Finding
from sidecar.pipeline._stream_state import Choice
from sidecar.pipeline.engine import ACCEPTABLE
from sidecar.pipeline._stream_text import Edit, holdback, resolve_spans
from sidecar.policy import Decision

__all__ = ["CONTINUE", "MIN_BOUNDARY_CHARS", "Planned", "WindowCheck", "WindowVerdict", "Windows"]

# Verdicts after which the stream goes on (the engine's acceptable answers); any other
# action stops it.
CONTINUE = ACCEPTABLE

#: A boundary makes a window due only once this much new text arrived (fewer,
#: larger checks for "a, b, c" lists and numbered lines).
MIN_BOUNDARY_CHARS = 12
# Sentence or clause ends and line breaks. Matched on single deltas (a model sends
# "." or ".\n" as its own token, or at the end of a word).
_BOUNDARY = re.compile(r"[.!?;:,\n\u3002\uff01\uff1f]")


@dataclass(frozen=True, slots=True)
class WindowCheck:
    """One window to check: ``text`` is overlap context + new text of choice ``choice``
    (empty when only ``whole`` is to be judged); ``offset`` is where ``text`` starts in
    the choice's upstream text; ``final`` is true for the window that ends the choice's
    text (and for whole-text checks). ``whole`` is the choice's whole upstream text,
    set on the final window when the guard has rules that judge whole answers (JSON
    validity, schemas): the checker runs those on ``whole`` and the others on ``text``."""

    choice: int
    text: str
    offset: int
    final: bool
    whole: str | None = None


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    """The checker's answer: a policy action, its reasons (``detector:label``), and for
    ``mask`` the spans to mask, offsets relative to :attr:`WindowCheck.text`. A stop
    with ``whole_only`` lets the window's text out before the stream is cut."""

    action: str = "pass"
    reasons: tuple[str, ...] = ()
    mask_spans: tuple[Finding, ...] = ()
    whole_only: bool = False  # only whole-answer rules stopped it: the window's text passed

    @classmethod
    def from_decision(cls, decision: Decision) -> WindowVerdict:
        return cls(decision.action, decision.reasons, tuple(decision.mask_findings))


class Planned(NamedTuple):
    choice: Choice
    check: WindowCheck
    end: int  # where the window's new text ends (upstream offset)
    first: bool  # nothing of the choice was cleared before this window


class Windows:
    """Plans windows and applies verdicts. ``buffered``: one whole-text window per
    choice at the end, no hold-back."""

    __slots__ = ("boundaries", "buffered", "cap", "context", "deferred", "late_spans",
                 "max_pending", "overlap", "tokens", "whole", "window")

    def __init__(self, *, window: int, tokens: int | None, overlap: int, cap: int,
                 max_pending: int, buffered: bool, boundaries: bool = True,
                 whole: bool = False) -> None:
        self.window = window
        self.boundaries = boundaries
        self.whole = whole  # the final window of a choice carries its whole text
        self.tokens = tokens
        self.overlap = overlap
        self.cap = cap
        self.context = max(overlap, cap)  # context of a window planned right after another
        self.max_pending = max_pending
        self.buffered = buffered
        self.late_spans = 0  # mask spans (partly) in text that had already gone out
        self.deferred = False  # the last plan left text unchecked: plan again after it

    def due(self, ch: Choice, content: str) -> bool:
        """Is a window of ``ch`` due after ``content`` arrived (not counting the clock)?"""
        if not ch.cleared:
            return True  # nothing of it may go out yet: check as soon as content arrives (TTFT)
        new = ch.length - ch.checked
        if self.tokens is not None:
            if len(ch.deltas) >= self.tokens or new >= self.max_pending:
                return True
        elif new >= self.window:
            return True
        return (self.boundaries and new >= MIN_BOUNDARY_CHARS
                and _BOUNDARY.search(content) is not None)

    def plan(self, choices: Iterable[Choice], final: bool) -> tuple[list[Planned], bool]:
        """Windows over all unchecked text, in order per choice; and whether some held
        text became releasable without a check (a choice ended right after a checked
        window, and no whole-answer rule waits for it)."""
        planned: list[Planned] = []
        freed = False
        self.deferred = False
        for ch in choices:
            last = final or ch.finished
            start = ch.checked
            if start >= ch.length:
                if last and self.whole and not ch.judged and ch.length:
                    ch.judged = True  # the whole answer is judged before its end goes out
                    check = WindowCheck(ch.index, "", start, True, "".join(ch.parts))
                    planned.append(Planned(ch, check, start, False))
                elif last and ch.cleared < start:
                    ch.cleared = start  # nothing follows the held tail: it can go
                    freed = True
                continue
            if self.buffered:
                if last:
                    ch.join(0)
                    ch.judged = True
                    check = WindowCheck(ch.index, ch.buf, 0, True, ch.buf if self.whole else None)
                    planned.append(Planned(ch, check, ch.length, False))
                continue
            ctx = max(0, min(ch.cleared, start - self.overlap))
            ch.join(ctx)
            first = not ch.cleared
            while start < ch.length:
                end = self._end(ch, start, first)
                if end <= start:
                    break
                text = ch.buf[ctx - ch.buf_off : end - ch.buf_off]
                final_window = last and end == ch.length
                whole = None
                if final_window and self.whole:
                    ch.judged = True
                    whole = "".join(ch.parts)
                check = WindowCheck(ch.index, text, ctx, final_window, whole)
                planned.append(Planned(ch, check, end, first))
                if first and end < ch.length and not last:
                    # the first window alone: its text goes out without waiting for the
                    # rest's checks (time to first token); the rest is the next round
                    self.deferred = True
                    break
                ctx = max(ch.buf_off, end - self.context)
                start = end
                first = False
            if ch.deltas and start > ch.checked:
                k = 0
                while k < len(ch.deltas) and ch.deltas[k] <= start:
                    k += 1
                del ch.deltas[:k]
        return planned, freed

    def _end(self, ch: Choice, start: int, first: bool) -> int:
        """End of the next window from ``start`` (< ``ch.length``): ``window`` characters
        (``tokens`` deltas; the first window fewer) or the rest."""
        length = ch.length
        if self.tokens is not None:
            ends = [e for e in ch.deltas if e > start]
            n = self.tokens
            if first and ends:
                return ends[min(n, len(ends)) - 1]
            if len(ends) >= n:
                return ends[n - 1]
            return length
        return start + min(length - start, self.window)

    def passed(self, p: Planned, verdict: WindowVerdict) -> None:
        """A window passed (pass, flag, mask): mask, advance ``checked`` and ``cleared``."""
        ch, check, end = p.choice, p.check, p.end
        if verdict.action == "mask" and verdict.mask_spans:
            self._mask(ch, check, verdict.mask_spans)
        ch.checked = end
        cleared = end
        if not check.final and not self.buffered:
            cleared -= holdback(check.text, self.cap, first=p.first)
            for edit in ch.edits:  # never split a mask
                if edit.start < cleared < edit.end:
                    cleared = edit.start
                    break
        ch.cleared = max(ch.cleared, cleared)

    def _mask(self, ch: Choice, check: WindowCheck, spans: Sequence[Finding]) -> None:
        limit = check.offset + len(check.text)
        edits = ch.edits
        for span in resolve_spans(spans):
            a, b = check.offset + span.start, min(check.offset + span.end, limit)
            if a < ch.released:  # out already: mask the rest; count it unless masked then
                masked = ch.past_edits + [(e.start, e.end) for e in ch.edits]
                if not _covered(masked, a, min(b, ch.released)):
                    self.late_spans += 1
                a = ch.released
            if a >= b:
                continue
            kept = []
            issued = ""
            for edit in edits:  # a span that grew since the last window replaces its mask
                if edit.end <= a or edit.start >= b:
                    kept.append(edit)
                else:
                    a, b = min(a, edit.start), max(b, edit.end)
                    issued = issued or edit.placeholder  # partly out: it keeps its placeholder
            value = ch.buf[max(a, ch.buf_off) - ch.buf_off : b - ch.buf_off]
            kept.append(Edit(a, b, span, value, issued))
            kept.sort(key=_edit_start)
            edits = kept
        ch.edits = edits


def _edit_start(edit: Edit) -> int:
    return edit.start


def _covered(ranges: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Is ``[start, end)`` inside the union of ``ranges`` (sorted, disjoint)?"""
    for a, b in ranges:
        if a <= start < b:
            start = b
            if start >= end:
                return True
    return start >= end
