"""SSE framing for the stream guard: events with their original bytes.

:class:`~sidecar.sse.SseParser` hands out decoded events and drops comments; the
stream guard needs each event's *bytes* too, so that an event it does not change
goes to the client byte for byte, and comments (keep-alives) keep their place in
the stream. :class:`RawSplitter` splits on blank lines (``\\n\\n``; ``\\r\\n`` line
ends are normalised to ``\\n`` first), and extracts the joined ``data`` field.

Cost per chunk: one buffer join, one ``split`` and, for the usual one-line
``data:`` event, one slice. Nothing here raises on malformed input.
"""

from __future__ import annotations

import re

__all__ = ["RawEvent", "RawSplitter", "drop_usage_null"]


# `"usage": null` as a key of the top-level object, with the comma that joins it to
# its neighbour. A quote inside a JSON string is escaped, so an unescaped
# `"usage"` key after `{` or `,` cannot come from string content.
_USAGE_NULL = re.compile(rb'(?<=[{,])\s*"usage"\s*:\s*null\s*,|,\s*"usage"\s*:\s*null(?=\s*})')


class RawEvent:
    """One SSE event: ``raw`` its bytes with the closing blank line; ``data`` the
    joined data field (``None`` when it has no data line: a comment, a bare
    ``event:``/``retry:``)."""

    __slots__ = ("data", "raw")

    def __init__(self, raw: bytes, data: bytes | None) -> None:
        self.raw = raw
        self.data = data


class RawSplitter:
    """Incremental splitter for one stream. A line longer than ``max_line_bytes``
    without an event end is dropped rather than grown forever (as SseParser)."""

    __slots__ = ("_max", "_tail")

    def __init__(self, max_line_bytes: int = 8 * 1024 * 1024) -> None:
        self._tail = b""
        self._max = max_line_bytes

    def feed(self, chunk: bytes) -> list[RawEvent]:
        if (  # the usual network chunk: exactly one one-line data event; no copies
            not self._tail
            and chunk.startswith(b"data:")
            and chunk.find(b"\n") == len(chunk) - 2
            and chunk.endswith(b"\n\n")
        ):
            value = chunk[5:-2]
            return [RawEvent(chunk, value[1:] if value.startswith(b" ") else value)]
        buf = self._tail + chunk if self._tail else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        if b"\n\n" not in buf:
            self._tail = buf if len(buf) <= self._max else b""
            return []
        blocks = buf.split(b"\n\n")
        self._tail = blocks.pop()
        return [e for e in map(_event, blocks) if e is not None]

    def close(self) -> list[RawEvent]:
        """End of stream: a last event without its blank line is still delivered."""
        tail, self._tail = self._tail, b""
        event = _event(tail.rstrip(b"\n")) if tail.strip() else None
        return [event] if event is not None else []


def _event(block: bytes) -> RawEvent | None:
    if block.startswith(b"\n"):  # three or more newlines in a row: empty lines first
        block = block.lstrip(b"\n")
    if not block:
        return None
    raw = block + b"\n\n"
    if block.startswith(b"data:") and b"\n" not in block:
        value = block[5:]
        return RawEvent(raw, value[1:] if value.startswith(b" ") else value)
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    return RawEvent(raw, b"\n".join(data) if data else None)


def drop_usage_null(raw: bytes) -> bytes | None:
    """``raw`` without its ``"usage": null``; None when it cannot tell (no match, or
    more than one, say a nested object with the same key: then re-serialise)."""
    out, n = _USAGE_NULL.subn(b"", raw)
    return out if n == 1 else None
