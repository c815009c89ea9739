"""The request envelope and the pass-through route.

One :class:`Proxy` serves every request. Each request gets its own
:class:`~sidecar.context.RequestContext`; the envelope (:meth:`Proxy._guarded`)
applies the in-flight limit, turns :class:`RequestError` into OpenAI-shaped error
responses, notes client disconnects, and freezes the context into a trace record
in ``finally``, so every request (errors, overload and disconnects included)
leaves exactly one record. The OpenAI routes run
:class:`~sidecar.pipeline.completions.CompletionFlow`; every other path and method
is forwarded untouched by :meth:`Proxy._passthrough`, streamed back as it comes.

A client that disconnects cancels the handler (``handler_cancellation``), which
releases the upstream response and so closes the upstream connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sidecar import semconv
from sidecar.context import RequestContext
from sidecar.errors import BadRequestError, OverloadedError, RequestError
from sidecar.feedback import ImplicitSignals
from sidecar.handoff.service import HandoffService
from sidecar.pipeline import ingress
from sidecar.pipeline.ingress import GUARDED_PATHS, canonical_path
from sidecar.pipeline.actions import UpstreamSet
from sidecar.pipeline.completions import CompletionFlow
from sidecar.pipeline.emit import Emitter
from sidecar.pipeline.guard import Guard
from sidecar.pipeline.inflight import InFlight
from sidecar.pipeline.relay import BROKEN, CLIENT_GONE, relay
from sidecar.pipeline.responses import error_response
from sidecar.pipeline.streaming import StreamFlow
from sidecar.pipeline.upstream import forward_request_headers, response_headers
from sidecar.ratelimit import RateLimiter
from sidecar.settings import ServerSettings
from sidecar.tracecontext import new_span_id, new_trace_id, parse_traceparent

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _label_header(value: str | None, limit: int = 256) -> str | None:
    """A header used as a label (tenant, conversation): printable UTF-8 of bounded size,
    else ignored. Undecodable bytes would otherwise reach storage and fail a whole batch."""
    if value is None or len(value) > limit or not value.isprintable():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 header
        return None
    return value


class Proxy:
    def __init__(
        self,
        server: ServerSettings,
        upstreams: UpstreamSet,
        emitter: Emitter,
        guard: Guard | None = None,
        limiter: RateLimiter | None = None,
        *,
        signals: ImplicitSignals | None = None,
        handoff: HandoffService | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        self.server = server
        self.limiter = limiter
        self.upstreams = upstreams
        self.upstream = upstreams.primary.client
        self.emitter = emitter
        self.guard = guard
        self.streams = StreamFlow(upstreams, guard, upstreams.primary.client.settings.stream_usage)
        self.completions = CompletionFlow(server, upstreams, guard, self.streams, handoff)
        self._in_flight = in_flight if in_flight is not None else InFlight()
        self._upstream_label = upstreams.primary.label
        self.signals = signals  # regeneration, abandonment, turns
        self._overloaded_headers = {"Retry-After": str(server.retry_after_s)}

    @property
    def in_flight(self) -> int:
        """Requests in flight now (their bodies read, not yet answered)."""
        return self._in_flight.count

    # --- context --------------------------------------------------------------------------

    def begin(self, request: web.Request, route: str) -> RequestContext:
        headers = request.headers
        parent = parse_traceparent(headers.get(semconv.HEADER_TRACEPARENT))
        if parent is None:
            trace_id, parent_span, flags = new_trace_id(), None, "01"
        else:
            trace_id, parent_span, flags = parent
        span_id = new_span_id()
        ctx = RequestContext(
            request_id=new_trace_id(),
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent_span,
            trace_flags=flags,
            method=request.method,
            path=request.path if request.path.isprintable() else "",  # refused: kept out
            route=route,
            upstream=self._upstream_label,
        )
        ctx.tenant = _label_header(headers.get(semconv.HEADER_TENANT))
        ctx.conversation_id = _label_header(headers.get(semconv.HEADER_CONVERSATION))
        return ctx

    def _finish(self, ctx: RequestContext) -> None:
        ctx.ended_at = time.perf_counter()
        if self.signals is not None and ctx.body is not None:
            try:
                ctx.attributes.update(self._signals(ctx))
            except Exception:
                logger.exception("implicit signals failed for request %s", ctx.request_id)
        self.emitter.emit(ctx)

    def _signals(self, ctx: RequestContext) -> dict[str, str]:
        from sidecar.feedback import prompt_hash

        messages = ctx.body.get("messages") if ctx.body is not None else None
        assert self.signals is not None
        return self.signals.observe(
            user=ctx.user,
            conversation_id=ctx.conversation_id,
            prompt_hash=prompt_hash(ctx.body),
            client_disconnected=ctx.client_disconnected and ctx.stream,
            message_count=len(messages) if isinstance(messages, list) else 1,
            trace_id=ctx.trace_id,
        )

    def error_response(self, ctx: RequestContext, exc: RequestError) -> web.Response:
        return error_response(ctx, exc)

    def _refuse(self, ctx: RequestContext, exc: RequestError) -> web.Response:
        """Answer before any work (rate limit, overload); the refusal is traced."""
        response = self.error_response(ctx, exc)
        self._finish(ctx)
        return response

    async def _guarded(
        self,
        request: web.Request,
        route: str,
        run: Callable[[web.Request, RequestContext], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Shared envelope: body, in-flight limit, errors, cancellation, the trace record.

        The body is read first (within ``server.body_timeout_s``): a request counts as
        in flight only once it is in, so clients that stall mid-body hold no slot.
        """
        ctx = self.begin(request, route)
        if self.limiter is not None:  # before the body: a flood costs the least
            refused = self.limiter.check(
                route, client=request.remote, headers=request.headers, tenant=ctx.tenant
            )
            if refused is not None:
                ctx.attributes[semconv.RAILWATCH_RATE_LIMIT_DIMENSION] = refused.dimension
                response = self._refuse(ctx, refused)
                if request.body_exists:
                    response.force_close()  # the body is not read
                return response
        try:
            if request.body_exists:
                await ingress.read_body(request, self.server.max_body_bytes)
        except RequestError as exc:
            response = self.error_response(ctx, exc)
            response.force_close()  # the rest of the body is not read
            self._finish(ctx)
            return response
        except asyncio.CancelledError:
            ctx.client_disconnected = True
            ctx.fail(499, "client_disconnected")
            self._finish(ctx)
            raise
        if self._in_flight.count >= self.server.max_in_flight:
            return self._refuse(ctx, OverloadedError(
                "too many requests in flight; retry later", headers=self._overloaded_headers
            ))
        self._in_flight.count += 1
        try:
            try:
                return await run(request, ctx)
            except RequestError as exc:
                if ctx.status and ctx.status < 400 and ctx.error_type is None:
                    raise  # response already started: nothing more can be sent
                return self.error_response(ctx, exc)
        except Exception as exc:  # a bug: the HTTP layer logs its traceback and answers 500
            if not isinstance(exc, RequestError):
                if ctx.status:  # the answer had started: the client gets a cut body
                    ctx.error_type = "internal_error"
                else:
                    ctx.fail(500, "internal_error")
            raise
        except asyncio.CancelledError:
            ctx.client_disconnected = True
            if not ctx.status:
                ctx.fail(499, "client_disconnected")  # nginx's "client closed request"
            elif ctx.error_type is None:
                ctx.error_type = "client_disconnected"  # gone mid-stream
            raise
        finally:
            self._in_flight.count -= 1
            self._finish(ctx)

    def reject(self, status: int, code: str) -> None:
        """Trace a request the HTTP layer refused before any handler saw it (a malformed
        request line or header, a header deadline): no method, path or header is kept."""
        ctx = RequestContext(
            request_id=new_trace_id(), trace_id=new_trace_id(), span_id=new_span_id(),
            parent_span_id=None, trace_flags="01", method="", path="",
            route=semconv.OP_PASSTHROUGH, upstream=self._upstream_label,
        )
        ctx.fail(status, code)
        self._finish(ctx)

    # --- OpenAI routes --------------------------------------------------------------------

    def openai_handler(self, route: str) -> Handler:
        flow = self.completions

        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._guarded(request, route, flow.handle)

        return handle

    # --- everything else --------------------------------------------------------------------

    def passthrough_handler(self, route: str = semconv.OP_PASSTHROUGH) -> Handler:
        flow = self.completions

        async def handle(request: web.Request) -> web.StreamResponse:
            if request.method == "POST":
                # "//v1/chat/completions/", "/V1/chat/completions": servers that normalise
                # paths would answer them as the real route, so they get its guardrails
                op = GUARDED_PATHS.get(canonical_path(request.path))
                if op is not None:
                    return await self._guarded(request, op, flow.handle)
            return await self._guarded(request, route, self._passthrough)

        return handle

    async def _passthrough(self, request: web.Request, ctx: RequestContext) -> web.StreamResponse:
        """Forward any method and path untouched; stream the answer back as it comes.

        A path holding control characters once decoded (``%0a``: header injection
        upstream) is refused with 400 ``invalid_path``."""
        if not request.path.isprintable():
            raise BadRequestError("the request path is not valid", code="invalid_path")
        payload: bytes | None = None
        if request.body_exists:
            payload = await ingress.read_body(request, self.server.max_body_bytes)
        headers = forward_request_headers(request.headers, ctx, inspect=False)
        resp = await self.upstream.send(
            ctx, request.method, request.path_qs, headers, payload, stream=True
        )
        try:
            ctx.status = resp.status
            if resp.status >= 400:
                ctx.error_type = (
                    "upstream_server_error" if resp.status >= 500 else "upstream_client_error"
                )
            out = web.StreamResponse(
                status=resp.status, headers=response_headers(resp.headers.items(), decoded=False)
            )
            out.headers[semconv.HEADER_TRACE_ID] = ctx.trace_id
            await out.prepare(request)
            stopped = await relay(resp.content, out, ctx)
            if stopped is not None:  # a stalled pass-through body is a broken one here
                ctx.error_type = stopped if stopped == CLIENT_GONE else BROKEN
            ctx.upstream_done_at = time.perf_counter()
            if ctx.error_type == "upstream_stream_broken" and request.transport is not None:
                # Cut the connection so the client sees a truncated body, not a complete one.
                request.transport.close()
            elif not ctx.client_disconnected:
                try:
                    await out.write_eof()
                except ConnectionResetError:
                    ctx.client_disconnected = True
            return out
        finally:
            resp.release()

    def state(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight, "max_in_flight": self.server.max_in_flight}
