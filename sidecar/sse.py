"""Server-sent events: an incremental parser, and a whole answer written as a stream.

Feed it network chunks as they arrive; it returns the events completed so far.
A ``data:`` line, a field name or a ``\\r\\n`` pair may be split across chunks at
any byte; multi-line ``data`` fields are joined with ``\\n`` as the SSE spec says.
The parser copies nothing it does not have to: the cost per chunk is one buffer
join and a ``split`` over the new bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: bytes
    event: str | None = None
    id: str | None = None


class SseParser:
    """Stateful parser for one stream. ``feed`` never raises on malformed input.

    Memory is bounded by ``max_event_bytes``: an unfinished line, or the data lines
    of one event, that grow past it are dropped and ``overflowed`` is set (an endless
    line or an event that never ends cannot grow the buffer without limit).
    """

    __slots__ = ("_data", "_event", "_id", "_max", "_size", "_tail", "overflowed")

    def __init__(self, max_event_bytes: int = 8 * 1024 * 1024) -> None:
        self._tail = b""
        self._data: list[bytes] = []
        self._size = 0  # bytes in _data
        self._event: str | None = None
        self._id: str | None = None
        self._max = max_event_bytes
        self.overflowed = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._tail:
            chunk = self._tail + chunk
        lines = chunk.split(b"\n")
        self._tail = lines.pop()
        if len(self._tail) + self._size > self._max:  # runaway: drop, never grow forever
            self._tail = b""
            self.overflowed = True
        events: list[SseEvent] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data or self._event is not None:
                    events.append(SseEvent(b"\n".join(self._data), self._event, self._id))
                    self._data = []
                    self._size = 0
                    self._event = None
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                if value.startswith(b" "):
                    value = value[1:]
                self._size += len(value)
                if self._size > self._max:
                    self._data, self._size, self.overflowed = [], 0, True
                    continue
                self._data.append(value)
            elif line.startswith(b":"):
                continue  # comment / keep-alive
            else:
                name, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if name == b"event":
                    self._event = value.decode("utf-8", "replace")
                elif name == b"id":
                    self._id = value.decode("utf-8", "replace")
        return events

    def close(self) -> list[SseEvent]:
        """End of stream: a final event without its blank line is still delivered."""
        events = self.feed(b"\n\n") if (self._tail or self._data) else []
        self._tail = b""
        return events


class EventSizeLimit:
    """Counts the bytes of a raw SSE stream since the last event end (a blank line), for
    a reader that does not parse the stream itself. ``feed`` returns False once that
    count exceeds ``max_bytes``: an endless line, or an event that never ends. Cost per
    chunk: two ``rfind`` over it."""

    __slots__ = ("_last", "_max", "_pending")

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._pending = 0
        self._last = b""  # the previous chunk's last two bytes: a blank line may straddle

    def feed(self, chunk: bytes) -> bool:
        window = self._last + chunk if self._last else chunk
        lf, crlf = window.rfind(b"\n\n"), window.rfind(b"\n\r\n")
        end = max(lf + 2 if lf >= 0 else -1, crlf + 3 if crlf >= 0 else -1)
        if end >= 0:
            self._pending = len(window) - end
        else:
            self._pending += len(chunk)
        self._last = window[-2:]
        return self._pending <= self._max


DONE = b"data: [DONE]\n\n"  # the OpenAI stream's last event


def encode(doc: Any) -> bytes:
    """One SSE event carrying ``doc`` as JSON."""
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def completion_stream(doc: dict[str, Any]) -> bytes:
    """A complete one-choice answer the sidecar wrote itself (a ``chat.completion`` or
    ``text_completion`` document: a refusal, a hand-off message) as the SSE stream a
    model would send: for chat the role, the text, the finish reason; for text
    completions the text, then the finish reason; the document's ``railwatch`` block on
    the last event, then ``[DONE]``. Every event is complete, so the stream can be
    written at once."""
    meta = {k: doc[k] for k in ("id", "created", "model")}
    choice = doc["choices"][0]
    chat = doc["object"] == "chat.completion"
    obj = "chat.completion.chunk" if chat else "text_completion"
    finish = choice["finish_reason"]

    def event(piece: dict[str, Any], reason: str | None, **extra: Any) -> bytes:
        c: dict[str, Any] = {"index": 0, **piece, "logprobs": None, "finish_reason": reason}
        return encode({**meta, "object": obj, "choices": [c], **extra})

    tail = {"railwatch": doc["railwatch"]} if "railwatch" in doc else {}
    if chat:
        parts = [event({"delta": {"role": "assistant", "content": ""}}, None),
                 event({"delta": {"content": choice["message"]["content"]}}, None),
                 event({"delta": {}}, finish, **tail)]
    else:
        parts = [event({"text": choice["text"]}, None), event({"text": ""}, finish, **tail)]
    return b"".join(parts) + DONE
