"""The guarded stream's pump: upstream chunks through a stream guard to the client.

:func:`pump` reads the upstream body, feeds the
:class:`~sidecar.pipeline.stream_guard.StreamGuard`, and writes what it releases.
It races each read with the guard's check in flight (text a background check
clears goes out the moment it does) and with the guard's clock (held text is
checked and released once it waited ``max_hold_ms``, even while the upstream is
silent), so a stream keeps streaming.

The client's response is prepared on the first released bytes (so a verdict
before them can still retry, fall back or hand off), or at once with
``early_headers``. Tokens are timed where the client sees them: each write that
carries released output marks the context (``first_token_at``/``last_token_at``).

A broken or stalled upstream ends the stream with a final ``data: {"error": ...}``
event; before anything was released it is a failed attempt instead (504
``upstream_timeout`` for a stall, 502 for a break). May raise ``CancelledError``
(the client left); the context then records what the client got.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web

from sidecar import semconv
from sidecar.context import RequestContext
from sidecar.errors import RequestError, UpstreamError, UpstreamTimeoutError, error_body
from sidecar.pipeline.observe import StreamObserver
from sidecar.pipeline.relay import BROKEN, TIMEOUT
from sidecar.pipeline.stream_guard import StreamGuard, StreamStep, WindowVerdict
from sidecar.pipeline.upstream import response_headers
from sidecar.sse import DONE, encode

__all__ = ["TAIL_EVENTS", "finish_stream", "open_stream", "pump"]


def _error_event(message: str, code: str) -> bytes:
    return encode(error_body(message, "upstream_error", None, code))


TAIL_EVENTS = {  # why a stream stopped (relay's reasons, StreamObserver.broken) -> last event
    TIMEOUT: _error_event("the upstream stream stalled past the read timeout", "upstream_timeout"),
    BROKEN: _error_event("the upstream stream ended before it was complete",
                         "upstream_stream_broken"),
    "upstream_broken_response": _error_event(
        "the upstream sent a malformed stream event", "upstream_broken_response"),
    "upstream_response_too_large": _error_event(
        "the upstream's stream (or one of its events) is over the size limit",
        "upstream_response_too_large"),
}


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


async def open_stream(
    request: web.Request, ctx: RequestContext, resp: aiohttp.ClientResponse
) -> web.StreamResponse:
    """Send the client a 200 stream's headers (the upstream's, passed on, plus the trace
    id) and mark the context 200. May raise when the client is gone."""
    out = web.StreamResponse(status=200, headers=response_headers(resp.headers.items(),
                                                                  decoded=False))
    out.headers[semconv.HEADER_TRACE_ID] = ctx.trace_id
    await out.prepare(request)
    ctx.status = 200
    return out


class _Writer:
    """The client side of one guarded attempt: prepares the response on first use,
    writes, and marks tokens as they are written."""

    __slots__ = ("ctx", "marked", "out", "request", "resp", "sg")

    def __init__(self, request: web.Request, ctx: RequestContext,
                 resp: aiohttp.ClientResponse, sg: StreamGuard) -> None:
        self.request, self.ctx, self.resp, self.sg = request, ctx, resp, sg
        self.out: web.StreamResponse | None = None
        self.marked = 0

    async def prepare(self) -> web.StreamResponse:
        if self.out is None:
            self.out = await open_stream(self.request, self.ctx, self.resp)
        return self.out

    async def send(self, data: bytes) -> bool:
        """Write ``data``; False when the client is gone (the guard is stopped)."""
        if not data:
            return True
        out = self.out if self.out is not None else await self.prepare()
        ctx = self.ctx
        try:
            await out.write(data)
        except ConnectionResetError:
            ctx.client_disconnected = True
            ctx.error_type = "client_disconnected"
            self.sg.abort()
            return False
        tokens = self.sg.released_tokens
        if tokens != self.marked:
            self.marked = tokens
            ctx.mark_token()
        return True


async def _read(content: aiohttp.StreamReader, sg: StreamGuard,
                read: asyncio.Future[bytes] | None) -> tuple[bytes | None, asyncio.Future[bytes] | None]:
    """The next upstream chunk, or None when the guard wants :meth:`StreamGuard.poll`
    first (its check finished, or its clock ran out); with the read still pending."""
    in_flight = sg.in_flight
    deadline = sg.deadline
    if read is None and in_flight is None:
        if deadline is None:
            return await content.readany(), None
        left = deadline - time.perf_counter()
        if left <= 0:
            return None, None
        timeout = asyncio.timeout(left)  # cancels only the read; no task per chunk
        try:
            async with timeout:
                return await content.readany(), None
        except TimeoutError:
            if not timeout.expired():
                raise  # the upstream's own read timeout
            return None, None
    if read is None:
        read = asyncio.ensure_future(content.readany())
    waits: set[asyncio.Future[Any]] = {read}
    delay: float | None = None
    if in_flight is not None:
        waits.add(in_flight)
    elif deadline is not None:
        delay = max(0.0, deadline - time.perf_counter())
    await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    if not read.done():
        return None, read
    return await read, None


async def pump(
    request: web.Request,
    ctx: RequestContext,
    resp: aiohttp.ClientResponse,
    sg: StreamGuard,
    observer: StreamObserver,
    *,
    early_headers: bool = False,
) -> web.StreamResponse | WindowVerdict | RequestError:
    """Stream ``resp`` through ``sg`` to the client; see the module docstring.

    Returns the client's response once bytes left, else the verdict that stopped the
    stream before its first byte, or the upstream failure that did.
    """
    writer = _Writer(request, ctx, resp, sg)
    if early_headers:
        await writer.prepare()
        ctx.attributes[semconv.ATTR_STREAM_EARLY_HEADERS] = "1"
    tail: bytes | None = None
    content = resp.content
    read: asyncio.Future[bytes] | None = None
    step: StreamStep | None = None
    try:
        while True:
            try:
                chunk, read = await _read(content, sg, read)
            except (TimeoutError, aiohttp.ServerTimeoutError):
                ctx.error_type, tail = TIMEOUT, TAIL_EVENTS[TIMEOUT]
                step = await sg.close(broken=True)
                break
            except (aiohttp.ClientError, OSError):
                ctx.error_type, tail = BROKEN, TAIL_EVENTS[BROKEN]
                step = await sg.close(broken=True)
                break
            if chunk is None:  # a check finished or the clock ran out: release what passed
                polled = await sg.poll()
                _record_cut(ctx, polled)
                if not await writer.send(polled.data) or polled.verdict is not None:
                    step = polled if polled.verdict is not None else None
                    break
                continue
            if not chunk:
                step = await sg.close()
                break
            observer.limit(chunk)  # an endless line or event: the guard never holds it
            fed = await sg.feed(chunk) if observer.broken is None else None
            if fed is None or observer.broken is not None:  # malformed or oversized
                broken = observer.broken or "upstream_response_too_large"
                ctx.error_type, tail = broken, TAIL_EVENTS[broken]
                step = await sg.close(broken=True)
                break
            step = fed  # the guard parsed it; the observer saw its docs
            _record_cut(ctx, step)
            if not await writer.send(step.data):
                step = None
                break
            if step.verdict is not None:
                break
    except BaseException:  # cancelled (the client left): stop the background work too
        sg.abort()
        observer.close(delivered=sg.delivered(), done=sg.done)
        raise
    finally:
        if read is not None:
            _drop(read)
    ctx.upstream_done_at = time.perf_counter()
    observer.close(delivered=sg.delivered() if ctx.client_disconnected else None, done=sg.done)
    return await _finish(ctx, sg, writer, step, tail)


async def _finish(ctx: RequestContext, sg: StreamGuard, writer: _Writer,
                  step: StreamStep | None, tail: bytes | None,
                  ) -> web.StreamResponse | WindowVerdict | RequestError:
    if step is not None and step.before_first_byte and step.verdict is not None:
        if writer.out is None:
            return step.verdict  # nothing left: the caller may still retry, fall back, ...
        step = StreamStep(sg.cut_now(step.verdict), step.verdict, cut=True)
    if writer.out is None and tail is not None:
        # broken or stalled before anything was released: a failed attempt, not a
        # success with an empty stream (the next attempt, if any, gets its turn)
        error_type, ctx.error_type = ctx.error_type, None
        if error_type == "upstream_timeout":
            return UpstreamTimeoutError("the upstream model server timed out")
        return UpstreamError("the upstream stream ended before it was complete",
                             code=error_type or "upstream_stream_broken")
    _record_cut(ctx, step)
    if step is not None and not step.cut and step.verdict is not None:
        ctx.attributes[semconv.ATTR_STREAM_VERDICT] = step.verdict.action  # passthrough
    if step is not None and step.data:
        await writer.send(step.data)  # the last release and [DONE], or the cut events
    if sg.late_spans:
        ctx.attributes[semconv.ATTR_STREAM_LATE_SPANS] = str(sg.late_spans)
    out = writer.out
    if out is None:  # nothing at all was released (an empty stream): still answer
        out = await writer.prepare()
        if not ctx.client_disconnected:
            await writer.send(DONE)
    await finish_stream(out, ctx, tail)
    return out


def _record_cut(ctx: RequestContext, step: StreamStep | None) -> None:
    """Record a cut on ``ctx`` (once) *before* its events are written: the guard
    decided when it stopped, and a client that leaves during the write cancels the
    task. A cut is ``block``, with ``finish_reason: content_filter``."""
    if step is None or step.verdict is None or not step.cut:
        return
    if semconv.ATTR_STREAM_CUT not in ctx.attributes:
        ctx.finish_reasons.append("content_filter")
        ctx.attributes[semconv.ATTR_STREAM_CUT] = "1"
        ctx.attributes[semconv.ATTR_STREAM_CUT_ACTION] = step.verdict.action
        ctx.override("block")


def _drop(fut: asyncio.Future[Any]) -> None:
    """Cancel a future we no longer need, retrieving its exception if it already failed."""
    if fut.done():
        if not fut.cancelled():
            fut.exception()
    else:
        fut.cancel()
