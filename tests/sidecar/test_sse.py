"""The incremental SSE parser: events split across network chunks at every byte."""

from __future__ import annotations

import pytest

from sidecar.sse import SseEvent, SseParser

STREAM = (
    b": keep-alive comment\n\n"
    b'data: {"a": 1}\n\n'
    b"event: note\nid: 7\ndata: line one\ndata: line two\n\n"
    b'data: {"b": "x\xc3\xa9y"}\r\n\r\n'
    b"data:no-space\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    SseEvent(b'{"a": 1}'),
    SseEvent(b"line one\nline two", "note", "7"),
    SseEvent(b'{"b": "x\xc3\xa9y"}', None, "7"),
    SseEvent(b"no-space", None, "7"),
    SseEvent(b"[DONE]", None, "7"),
]


def test_whole_stream_in_one_chunk() -> None:
    assert SseParser().feed(STREAM) == EXPECTED


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_split_at_every_byte(split: int) -> None:
    p = SseParser()
    events = p.feed(STREAM[:split]) + p.feed(STREAM[split:])
    assert events == EXPECTED


def test_byte_by_byte() -> None:
    p = SseParser()
    events = []
    for i in range(len(STREAM)):
        events += p.feed(STREAM[i : i + 1])
    assert events == EXPECTED


def test_unterminated_final_event_is_delivered_on_close() -> None:
    p = SseParser()
    assert p.feed(b"data: tail") == []
    assert p.close() == [SseEvent(b"tail")]
    assert p.close() == []


def test_runaway_line_is_dropped_not_buffered() -> None:
    p = SseParser(max_event_bytes=16)
    assert p.feed(b"data: " + b"x" * 100) == []
    assert p.feed(b"\n\ndata: ok\n\n") == [SseEvent(b"ok")]
