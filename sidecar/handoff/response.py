"""What the client receives when its request is handed off.

An ordinary OpenAI answer whose assistant message (``handoff.client_message``)
says a person will follow up, plus ``{"railwatch": {"handoff_id", "status",
"poll_token"}}`` in the body and the ``x-railwatch-handoff-id`` and
``x-railwatch-handoff-token`` headers, so a client can poll ``GET /v1/handoffs/{id}``
(sending the token in ``x-railwatch-handoff-token``) for the person's answer. Shapes:

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
from sidecar.sse import completion_stream

HEADER_HANDOFF_ID = "x-railwatch-handoff-id"
HEADER_HANDOFF_TOKEN = "x-railwatch-handoff-token"


def _common(
    handoff_id: str, obj: str, model: str | None, created: float | None
) -> dict[str, Any]:
    return {
        "id": f"railwatch-handoff-{handoff_id}",
        "object": obj,
        "created": int(time.time() if created is None else created),
        "model": model or "railwatch",
    }


def _railwatch(handoff_id: str, poll_token: str | None) -> dict[str, Any]:
    doc = {"handoff_id": handoff_id, "status": "pending"}
    if poll_token is not None:
        doc["poll_token"] = poll_token
    return doc


def chat_completion_body(
    handoff_id: str, message: str, *, model: str | None = None, created: float | None = None,
    poll_token: str | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` whose one choice is the hand-off message."""
    doc = _common(handoff_id, "chat.completion", model, created)
    doc["choices"] = [{
        "index": 0,
        "message": {"role": "assistant", "content": message, "refusal": None},
        "finish_reason": "stop",
        "logprobs": None,
    }]
    doc["railwatch"] = _railwatch(handoff_id, poll_token)
    return doc


def text_completion_body(
    handoff_id: str, message: str, *, model: str | None = None, created: float | None = None,
    poll_token: str | None = None,
) -> dict[str, Any]:
    """A ``text_completion`` whose one choice is the hand-off message."""
    doc = _common(handoff_id, "text_completion", model, created)
    doc["choices"] = [{"index": 0, "text": message, "finish_reason": "stop", "logprobs": None}]
    doc["railwatch"] = _railwatch(handoff_id, poll_token)
    return doc


def stream_bytes(
    route: str, handoff_id: str, message: str, *, model: str | None = None,
    created: float | None = None, poll_token: str | None = None,
) -> bytes:
    """The whole SSE answer (events and ``[DONE]``) for ``route`` ``chat`` or
    ``text_completion``: the unary body, streamed (:func:`sidecar.sse.completion_stream`)."""
    build = chat_completion_body if route == "chat" else text_completion_body
    return completion_stream(build(handoff_id, message, model=model, created=created,
                                   poll_token=poll_token))


def handoff_headers(
    handoff_id: str, trace_id: str | None = None, poll_token: str | None = None
) -> dict[str, str]:
    headers = {HEADER_HANDOFF_ID: handoff_id, "x-railwatch-decision": "handoff"}
    if poll_token is not None:
        headers[HEADER_HANDOFF_TOKEN] = poll_token
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
    poll_token: str | None = None,
) -> web.Response:
    """The complete aiohttp response for a handed-off ``chat`` / ``text_completion``."""
    headers = handoff_headers(handoff_id, trace_id, poll_token)
    if stream:
        headers["Cache-Control"] = "no-cache"
        return web.Response(
            body=stream_bytes(route, handoff_id, message, model=model, created=created,
                              poll_token=poll_token),
            content_type="text/event-stream", headers=headers,
        )
    build = chat_completion_body if route == "chat" else text_completion_body
    return web.Response(
        body=orjson.dumps(build(handoff_id, message, model=model, created=created,
                                poll_token=poll_token)),
        content_type="application/json", headers=headers,
    )
