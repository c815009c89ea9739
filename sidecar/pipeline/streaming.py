"""The streaming flow: SSE answers forwarded chunk by chunk as they arrive.

``forward`` is the lean path (no policy route): each upstream chunk is written to
the client, then observed, so observation never delays delivery. ``guarded`` is
the path of a policy route: a :class:`~sidecar.pipeline.stream_guard.StreamGuard`
checks output windows, masks, restores input placeholders split across chunks,
and cuts the stream on a violation; before the first byte, a verdict can still
move to the next attempt (retry, fallback) or hand off. A broken or stalled upstream stream ends with a final
``data: {"error": ...}`` event, which the ``openai`` client raises as ``APIError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from detectors.base import TextContext
from sidecar import semconv
from sidecar.context import RequestContext
from sidecar.errors import RequestError, UpstreamError
from sidecar.masking import Masker
from sidecar.pipeline.actions import Attempt, UpstreamSet
from sidecar.pipeline.guard import Guard, Segment
from sidecar.pipeline.observe import StreamObserver, decode_body, observe_unary
from sidecar.pipeline.responses import blocked_response, upstream_response
from sidecar.pipeline.stream_guard import StreamGuard, StreamStep, WindowCheck, WindowVerdict
from sidecar.pipeline.upstream import response_headers
from sidecar.policy import Decision, Route
from sidecar.record import AttemptRecord


def _error_event(message: str, code: str) -> bytes:
    body = {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


STREAM_BROKEN_EVENT = _error_event(
    "the upstream stream ended before it was complete", "upstream_stream_broken"
)
STREAM_TIMEOUT_EVENT = _error_event(
    "the upstream stream stalled past the read timeout", "upstream_timeout"
)


async def finish_stream(out: web.StreamResponse, ctx: RequestContext, tail: bytes | None) -> None:
    """Write the final error event (if any) and end the response, unless the client left."""
    if ctx.client_disconnected:
        return
    try:
        if tail is not None:
            await out.write(tail)
        await out.write_eof()
    except ConnectionResetError:
        ctx.client_disconnected = True


class StreamFlow:
    def __init__(self, upstreams: UpstreamSet, guard: Guard | None = None,
                 stream_usage: bool = True) -> None:
        self.upstreams = upstreams
        self.guard = guard
        self.stream_usage = stream_usage  # ask upstreams for usage in streams
        self.handoff: Any = None  # HandoffHook, set with the hand-off service

    async def forward(
        self,
        request: web.Request,
        ctx: RequestContext,
        headers: CIMultiDict[str],
        payload: bytes,
    ) -> web.StreamResponse:
        """The lean path: bytes go to the client as they arrive, then are observed."""
        client = self.upstreams.primary.client
        resp = await client.send(ctx, request.method, request.path_qs, headers, payload,
                                 stream=True)
        try:
            ctype = resp.headers.get("Content-Type", "")
            if resp.status != 200 or not ctype.startswith("text/event-stream"):
                # An error, or a server that ignored "stream": pass the body through whole.
                raw = await client.read_body(resp)
                ctx.upstream_done_at = time.perf_counter()
                if resp.status == 200:
                    try:
                        observe_unary(ctx, decode_body(raw, resp.headers.get("Content-Encoding")))
                    except (ValueError, OSError):
                        pass
                return upstream_response(ctx, resp.status, resp.headers.items(), raw)
            out = web.StreamResponse(
                status=200, headers=response_headers(resp.headers.items(), decoded=False)
            )
            out.headers[semconv.HEADER_TRACE_ID] = ctx.trace_id
            await out.prepare(request)
            ctx.status = 200
            observer = StreamObserver(ctx)
            content = resp.content
            tail: bytes | None = None
            while True:
                try:
                    chunk = await content.readany()
                except (TimeoutError, aiohttp.ServerTimeoutError):
                    ctx.error_type, tail = "upstream_timeout", STREAM_TIMEOUT_EVENT
                    break
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, OSError):
                    ctx.error_type, tail = "upstream_stream_broken", STREAM_BROKEN_EVENT
                    break
                if not chunk:
                    break
                try:
                    await out.write(chunk)
                except ConnectionResetError:
                    ctx.client_disconnected = True
                    ctx.error_type = "client_disconnected"
                    break
                observer.feed(chunk)  # after the write: observing never delays delivery
            ctx.upstream_done_at = time.perf_counter()
            observer.close()
            await finish_stream(out, ctx, tail)
            return out
        finally:
            resp.release()

    async def guarded(
        self,
        request: web.Request,
        ctx: RequestContext,
        headers: CIMultiDict[str],
        payload: bytes,
        route: Route,
        masker: Masker,
        restore: Callable[[str], str] | None,
        body: dict[str, Any] | None = None,
        attempts: Callable[[], list[Attempt]] | None = None,
    ) -> web.StreamResponse:
        """A stream on a policy route, checked in windows by the output detectors.

        Before the first byte leaves, a window verdict ``retry``/``fallback`` moves to
        the next attempt (another stream); ``block`` sends the block response and
        ``handoff`` the hand-off answer. After it, violations cut the stream.
        """
        guard = self.guard
        assert guard is not None
        strip_usage = False
        if body is not None and self.stream_usage and ctx.route in ("chat", "text_completion"):
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                body = {**body, "stream_options": {**(options or {}), "include_usage": True}}
                payload = orjson.dumps(body)
                strip_usage = True  # usage is always known; the client gets what it asked for
        rules_out = bool(route.output)
        if not rules_out and restore is None and not strip_usage:
            return await self.forward(request, ctx, headers, payload)
        context = TextContext(
            stage="output",
            response_format=(body or {}).get("response_format") if body else None,
        )

        async def checker(check: WindowCheck) -> WindowVerdict:
            if not rules_out:
                return WindowVerdict()
            result = await guard.run_stage(route, "output", [Segment((), check.text, context)])
            guard.record(ctx, "output", result)
            return WindowVerdict.from_decision(result.decision)

        plan = attempts() if attempts is not None else [Attempt("primary", self.upstreams.primary, None)]
        last_verdict: WindowVerdict | None = None
        for index, attempt in enumerate(plan):
            if attempt.kind == "retry" and last_verdict is not None and last_verdict.action == "fallback":
                continue  # a fallback verdict skips the remaining retries
            sg = StreamGuard(
                checker=checker, mode=route.stream.mode, window_chars=route.stream.window_chars,
                window_tokens=route.stream.window_tokens, overlap_chars=route.stream.overlap_chars,
                max_holdback_chars=route.stream.max_holdback_chars, masker=masker,
                restore_input=restore is not None, strip_usage=strip_usage,
            )
            data = payload
            if attempt.model is not None and body is not None:
                data = orjson.dumps({**body, "model": attempt.model})
            started = time.perf_counter()
            outcome = await self._guarded_attempt(request, ctx, headers, data, attempt, sg)
            ctx.attempts.append(_attempt_record(ctx, attempt, started, outcome))
            if attempt.kind == "retry":
                ctx.retries += 1
            if isinstance(outcome, web.StreamResponse):
                return outcome
            if isinstance(outcome, RequestError):
                last_error = outcome
                last_verdict = None
                if index == len(plan) - 1:
                    raise last_error
                continue
            last_verdict = outcome
            if outcome.action in ("retry", "fallback") and index < len(plan) - 1:
                continue
            action = outcome.action
            if action in ("retry", "fallback"):
                action = route.then
                ctx.attributes["railwatch.exhausted"] = "1"
            decision = Decision(action, outcome.reasons)
            if action == "handoff" and self.handoff is not None:
                response: web.StreamResponse = await self.handoff(ctx, route, "policy", None,
                                                                  decision)
                return response
            if action == "pass":
                ctx.decision = "flag"
                continue  # nothing better to send: fall through to the error below
            return blocked_response(ctx, route, "output", decision)
        raise UpstreamError("no upstream answer passed the output checks", code="exhausted")

    async def _guarded_attempt(
        self,
        request: web.Request,
        ctx: RequestContext,
        headers: CIMultiDict[str],
        payload: bytes,
        attempt: Attempt,
        sg: StreamGuard,
    ) -> web.StreamResponse | WindowVerdict | RequestError:
        """One upstream stream through the guard. Returns the response once bytes left,
        the verdict that stopped it before the first byte, or the upstream error."""
        client = attempt.upstream.client
        breaker = attempt.upstream.breaker
        if not breaker.allow():
            return UpstreamError("the upstream's circuit is open", code="circuit_open")
        try:
            resp = await client.send(ctx, request.method, request.path_qs, headers, payload,
                                     stream=True)
        except UpstreamError as exc:
            breaker.failure()
            return exc
        try:
            ctype = resp.headers.get("Content-Type", "")
            if resp.status >= 500:
                breaker.failure()
                await client.read_body(resp)
                return UpstreamError(f"the upstream answered {resp.status}",
                                     code="upstream_server_error")
            breaker.success()
            if resp.status != 200 or not ctype.startswith("text/event-stream"):
                raw = await client.read_body(resp)
                ctx.upstream_done_at = time.perf_counter()
                return upstream_response(ctx, resp.status, resp.headers.items(), raw)
            ctx.upstream = attempt.upstream.label
            observer = StreamObserver(ctx)
            out: web.StreamResponse | None = None
            tail: bytes | None = None
            content = resp.content

            async def send(data: bytes) -> bool:
                nonlocal out
                if not data:
                    return True
                if out is None:
                    out = web.StreamResponse(
                        status=200, headers=response_headers(resp.headers.items(), decoded=False)
                    )
                    out.headers[semconv.HEADER_TRACE_ID] = ctx.trace_id
                    await out.prepare(request)
                    ctx.status = 200
                try:
                    await out.write(data)
                except ConnectionResetError:
                    ctx.client_disconnected = True
                    ctx.error_type = "client_disconnected"
                    sg.abort()
                    return False
                return True

            step: StreamStep | None = None
            while True:
                try:
                    if sg.in_flight is None:
                        chunk = await content.readany()
                    else:  # release what a background check clears as soon as it does
                        read = asyncio.ensure_future(content.readany())
                        pending: set[asyncio.Future[Any]] = {read, sg.in_flight}
                        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                        if not read.done():
                            polled = await sg.poll()
                            if not await send(polled.data):
                                read.cancel()
                                break
                            if polled.verdict is not None:
                                read.cancel()
                                step = polled
                                break
                        chunk = await read
                except (TimeoutError, aiohttp.ServerTimeoutError):
                    ctx.error_type, tail = "upstream_timeout", STREAM_TIMEOUT_EVENT
                    step = await sg.close(broken=True)
                    break
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, OSError):
                    ctx.error_type, tail = "upstream_stream_broken", STREAM_BROKEN_EVENT
                    step = await sg.close(broken=True)
                    break
                if not chunk:
                    step = await sg.close()
                    break
                observer.feed(chunk)
                step = await sg.feed(chunk)
                if not await send(step.data):
                    step = None
                    break
                if step.verdict is not None:
                    break
            ctx.upstream_done_at = time.perf_counter()
            observer.close()
            if sg.first_release_at is not None:
                ctx.first_token_at = sg.first_release_at
            if step is not None and step.verdict is not None and step.before_first_byte:
                ctx.output_parts = []
                return step.verdict
            if step is not None and step.data and step.verdict is None:
                await send(step.data)
            if step is not None and step.cut and step.verdict is not None:
                ctx.finish_reasons.append("content_filter")
                ctx.attributes["railwatch.stream.cut"] = "1"
                ctx.decision = "block" if step.verdict.action != "pass" else ctx.decision
            if sg.late_spans:
                ctx.attributes["railwatch.stream.late_spans"] = str(sg.late_spans)
            if out is None:  # nothing at all was released (empty stream): still answer
                await send(b"data: [DONE]\n\n")
            assert out is not None
            await finish_stream(out, ctx, tail)
            return out
        finally:
            resp.release()


def _attempt_record(
    ctx: RequestContext, attempt: Attempt, started: float,
    outcome: web.StreamResponse | WindowVerdict | RequestError,
) -> AttemptRecord:
    ended = time.perf_counter()
    error = outcome.code if isinstance(outcome, RequestError) else None
    decision = outcome.action if isinstance(outcome, WindowVerdict) else "pass"
    return AttemptRecord(
        kind=attempt.kind, upstream=attempt.upstream.name,
        model=attempt.model or ctx.model_requested,
        offset_ms=round((started - ctx.t0) * 1000, 4),
        duration_ms=round((ended - started) * 1000, 4),
        status=ctx.status if isinstance(outcome, web.StreamResponse) else 0,
        error=error, decision=decision,
    )
