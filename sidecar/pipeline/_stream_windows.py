"""Check windows of the stream guard: what text to check when, and what a verdict does.

Pure bookkeeping over :class:`~sidecar.pipeline._stream_state.Choice` offsets; the
guard runs the checks. Sizes are characters (``tokens``: content deltas).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from detectors.base import Finding
from sidecar.pipeline._stream_state import Choice
from sidecar.pipeline._stream_text import Edit, holdback, resolve_spans
from sidecar.policy import Decision

__all__ = ["CONTINUE", "Planned", "WindowCheck", "WindowVerdict", "Windows"]

# Verdicts after which the stream goes on; any other action stops it.
CONTINUE = frozenset(("pass", "flag", "mask"))


@dataclass(frozen=True, slots=True)
class WindowCheck:
    """One window to check: ``text`` is overlap context + new text of choice ``choice``;
    ``offset`` is where ``text`` starts in the choice's upstream text; ``final`` is true
    for the window that ends the choice's text (and for whole-text checks)."""

    choice: int
    text: str
    offset: int
    final: bool


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    """The checker's answer: a policy action, its reasons (``detector:label``), and for
    ``mask`` the spans to mask, offsets relative to :attr:`WindowCheck.text`."""

    action: str = "pass"
    reasons: tuple[str, ...] = ()
    mask_spans: tuple[Finding, ...] = ()

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

    __slots__ = ("buffered", "cap", "context", "late_spans", "max_pending", "overlap",
                 "tokens", "window")

    def __init__(self, *, window: int, tokens: int | None, overlap: int, cap: int,
                 max_pending: int, buffered: bool) -> None:
        self.window = window
        self.tokens = tokens
        self.overlap = overlap
        self.cap = cap
        self.context = max(overlap, cap)  # context of a window planned right after another
        self.max_pending = max_pending
        self.buffered = buffered
        self.late_spans = 0  # mask spans (partly) in text that had already gone out

    def due(self, ch: Choice) -> bool:
        """Is a window of ``ch`` due (after content arrived)?"""
        if not ch.cleared:
            return True  # nothing of it may go out yet: check as soon as content arrives (TTFT)
        new = ch.length - ch.checked
        if self.tokens is not None:
            return len(ch.deltas) >= self.tokens or new >= self.max_pending
        return new >= self.window

    def plan(self, choices: Iterable[Choice], final: bool) -> tuple[list[Planned], bool]:
        """The windows due now, in order per choice; and whether some held text became
        releasable without a check (a choice ended right after a checked window)."""
        planned: list[Planned] = []
        freed = False
        for ch in choices:
            last = final or ch.finished
            start = ch.checked
            if start >= ch.length:
                if last and ch.cleared < start:
                    ch.cleared = start  # nothing follows the held tail: it can go
                    freed = True
                continue
            if self.buffered:
                if last:
                    ch.join(0)
                    planned.append(Planned(ch, WindowCheck(ch.index, ch.buf, 0, True), ch.length, False))
                continue
            ctx = max(0, min(ch.cleared, start - self.overlap))
            ch.join(ctx)
            first = not ch.cleared
            while start < ch.length:
                end = self._end(ch, start, first, last)
                if end <= start:
                    break
                text = ch.buf[ctx - ch.buf_off : end - ch.buf_off]
                check = WindowCheck(ch.index, text, ctx, last and end == ch.length)
                planned.append(Planned(ch, check, end, first))
                ctx = max(ch.buf_off, end - self.context)
                start = end
                first = False
            if ch.deltas and start > ch.checked:
                k = 0
                while k < len(ch.deltas) and ch.deltas[k] <= start:
                    k += 1
                del ch.deltas[:k]
        return planned, freed

    def _end(self, ch: Choice, start: int, first: bool, last: bool) -> int:
        """End of the next window from ``start``, or ``start`` when none is due yet."""
        length = ch.length
        if self.tokens is not None:
            ends = [e for e in ch.deltas if e > start]
            n = self.tokens
            if first and ends:
                return ends[min(n, len(ends)) - 1]
            if len(ends) >= n:
                return ends[n - 1]
            if last or length - start >= self.max_pending:
                return length
            return start
        rest = length - start
        if first or rest >= self.window:
            return start + min(rest, self.window)
        return length if last else start

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
