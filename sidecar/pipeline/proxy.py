"""The request pipeline: ingress -> input guard -> upstream -> output guard -> client -> emit.

One :class:`Proxy` serves every request. Each request gets its own
:class:`~sidecar.context.RequestContext`; the stages fill it and the emit stage
freezes it into a trace record in ``finally``, so every request (errors, overload
and client disconnects included) leaves exactly one record.

Streams go straight through: each upstream chunk is written to the client as it
arrives, then observed (never buffered, never delayed by observation). A client
that disconnects cancels the handler (``handler_cancellation``), which releases
the upstream response and so closes the upstream connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from sidecar import semconv
from sidecar.context import RequestContext
from sidecar.errors import OverloadedError, RequestError, UpstreamTimeoutError, error_json
from sidecar.pipeline import ingress
from sidecar.pipeline.emit import Emitter
from sidecar.pipeline.observe import StreamObserver, decode_body, observe_unary
from sidecar.pipeline.upstream import UpstreamClient, forward_request_headers, response_headers
from sidecar.settings import ServerSettings
from sidecar.tracecontext import new_span_id, new_trace_id, parse_traceparent

logger = logging.getLogger(__name__)

_JSON = "application/json"
_STREAM_BROKEN_EVENT = b"data: " + orjson.dumps(
    {
        "error": {
            "message": "the upstream stream ended before it was complete",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_stream_broken",
        }
    }
) + b"\n\n"
_STREAM_TIMEOUT_EVENT = b"data: " + orjson.dumps(
    {
        "error": {
            "message": "the upstream stream stalled past the read timeout",
            "type": "upstream_error",
            "param": None,
            "code": "upstream_timeout",
        }
    }
) + b"\n\n"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def public_url(url: str) -> str:
    """The URL without user info, safe for records and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Proxy:
    def __init__(
        self, server: ServerSettings, upstream: UpstreamClient, emitter: Emitter
    ) -> None:
        self.server = server
        self.upstream = upstream
        self.emitter = emitter
        self.in_flight = 0
        self._upstream_label = public_url(upstream.base_url)
        self._overloaded_headers = {"Retry-After": str(server.retry_after_s)}

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
            path=request.path,
            route=route,
            upstream=self._upstream_label,
        )
        ctx.tenant = headers.get(semconv.HEADER_TENANT)
        ctx.conversation_id = headers.get(semconv.HEADER_CONVERSATION)
        return ctx

    def _finish(self, ctx: RequestContext) -> None:
        ctx.ended_at = time.perf_counter()
        self.emitter.emit(ctx)

    def error_response(self, ctx: RequestContext, exc: RequestError) -> web.Response:
        ctx.fail(exc.status, exc.code)
        headers = {semconv.HEADER_TRACE_ID: ctx.trace_id, **exc.headers}
        return web.Response(
            body=error_json(exc.message, exc.error_type, exc.param, exc.code),
            status=exc.status,
            content_type=_JSON,
            headers=headers,
        )

    async def _guarded(
        self,
        request: web.Request,
        route: str,
        run: Callable[[web.Request, RequestContext], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Shared envelope: in-flight limit, errors, cancellation, and the trace record."""
        ctx = self.begin(request, route)
        if self.in_flight >= self.server.max_in_flight:
            response = self.error_response(
                ctx,
                OverloadedError(
                    "too many requests in flight; retry later", headers=self._overloaded_headers
                ),
            )
            self._finish(ctx)
            return response
        self.in_flight += 1
        try:
            try:
                return await run(request, ctx)
            except RequestError as exc:
                if ctx.status and ctx.status < 400 and ctx.error_type is None:
                    raise  # response already started: nothing more can be sent
                return self.error_response(ctx, exc)
        except asyncio.CancelledError:
            ctx.client_disconnected = True
            if not ctx.status:
                ctx.fail(499, "client_disconnected")  # nginx's "client closed request"
            raise
        finally:
            self.in_flight -= 1
            self._finish(ctx)

    # --- OpenAI routes --------------------------------------------------------------------

    def openai_handler(self, route: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._guarded(request, route, self._openai)

        return handle

    async def _openai(self, request: web.Request, ctx: RequestContext) -> web.StreamResponse:
        raw, _body = await ingress.parse_request(request, ctx, self.server.max_body_bytes)
        headers = forward_request_headers(request.headers, ctx, inspect=True)
        if ctx.stream:
            return await self._forward_stream(request, ctx, headers, raw)
        return await self._forward_unary(request, ctx, headers, raw, inspect=True)

    async def _forward_unary(
        self,
        request: web.Request,
        ctx: RequestContext,
        headers: CIMultiDict[str],
        payload: bytes | None,
        *,
        inspect: bool,
    ) -> web.Response:
        resp = await self.upstream.send(
            ctx, request.method, request.path_qs, headers, payload, stream=False
        )
        try:
            raw = await self.upstream.read_body(resp)
        finally:
            resp.release()
        ctx.upstream_done_at = time.perf_counter()
        return self._unary_response(ctx, resp, raw, inspect=inspect)

    def _unary_response(
        self, ctx: RequestContext, resp: aiohttp.ClientResponse, raw: bytes, *, inspect: bool
    ) -> web.Response:
        status = resp.status
        ctx.status = status
        if status >= 400:
            ctx.error_type = "upstream_server_error" if status >= 500 else "upstream_client_error"
        elif inspect:
            try:
                body = decode_body(raw, resp.headers.get("Content-Encoding"))
            except (ValueError, OSError):
                body = b""
            if body:
                observe_unary(ctx, body)
        out = web.Response(
            body=raw, status=status, headers=response_headers(resp.headers.items(), decoded=False)
        )
        out.headers[semconv.HEADER_TRACE_ID] = ctx.trace_id
        return out

    async def _forward_stream(
        self,
        request: web.Request,
        ctx: RequestContext,
        headers: CIMultiDict[str],
        payload: bytes,
    ) -> web.StreamResponse:
        resp = await self.upstream.send(
            ctx, request.method, request.path_qs, headers, payload, stream=True
        )
        try:
            ctype = resp.headers.get("Content-Type", "")
            if resp.status != 200 or not ctype.startswith("text/event-stream"):
                # An error, or a server that ignored "stream": pass the body through whole.
                raw = await self.upstream.read_body(resp)
                ctx.upstream_done_at = time.perf_counter()
                return self._unary_response(ctx, resp, raw, inspect=True)
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
                except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
                    ctx.error_type, tail = UpstreamTimeoutError.code, _STREAM_TIMEOUT_EVENT
                    break
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, OSError):
                    ctx.error_type, tail = "upstream_stream_broken", _STREAM_BROKEN_EVENT
                    break
                if not chunk:
                    break
                try:
                    await out.write(chunk)
                except ConnectionResetError:
                    ctx.client_disconnected = True
                    ctx.error_type = "client_disconnected"
                    break
                observer.feed(chunk)
            ctx.upstream_done_at = time.perf_counter()
            observer.close()
            if not ctx.client_disconnected:
                try:
                    if tail is not None:
                        await out.write(tail)
                    await out.write_eof()
                except ConnectionResetError:
                    ctx.client_disconnected = True
            return out
        finally:
            resp.release()

    # --- everything else --------------------------------------------------------------------

    def passthrough_handler(self, route: str = semconv.OP_PASSTHROUGH) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._guarded(request, route, self._passthrough)

        return handle

    async def _passthrough(self, request: web.Request, ctx: RequestContext) -> web.StreamResponse:
        """Forward any method and path untouched; stream the answer back as it comes."""
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
            content = resp.content
            while True:
                try:
                    chunk = await content.readany()
                except (asyncio.TimeoutError, aiohttp.ClientError, OSError):
                    ctx.error_type = "upstream_stream_broken"
                    break
                if not chunk:
                    break
                try:
                    await out.write(chunk)
                except ConnectionResetError:
                    ctx.client_disconnected = True
                    ctx.error_type = "client_disconnected"
                    break
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
