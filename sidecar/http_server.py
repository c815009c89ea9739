"""The sidecar's HTTP server: aiohttp's, with time limits and OpenAI-shaped rejections.

:class:`SidecarRunner` replaces ``web.AppRunner`` for a sidecar app. Its connections
are served by :class:`GuardedRequestHandler`, which adds to aiohttp's protocol:

- **A header deadline** (``server.header_timeout_s``): a connection that has started a
  request (or just opened) must finish its request line and headers within the
  deadline. One that sent part of a request gets ``408 request_timeout`` and is
  closed; one that sent nothing is closed silently. Without it, 1,024 connections
  dribbling headers hold their sockets for as long as they like. (The body deadline,
  ``server.body_timeout_s``, is applied where bodies are read:
  :func:`sidecar.pipeline.ingress.read_body`.)
- **Rejections in the OpenAI shape**: requests aiohttp refuses itself (an oversized or
  invalid header, NUL bytes, an unknown method, an unsupported ``Content-Encoding``,
  a control character in the path) get ``{"error": {...}}`` JSON naming the problem
  by a stable code, never echoing the offending line (aiohttp's text/plain answer
  quoted it, ``Authorization`` values included). Each leaves a trace record with
  that code as ``error_type`` (so ``railwatch_request_errors_total`` counts it).
- **Handler crashes** are logged with their traceback, minus the exception's message
  (which may quote request content), and answered with an OpenAI-shaped 500.

Everything here runs on the event loop and never blocks; nothing raises out of the
protocol callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    ContentEncodingError,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.web_protocol import RequestHandler

from sidecar.errors import error_json

logger = logging.getLogger(__name__)

Reject = Callable[[int, str], None]  # (status, code): leave a trace record

_REJECTIONS: tuple[tuple[type[BaseException], str, str], ...] = (
    # most specific first: (exception, code, public message)
    (BadHttpMethod, "invalid_method", "the request method is not valid"),
    (LineTooLong, "header_too_large", "the request line or a header is too long"),
    (InvalidHeader, "invalid_header", "a request header is malformed"),
    (ContentEncodingError, "unsupported_encoding",
     "the request's Content-Encoding is not supported (use gzip, deflate or none)"),
    (InvalidURLError, "invalid_path", "the request path is not valid"),
)
HTTP_REJECTED = "invalid_http_request"
REQUEST_TIMEOUT = "request_timeout"


def rejection(exc: BaseException | None) -> tuple[str, str]:
    """(code, public message) for an exception aiohttp's parser raised."""
    for kind, code, message in _REJECTIONS:
        if isinstance(exc, kind):
            return code, message
    return HTTP_REJECTED, "the request is not valid HTTP"


def crash_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` with its type but without its message (content-free)."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{type(exc).__name__}"


def _raw_response(status: int, reason: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol with a header deadline and content-free, OpenAI-shaped errors.

    Uses these aiohttp 3.x internals: ``_request_count`` (messages parsed),
    ``_request_in_progress`` and ``_messages``; tests pin the behaviour.
    """

    def __init__(
        self, manager: web.Server, *, header_timeout_s: float, on_reject: Reject, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._on_reject = on_reject
        self._header_timer: asyncio.TimerHandle | None = None
        self._armed_at_count = 0
        self._bytes_since_armed = 0

    # -- header deadline ---------------------------------------------------------------

    def _arm(self) -> None:
        if self._header_timeout_s <= 0:
            return
        self._disarm()
        self._armed_at_count = self._request_count
        self._bytes_since_armed = 0
        self._header_timer = asyncio.get_running_loop().call_later(
            self._header_timeout_s, self._header_deadline
        )

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        idle = not self._request_in_progress and not self._messages
        if self._header_timer is None and idle and data:
            self._arm()  # the first bytes of a new request on a kept-alive connection
        super().data_received(data)
        if self._header_timer is not None:
            if self._request_count > self._armed_at_count:
                self._disarm()  # headers complete: the body deadline takes over
            else:
                self._bytes_since_armed += len(data)

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self._request_count > self._armed_at_count or self._request_in_progress:
            return
        transport = self.transport
        if transport is None:
            return
        if self._bytes_since_armed:
            body = error_json(
                f"the request headers did not arrive within {self._header_timeout_s:g} s",
                "invalid_request_error", None, REQUEST_TIMEOUT,
            )
            transport.write(_raw_response(408, "Request Timeout", body))
            self._reject(408, REQUEST_TIMEOUT)
        self.force_close()

    def _reject(self, status: int, code: str) -> None:
        try:
            self._on_reject(status, code)
        except Exception:  # noqa: BLE001 - tracing must not break the protocol
            logger.exception("could not record a rejected request")

    # -- errors --------------------------------------------------------------------------

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """An OpenAI-shaped answer for a parser rejection or a handler crash; never echoes."""
        crashed = not isinstance(exc, HttpProcessingError) and status not in (400, 504)
        if crashed and exc is not None:
            logger.error("request handler crashed: %s", crash_traceback(exc))
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; the connection is closed")
        if isinstance(exc, HttpProcessingError) or (exc is None and status == 400):
            code, public = rejection(exc)
            status = status if 400 <= status < 500 else 400
            error_type = "invalid_request_error"
            logger.debug("request rejected by the HTTP layer: %s (%s)", code,
                        type(exc).__name__ if exc is not None else "-")
            self._reject(status, code)
        elif status == 504:
            code, public, error_type = "handler_timeout", "the request timed out", "server_error"
        else:
            code, public, error_type = "internal_error", "the sidecar failed", "server_error"
            status = 500
        response = web.Response(
            status=status, body=error_json(public, error_type, None, code),
            content_type="application/json",
        )
        response.force_close()
        return response


class _GuardedServer(web.Server):
    def __init__(self, inner: web.Server, header_timeout_s: float, on_reject: Reject) -> None:
        super().__init__(
            inner.request_handler,
            request_factory=inner.request_factory,
            handler_cancellation=inner.handler_cancellation,
            loop=inner._loop,  # noqa: SLF001 - the server being wrapped
            **inner._kwargs,  # noqa: SLF001
        )
        self._header_timeout_s = header_timeout_s
        self._on_reject = on_reject

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(
            self, loop=self._loop, header_timeout_s=self._header_timeout_s,
            on_reject=self._on_reject, **self._kwargs,
        )


class SidecarRunner(web.AppRunner):
    """``web.AppRunner`` for an app from :func:`sidecar.app.create_app`: its connections
    get :class:`GuardedRequestHandler` with the app's ``server.header_timeout_s``."""

    async def _make_server(self) -> web.Server:
        from sidecar.app import RUNTIME

        inner = await super()._make_server()
        runtime = self.app[RUNTIME]
        return _GuardedServer(
            inner, runtime.settings.server.header_timeout_s, runtime.proxy.reject
        )
