"""The streaming flow: SSE answers forwarded chunk by chunk as they arrive.

``forward`` is the lean path (no policy route): each upstream chunk is written to
the client, then observed, so observation never delays delivery. ``guarded`` is
the path of a policy route: input placeholders are restored in the stream even
when split across chunks. A broken or stalled upstream stream ends with a final
``data: {"error": ...}`` event, which the ``openai`` client raises as ``APIError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from sidecar import semconv
from sidecar.context import RequestContext
from sidecar.masking import Masker
from sidecar.pipeline.actions import UpstreamSet
from sidecar.pipeline.observe import StreamObserver, decode_body, observe_unary
from sidecar.pipeline.responses import upstream_response
from sidecar.pipeline.restore import StreamPlaceholderRestorer
from sidecar.pipeline.upstream import response_headers
from sidecar.policy import Route


def _error_event(message: str, code: str) -> bytes:
    body = {"error": {"message": message, "type": "upstream_error", "param": None, "code": code}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


STREAM_BROKEN_EVENT = _error_event(
    "the upstream stream ended before it was complete", "upstream_stream_broken"
)
STREAM_TIMEOUT_EVENT = _error_event(
    "the upstream stream stalled past the read timeout", "upstream_timeout"
)


class _Restoring:
    """Adapter giving StreamPlaceholderRestorer a ``restore`` callable."""

    def __init__(self, restore: Callable[[str], str]) -> None:
        self.restore = restore


class StreamFlow:
    def __init__(self, upstreams: UpstreamSet) -> None:
        self.upstreams = upstreams

    async def forward(
        self,
        request: web.Request,
        ctx: RequestContext,
        headers: CIMultiDict[str],
        payload: bytes,
        restore: Callable[[str], str] | None = None,
    ) -> web.StreamResponse:
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
            rewrite = StreamPlaceholderRestorer(_Restoring(restore)) if restore else None
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
                    ctx.error_type, tail = "upstream_timeout", STREAM_TIMEOUT_EVENT
                    break
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, OSError):
                    ctx.error_type, tail = "upstream_stream_broken", STREAM_BROKEN_EVENT
                    break
                if not chunk:
                    break
                if rewrite is not None:
                    observer.feed(chunk)  # sees what the upstream sent, placeholders and all
                    chunk = rewrite.feed(chunk)
                    if not chunk:
                        continue
                try:
                    await out.write(chunk)
                except ConnectionResetError:
                    ctx.client_disconnected = True
                    ctx.error_type = "client_disconnected"
                    break
                if rewrite is None:
                    observer.feed(chunk)  # after the write: observing never delays delivery
            ctx.upstream_done_at = time.perf_counter()
            observer.close()
            if rewrite is not None and not ctx.client_disconnected:
                rest = rewrite.close()
                if rest:
                    try:
                        await out.write(rest)
                    except ConnectionResetError:
                        ctx.client_disconnected = True
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

    async def guarded(
        self,
        request: web.Request,
        ctx: RequestContext,
        headers: CIMultiDict[str],
        payload: bytes,
        route: Route,
        masker: Masker,
        restore: Callable[[str], str] | None,
    ) -> web.StreamResponse:
        """A stream on a policy route: input placeholders restored across chunks."""
        return await self.forward(request, ctx, headers, payload, restore)
