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
import copy
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
from sidecar.policy import PASS, Decision, Route
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

        Attempts run one at a time (primary, retries, fallbacks, as for unary answers
        but never in parallel). Before the first byte leaves, a verdict ``retry`` or
        ``fallback`` or an upstream failure moves to the next attempt, ``block`` sends
        the block response and ``handoff`` the hand-off answer; once rounds are spent
        the route's ``then`` applies (for ``pass``, the last attempt is delivered with
        its verdicts downgraded to ``flag``). After the first byte, violations cut.
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
        if not route.output and restore is None and not strip_usage:
            return await self.forward(request, ctx, headers, payload)
        plan = attempts() if attempts is not None else [
            Attempt("primary", self.upstreams.primary, None)
        ]
        run = _GuardedRun(self, request, ctx, headers, route, masker, restore, body, strip_usage)
        skip_retries = False
        last_verdict: WindowVerdict | None = None
        last_error: RequestError | None = None
        for index, attempt in enumerate(plan):
            if attempt.kind == "retry" and skip_retries:
                continue
            remaining = [a for a in plan[index + 1:] if not (a.kind == "retry" and skip_retries)]
            deliver_anyway = not remaining and route.then == "pass"
            data = payload
            if attempt.model is not None and body is not None:
                data = orjson.dumps({**body, "model": attempt.model})
            outcome = await run.attempt(attempt, data, deliver_anyway)
            if isinstance(outcome, web.StreamResponse):
                return outcome
            if isinstance(outcome, RequestError):
                last_error, last_verdict = outcome, None
                if outcome.code == "circuit_open" or not route.retry.on_upstream_error:
                    skip_retries = True
                continue
            last_verdict, last_error = outcome, None
            if outcome.action == "fallback":
                skip_retries = True
            if outcome.action not in ("retry", "fallback"):
                break  # block or handoff: act now
        if last_verdict is None:
            if route.then == "handoff" and self.handoff is not None:
                response: web.StreamResponse = await self.handoff(
                    ctx, route, "upstream_failure", None, PASS
                )
                return response
            assert last_error is not None
            passthrough = getattr(last_error, "passthrough", None)
            if passthrough is not None:  # the upstream's own 5xx, as unary answers get it
                ctx.upstream_done_at = time.perf_counter()
                return upstream_response(ctx, *passthrough)
            raise last_error
        action = last_verdict.action
        if action in ("retry", "fallback"):
            action = route.then
            ctx.attributes["railwatch.exhausted"] = "1"
        decision = Decision(action, last_verdict.reasons)
        if action == "handoff" and self.handoff is not None:
            handed: web.StreamResponse = await self.handoff(ctx, route, "policy", None, decision)
            return handed
        return blocked_response(ctx, route, "output", decision)


_RECORD_FIELDS = ("finish_reasons", "response_id", "model_served", "system_fingerprint",
                  "first_token_at", "last_token_at", "output_parts", "decision", "status")


class _GuardedRun:
    """One guarded stream request: its attempts, each an upstream stream through a guard."""

    def __init__(self, flow: StreamFlow, request: web.Request, ctx: RequestContext,
                 headers: CIMultiDict[str], route: Route, masker: Masker,
                 restore: Callable[[str], str] | None, body: dict[str, Any] | None,
                 strip_usage: bool) -> None:
        self.flow, self.request, self.ctx, self.headers = flow, request, ctx, headers
        self.route, self.masker, self.restore, self.body = route, masker, restore, body
        self.strip_usage = strip_usage
        self.context = TextContext(
            stage="output",
            response_format=body.get("response_format") if body is not None else None,
            tools=body.get("tools") if body is not None else None,
        )

    def _guard(self, downgrade: bool, observer: StreamObserver) -> StreamGuard:
        guard, route, ctx, context = self.flow.guard, self.route, self.ctx, self.context
        assert guard is not None

        async def checker(check: WindowCheck) -> WindowVerdict:
            if not route.output:
                return WindowVerdict()
            result = await guard.run_stage(route, "output", [Segment((), check.text, context)])
            guard.record(ctx, "output", result)
            verdict = WindowVerdict.from_decision(result.decision)
            if downgrade and verdict.action in ("retry", "fallback"):
                ctx.attributes["railwatch.exhausted"] = "1"
                return WindowVerdict("flag", verdict.reasons, verdict.mask_spans)
            return verdict

        spec = route.stream
        return StreamGuard(
            checker=checker, mode=spec.mode, window_chars=spec.window_chars,
            window_tokens=spec.window_tokens, overlap_chars=spec.overlap_chars,
            max_holdback_chars=spec.max_holdback_chars, masker=self.masker,
            restore_input=self.restore is not None, strip_usage=self.strip_usage,
            observe=observer.observe_doc,
        )

    async def attempt(
        self, attempt: Attempt, payload: bytes, deliver_anyway: bool
    ) -> web.StreamResponse | WindowVerdict | RequestError:
        """Run one attempt; the response once bytes left, else what stopped it.

        The context's answer fields are restored when the attempt is discarded, so
        the trace describes only what the client got.
        """
        ctx = self.ctx
        saved = {name: copy.copy(getattr(ctx, name)) for name in _RECORD_FIELDS}
        saved_usage = copy.copy(ctx.usage)
        started = time.perf_counter()
        status = 0
        outcome: web.StreamResponse | WindowVerdict | RequestError | None = None
        breaker = attempt.upstream.breaker
        allowed = breaker.allow()
        try:
            if not allowed:
                outcome = UpstreamError("the upstream's circuit is open", code="circuit_open")
            else:
                status, outcome = await self._stream(attempt, payload, deliver_anyway)
                if isinstance(outcome, UpstreamError) or status >= 500:
                    breaker.failure()
                else:
                    breaker.success()
            return outcome
        except UpstreamError as exc:  # reading a 5xx or non-SSE body failed
            breaker.failure()
            outcome = exc
            return exc
        except BaseException:
            if allowed:
                breaker.abandon()  # cancelled: the probe, if it was one, is given back
            raise
        finally:
            if outcome is not None and not isinstance(outcome, web.StreamResponse):
                for name, value in saved.items():
                    setattr(ctx, name, value)
                ctx.usage = saved_usage
            if outcome is not None:
                ctx.attempts.append(_attempt_record(ctx, attempt, started, status, outcome))
                if attempt.kind == "retry":
                    ctx.retries += 1

    async def _stream(
        self, attempt: Attempt, payload: bytes, deliver_anyway: bool
    ) -> tuple[int, web.StreamResponse | WindowVerdict | RequestError]:
        ctx, request = self.ctx, self.request
        client = attempt.upstream.client
        try:
            resp = await client.send(ctx, request.method, request.path_qs, self.headers,
                                     payload, stream=True)
        except UpstreamError as exc:
            return 0, exc
        try:
            status = resp.status
            if status >= 500:
                raw = await client.read_body(resp)
                error = UpstreamError(f"the upstream answered {status}",
                                      code="upstream_server_error")
                error.passthrough = (status, list(resp.headers.items()), raw)  # type: ignore[attr-defined]
                return status, error
            if status != 200:
                raw = await client.read_body(resp)
                ctx.upstream_done_at = time.perf_counter()
                return status, upstream_response(ctx, status, resp.headers.items(), raw)
            if not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                # the upstream ignored "stream": check it as a unary answer
                raw = await client.read_body(resp)
                ctx.upstream_done_at = time.perf_counter()
                return status, await self._unary_answer(resp, raw, deliver_anyway)
            ctx.upstream = attempt.upstream.label
            observer = StreamObserver(ctx)
            guard = self._guard(deliver_anyway, observer)
            return status, await self._pump(resp, guard, observer)
        finally:
            resp.release()

    async def _unary_answer(
        self, resp: aiohttp.ClientResponse, raw: bytes, deliver_anyway: bool
    ) -> web.StreamResponse | WindowVerdict:
        ctx, guard = self.ctx, self.flow.guard
        assert guard is not None
        try:
            body = decode_body(raw, resp.headers.get("Content-Encoding"))
        except (ValueError, OSError):
            body = b""
        doc = observe_unary(ctx, body) if body else None
        if doc is None:
            ctx.attributes["railwatch.output.unchecked"] = "unparsed"
            return upstream_response(ctx, 200, resp.headers.items(), raw)
        decision, changed = await guard.check_output(ctx, self.route, doc, self.masker,
                                                     self.restore)
        if decision.action not in ("pass", "flag", "mask"):
            if not deliver_anyway or decision.action not in ("retry", "fallback"):
                return WindowVerdict.from_decision(decision)
            ctx.attributes["railwatch.exhausted"] = "1"
        body_out = orjson.dumps(doc) if changed else raw
        return upstream_response(ctx, 200, resp.headers.items(), body_out, decoded=changed)

    async def _pump(
        self, resp: aiohttp.ClientResponse, sg: StreamGuard, observer: StreamObserver
    ) -> web.StreamResponse | WindowVerdict | RequestError:
        """Upstream chunks through the guard to the client (prepared on the first bytes)."""
        ctx, request = self.ctx, self.request
        out: web.StreamResponse | None = None
        tail: bytes | None = None
        content = resp.content
        read: asyncio.Future[bytes] | None = None

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
        try:
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
                            if not await send(polled.data) or polled.verdict is not None:
                                _drop(read)
                                step = polled if polled.verdict is not None else None
                                break
                        chunk = await read
                        read = None
                except (TimeoutError, aiohttp.ServerTimeoutError):
                    ctx.error_type, tail = "upstream_timeout", STREAM_TIMEOUT_EVENT
                    step = await sg.close(broken=True)
                    break
                except (aiohttp.ClientError, OSError):
                    ctx.error_type, tail = "upstream_stream_broken", STREAM_BROKEN_EVENT
                    step = await sg.close(broken=True)
                    break
                if not chunk:
                    step = await sg.close()
                    break
                step = await sg.feed(chunk)  # the guard parses; the observer sees its docs
                if not await send(step.data):
                    step = None
                    break
                if step.verdict is not None:
                    break
        except BaseException:  # cancelled (the client left): stop the background work too
            if read is not None:
                _drop(read)
            sg.abort()
            raise
        ctx.upstream_done_at = time.perf_counter()
        observer.close()
        if sg.first_release_at is not None:
            ctx.first_token_at = sg.first_release_at
        if step is not None and step.before_first_byte and step.verdict is not None:
            return step.verdict  # nothing left: the caller may still retry, fall back, ...
        if out is None and tail is not None:
            # broken or stalled before anything was released: a failed attempt, not a
            # success with an empty stream (the next attempt, if any, gets its turn)
            error_type, ctx.error_type = ctx.error_type, None
            return UpstreamError("the upstream stream ended before it was complete",
                                 code=error_type or "upstream_stream_broken")
        if step is not None and step.data and not (step.verdict is not None and step.cut):
            await send(step.data)  # the last release (and [DONE]); passthrough records only
        elif step is not None and step.cut:
            await send(step.data)
        if step is not None and step.cut and step.verdict is not None:
            ctx.finish_reasons.append("content_filter")
            ctx.attributes["railwatch.stream.cut"] = "1"
            ctx.attributes["railwatch.stream.cut_action"] = step.verdict.action
            ctx.decision = "block"
        elif step is not None and step.verdict is not None:
            ctx.attributes["railwatch.stream.verdict"] = step.verdict.action  # passthrough
        if sg.late_spans:
            ctx.attributes["railwatch.stream.late_spans"] = str(sg.late_spans)
        if out is None:  # nothing at all was released (an empty stream): still answer
            await send(b"data: [DONE]\n\n")
        assert out is not None
        await finish_stream(out, ctx, tail)
        return out


def _drop(fut: asyncio.Future[Any]) -> None:
    """Cancel a future we no longer need, retrieving its exception if it already failed."""
    if fut.done():
        if not fut.cancelled():
            fut.exception()
    else:
        fut.cancel()


def _attempt_record(
    ctx: RequestContext, attempt: Attempt, started: float, status: int,
    outcome: web.StreamResponse | WindowVerdict | RequestError,
) -> AttemptRecord:
    ended = time.perf_counter()
    error = outcome.code if isinstance(outcome, RequestError) else None
    if isinstance(outcome, WindowVerdict):
        decision = outcome.action
    elif ctx.attributes.get("railwatch.stream.cut") == "1":
        decision = "block"
    else:
        decision = "pass"
    return AttemptRecord(
        kind=attempt.kind, upstream=attempt.upstream.name,
        model=attempt.model or ctx.model_requested,
        offset_ms=round((started - ctx.t0) * 1000, 4),
        duration_ms=round((ended - started) * 1000, 4),
        status=status, error=error, decision=decision,
    )
