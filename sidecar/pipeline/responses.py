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

JSON = "application/json"
HEADER_DECISION = "x-railwatch-decision"


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
    """The route's block response: an OpenAI error, or (``mode: refusal``) a refusal answer."""
    block = route.block
    ctx.attributes["railwatch.block.stage"] = stage
    ctx.decision = "block"
    if block.mode == "refusal" and ctx.route in ("chat", "text_completion") and not ctx.stream:
        ctx.status = 200
        ctx.finish_reasons = ["content_filter"]
        ctx.output_parts = [block.message]
        doc = answer_doc(
            ctx, block.message, "content_filter",
            {"blocked": True, "stage": stage, "reasons": list(decision.reasons)},
        )
        return web.Response(
            body=orjson.dumps(doc),
            content_type=JSON,
            headers={semconv.HEADER_TRACE_ID: ctx.trace_id, HEADER_DECISION: "block"},
        )
    reasons = ", ".join(decision.reasons)
    exc = GuardrailBlockedError(
        f"{block.message} (policy reasons: {reasons})" if reasons else block.message
    )
    exc.status = block.status
    ctx.output_parts = []
    response = error_response(ctx, exc)
    response.headers[HEADER_DECISION] = "block"
    return response
