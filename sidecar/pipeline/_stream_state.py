"""Per-choice and per-event state of the stream guard (no logic beyond bookkeeping).

Offsets are character offsets into a choice's *upstream* text (what the model
sent, placeholders and all), which is what windows are checked on. For every
choice, ``released <= cleared <= checked <= length``:

- ``checked``: text before it passed a window check;
- ``cleared``: ``checked`` minus the hold-back tail: text before it may go out;
- ``released``: text before it went out.
"""

from __future__ import annotations

from typing import Any

from sidecar.pipeline._stream_text import Edit, PlaceholderRestorer

__all__ = ["Choice", "Item"]


class Choice:
    """One choice index of the stream: its text, windows and release state."""

    __slots__ = (
        "buf",
        "buf_off",
        "chat",
        "checked",
        "cleared",
        "closed",
        "deltas",
        "edits",
        "finished",
        "index",
        "judged",
        "length",
        "parts",
        "past_edits",
        "pending",
        "released",
        "restorer",
        "tool_restorers",
    )

    def __init__(self, index: int, chat: bool) -> None:
        self.index = index
        self.chat = chat  # chat deltas (``delta.content``) or text completion (``text``)
        self.parts: list[str] = []  # the whole upstream text, for the trace
        self.length = 0
        # Text from ``buf_off`` on that windows and masks still need: ``buf`` is joined,
        # ``pending`` the deltas since the last window was planned.
        self.buf = ""
        self.buf_off = 0
        self.pending: list[str] = []
        self.deltas: list[int] = []  # end offsets of unchecked content deltas (token windows)
        self.checked = 0
        self.cleared = 0
        self.released = 0
        self.edits: list[Edit] = []  # output masks in the unreleased text, sorted
        self.past_edits: list[tuple[int, int]] = []  # released masks still inside ``buf``
        self.finished = False  # the upstream sent this choice's finish_reason
        self.judged = False  # its whole text went to the whole-answer rules
        self.closed = False  # the client got this choice's finish_reason
        self.restorer: PlaceholderRestorer | None = None
        self.tool_restorers: dict[int, PlaceholderRestorer] = {}

    def join(self, keep: int) -> None:
        """Move pending deltas into ``buf``; drop text before ``keep`` (never past
        ``released``: a mask may still grow back to there)."""
        keep = min(keep, self.released)
        if keep > self.buf_off:
            self.buf = self.buf[keep - self.buf_off :]
            self.buf_off = keep
            if self.past_edits:
                self.past_edits = [e for e in self.past_edits if e[1] > keep]
        if self.pending:
            self.buf += "".join(self.pending)
            self.pending.clear()


class Item:
    """One held event (or, for an event with several choices, one choice of it).

    ``lane`` is the choice index, or -1 for an event outside any choice (comment,
    error, usage, unknown), which waits for everything before it. A content item
    covers upstream ``[start, end)`` of its choice (``origin`` where it began, before
    any partial release); other choice events have ``start == end`` = the choice's
    length when they arrived. ``raw`` is the event's bytes, or None once it must be
    re-serialised from ``doc`` (``choice`` is the choice object inside ``doc``).
    """

    __slots__ = ("at", "choice", "doc", "end", "finish", "lane", "origin", "raw", "start", "text",
                 "tools")

    def __init__(
        self,
        lane: int,
        raw: bytes | None,
        doc: dict[str, Any] | None = None,
        choice: dict[str, Any] | None = None,
        start: int = 0,
        text: str = "",
        finish: bool = False,
        tools: bool = False,
        at: float = 0.0,
    ) -> None:
        self.at = at  # arrival (perf_counter; 0.0: not timed)
        self.lane = lane
        self.raw = raw
        self.doc = doc
        self.choice = choice
        self.origin = self.start = start
        self.end = start + len(text)
        self.text = text
        self.finish = finish
        self.tools = tools
