"""The client's answer to a handed-off request, checked with the official openai types."""

from __future__ import annotations

import orjson
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from sidecar.handoff.response import (
    HEADER_HANDOFF_ID,
    chat_completion_body,
    handoff_response,
    stream_bytes,
    text_completion_body,
)
from sidecar.sse import SseParser

HID = "0123456789abcdef0123456789abcdef"
MESSAGE = "A person will follow up."


def test_chat_completion_body() -> None:
    body = chat_completion_body(HID, MESSAGE, model="m", created=1700000000)
    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.content == MESSAGE
    assert parsed.choices[0].finish_reason == "stop"
    assert body["railwatch"] == {"handoff_id": HID, "status": "pending"}
    assert parsed.model == "m" and parsed.created == 1700000000


def test_text_completion_body() -> None:
    body = text_completion_body(HID, MESSAGE)
    parsed = Completion.model_validate(body)
    assert parsed.choices[0].text == MESSAGE
    assert body["railwatch"]["handoff_id"] == HID


def test_chat_stream_bytes() -> None:
    raw = stream_bytes("chat", HID, MESSAGE, model="m")
    events = SseParser().feed(raw)
    assert events[-1].data == b"[DONE]"
    chunks = [ChatCompletionChunk.model_validate(orjson.loads(e.data)) for e in events[:-1]]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == MESSAGE
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert orjson.loads(events[-2].data)["railwatch"]["handoff_id"] == HID


def test_text_completion_stream_bytes() -> None:
    events = SseParser().feed(stream_bytes("text_completion", HID, MESSAGE))
    docs = [orjson.loads(e.data) for e in events[:-1]]
    assert "".join(d["choices"][0]["text"] for d in docs) == MESSAGE
    assert all(d["object"] == "text_completion" for d in docs)
    assert docs[-1]["choices"][0]["finish_reason"] == "stop"


def test_handoff_response_headers_and_types() -> None:
    unary = handoff_response("chat", HID, MESSAGE, trace_id="a" * 32)
    assert unary.headers[HEADER_HANDOFF_ID] == HID
    assert unary.headers["x-railwatch-trace-id"] == "a" * 32
    assert unary.content_type == "application/json"
    assert isinstance(unary.body, bytes)
    assert orjson.loads(unary.body)["railwatch"]["handoff_id"] == HID
    stream = handoff_response("chat", HID, MESSAGE, stream=True)
    assert stream.content_type == "text/event-stream"
    assert stream.headers[HEADER_HANDOFF_ID] == HID
