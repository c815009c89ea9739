"""What the client receives when its request is handed off.

An ordinary OpenAI answer whose assistant message (``handoff.client_message``)
says a person will follow up, plus ``{"railwatch": {"handoff_id", "status"}}`` in
the body and the ``x-railwatch-handoff-id`` header, so a client can poll
``GET /v1/handoffs/{id}`` for the person's answer. Shapes:

- ``chat``: a ``chat.completion`` (or, streaming, ``chat.completion.chunk`` events);
- ``text_completion``: a ``text_completion`` (streamed as the same object per event).

Streams end with ``data: [DONE]``; every event is complete, so the whole answer
can be written at once (a hand-off happens before the first byte left).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from sidecar import semconv

HEADER_HANDOFF_ID = "x-railwatch-handoff-id"
_SSE_DONE = b"data: [DONE]\n\n"


def _common(
    handoff_id: str, obj: str, model: str | None, created: float | None
) -> dict[str, Any]:
    return {
        "id": f"railwatch-handoff-{handoff_id}",
        "object": obj,
        "created": int(time.time() if created is None else created),
        "model": model or "railwatch",
    }


def _railwatch(handoff_id: str) -> dict[str, Any]:
    return {"handoff_id": handoff_id, "status": "pending"}


def chat_completion_body(
    handoff_id: str, message: str, *, model: str | None = None, created: float | None = None
) -> dict[str, Any]:
    """A ``chat.completion`` whose one choice is the hand-off message."""
    doc = _common(handoff_id, "chat.completion", model, created)
    doc["choices"] = [{
        "index": 0,
        "message": {"role": "assistant", "content": message, "refusal": None},
        "finish_reason": "stop",
        "logprobs": None,
    }]
    doc["railwatch"] = _railwatch(handoff_id)
    return doc


def text_completion_body(
    handoff_id: str, message: str, *, model: str | None = None, created: float | None = None
) -> dict[str, Any]:
    """A ``text_completion`` whose one choice is the hand-off message."""
    doc = _common(handoff_id, "text_completion", model, created)
    doc["choices"] = [{"index": 0, "text": message, "finish_reason": "stop", "logprobs": None}]
    doc["railwatch"] = _railwatch(handoff_id)
    return doc


def stream_bytes(
    route: str, handoff_id: str, message: str, *, model: str | None = None,
    created: float | None = None,
) -> bytes:
    """The whole SSE answer (events and ``[DONE]``) for ``route`` ``chat`` or
    ``text_completion``."""
    events: list[dict[str, Any]] = []
    if route == "chat":
        base = _common(handoff_id, "chat.completion.chunk", model, created)
        deltas: list[tuple[dict[str, Any], str | None]] = [
            ({"role": "assistant", "content": ""}, None),
            ({"content": message}, None),
            ({}, "stop"),
        ]
        for delta, finish in deltas:
            events.append({**base, "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]})
    else:
        base = _common(handoff_id, "text_completion", model, created)
        for text, finish in ((message, None), ("", "stop")):
            events.append({**base, "choices": [
                {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]})
    events[-1]["railwatch"] = _railwatch(handoff_id)
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + _SSE_DONE


def handoff_headers(handoff_id: str, trace_id: str | None = None) -> dict[str, str]:
    headers = {HEADER_HANDOFF_ID: handoff_id, "x-railwatch-decision": "handoff"}
    if trace_id is not None:
        headers[semconv.HEADER_TRACE_ID] = trace_id
    return headers


def handoff_response(
    route: str,
    handoff_id: str,
    message: str,
    *,
    stream: bool = False,
    model: str | None = None,
    trace_id: str | None = None,
    created: float | None = None,
) -> web.Response:
    """The complete aiohttp response for a handed-off ``chat`` / ``text_completion``."""
    headers = handoff_headers(handoff_id, trace_id)
    if stream:
        headers["Cache-Control"] = "no-cache"
        return web.Response(
            body=stream_bytes(route, handoff_id, message, model=model, created=created),
            content_type="text/event-stream", headers=headers,
        )
    build = chat_completion_body if route == "chat" else text_completion_body
    return web.Response(
        body=orjson.dumps(build(handoff_id, message, model=model, created=created)),
        content_type="application/json", headers=headers,
    )
