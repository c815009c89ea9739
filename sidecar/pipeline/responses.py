"""Building the responses the sidecar itself writes: errors, blocks, refusals, unary answers.

Every function records what it sends on the context (status, error type,
finish reasons), so the trace matches what the client got.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from sidecar import semconv
from sidecar.context import RequestContext
from sidecar.errors import GuardrailBlockedError, RequestError, error_json
from sidecar.pipeline.upstream import response_headers
from sidecar.policy import Decision, Route
from sidecar.sse import completion_stream

JSON = "application/json"
SSE = "text/event-stream"
HEADER_DECISION = "x-railwatch-decision"
# A blocked *answer* is not a blocked request: the shipped message is reworded for it.
_REQUEST_BLOCKED = "The request was blocked by the content policy."
_ANSWER_BLOCKED = "The answer was withheld by the content policy."


def block_message(route: Route, stage: str) -> str:
    """The route's block message; the shipped default names the answer on the output stage."""
    message = route.block.message
    if stage == "output" and message == _REQUEST_BLOCKED:
        return _ANSWER_BLOCKED
    return message


def plain_error_response(exc: RequestError) -> web.Response:
    """``exc`` as its OpenAI-style JSON error with its status and headers, for routes
    that have no request context to record it on (hand-off, feedback, SDK ingest)."""
    return web.Response(body=error_json(exc.message, exc.error_type, exc.param, exc.code),
                        status=exc.status, content_type=JSON, headers=exc.headers or None)


def error_response(ctx: RequestContext, exc: RequestError) -> web.Response:
    ctx.fail(exc.status, exc.code)
    headers = {semconv.HEADER_TRACE_ID: ctx.trace_id, **exc.headers}
    return web.Response(
        body=error_json(exc.message, exc.error_type, exc.param, exc.code),
        status=exc.status,
        content_type=JSON,
        headers=headers,
    )


def upstream_response(
    ctx: RequestContext,
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    decoded: bool = False,
) -> web.Response:
    """An upstream answer (possibly rewritten) passed to the client with its status."""
    ctx.status = status
    if status >= 400:
        ctx.error_type = "upstream_server_error" if status >= 500 else "upstream_client_error"
    out = web.Response(body=body, status=status, headers=response_headers(headers, decoded=decoded))
    out.headers[semconv.HEADER_TRACE_ID] = ctx.trace_id
    return out


def answer_doc(ctx: RequestContext, text: str, finish_reason: str, extra: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion / text_completion body written by the sidecar itself."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
    if ctx.route == "chat":
        choice["message"] = {"role": "assistant", "content": text, "refusal": None}
        obj = "chat.completion"
    else:
        choice["text"] = text
        obj = "text_completion"
    return {
        "id": f"railwatch-{ctx.request_id[:24]}",
        "object": obj,
        "created": int(ctx.started_at),
        "model": ctx.model_served or ctx.model_requested or "railwatch",
        "choices": [choice],
        "usage": None,
        "railwatch": extra,
    }


def blocked_response(
    ctx: RequestContext, route: Route, stage: str, decision: Decision
) -> web.Response:
    """The route's block response: an OpenAI error, or (``mode: refusal``) a refusal
    answer, streamed as SSE when the request asked for a stream."""
    block = route.block
    message = block_message(route, stage)
    ctx.attributes[semconv.ATTR_BLOCK_STAGE] = stage
    ctx.override("block")
    if block.mode == "refusal" and ctx.route in ("chat", "text_completion"):
        ctx.status = 200
        ctx.finish_reasons = ["content_filter"]
        ctx.output_parts = [message]
        doc = answer_doc(
            ctx, message, "content_filter",
            {"blocked": True, "stage": stage, "reasons": list(decision.reasons)},
        )
        headers = {semconv.HEADER_TRACE_ID: ctx.trace_id, HEADER_DECISION: "block"}
        if ctx.stream:
            headers["Cache-Control"] = "no-cache"
            return web.Response(body=completion_stream(doc), content_type=SSE, headers=headers)
        return web.Response(body=orjson.dumps(doc), content_type=JSON, headers=headers)
    reasons = ", ".join(decision.reasons)
    exc = GuardrailBlockedError(
        f"{message} (policy reasons: {reasons})" if reasons else message
    )
    exc.status = block.status
    ctx.output_parts = []
    response = error_response(ctx, exc)
    response.headers[HEADER_DECISION] = "block"
    return response
