"""Upstream stage: one pooled aiohttp client for every request to the model server.

Measured on this machine (see README "Performance"): aiohttp's client costs a
fraction of httpx's per request and keeps its throughput under concurrency, so
the sidecar uses one ``aiohttp.ClientSession`` for its whole life: keep-alive,
a bounded connection pool (``upstream.pool_size``, optionally per host).

Header policy: end-to-end headers (``Authorization`` included) pass through and
are never logged; hop-by-hop headers (RFC 9110 section 7.6.1, plus any named in
``Connection``) and ``Host``/``Content-Length`` are dropped. A new
``traceparent`` naming the sidecar's span is sent so the upstream's spans join
the caller's trace.

Failures become :class:`UpstreamUnavailableError` (502) or
:class:`UpstreamTimeoutError` (504); answers read whole are capped by
``upstream.max_response_bytes`` (:class:`UpstreamTooLargeError`, 502), compressed and
decompressed. Messages are public and name no URL credentials and no body.
"""

from __future__ import annotations

import asyncio
import socket
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from multidict import CIMultiDict

from sidecar import jsonio, semconv
from sidecar.context import RequestContext
from sidecar.memtrim import MemoryTrimmer
from sidecar.errors import UpstreamTimeoutError, UpstreamTooLargeError, UpstreamUnavailableError
from sidecar.settings import UpstreamSettings
from sidecar.tracecontext import format_traceparent

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_DROP_REQUEST = HOP_BY_HOP | {"host", "content-length", semconv.HEADER_TRACEPARENT}
_DECODED_ENCODINGS = frozenset({"gzip", "x-gzip", "deflate", "br"})
_DROP_RESPONSE = HOP_BY_HOP | {"content-length", "date", "server"}


def _connection_listed(headers: Mapping[str, str]) -> set[str]:
    listed = headers.get("connection")
    if not listed:
        return set()
    return {h.strip().lower() for h in listed.split(",") if h.strip()}


def forward_request_headers(
    headers: Mapping[str, str], ctx: RequestContext, *, inspect: bool
) -> CIMultiDict[str]:
    """Headers to send upstream. ``inspect``: ask for an uncompressed body we can read."""
    drop = _DROP_REQUEST | _connection_listed(headers)
    if headers.get("content-encoding", "").strip().lower() in _DECODED_ENCODINGS:
        drop = drop | {"content-encoding"}  # aiohttp decoded the body we forward
    if inspect:
        drop = drop | {"accept-encoding"}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    if inspect:
        out["Accept-Encoding"] = "identity"
    out[semconv.HEADER_TRACEPARENT] = format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags)
    return out


def response_headers(headers: Iterable[tuple[str, str]], *, decoded: bool) -> CIMultiDict[str]:
    """Upstream response headers fit to pass to the client."""
    out: CIMultiDict[str] = CIMultiDict()
    pairs = list(headers)
    listed = {
        h.strip().lower() for n, v in pairs if n.lower() == "connection" for h in v.split(",")
    }
    drop = _DROP_RESPONSE | listed
    if decoded:
        drop = drop | {"content-encoding"}
    for name, value in pairs:
        if name.lower() not in drop:
            out.add(name, value)
    return out


_INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
                  "deflate": zlib.MAX_WBITS}
_INLINE_INFLATE_BYTES = 16 * 1024  # bigger compressed bodies are inflated in a thread
_INLINE_DECODED_BYTES = 128 * 1024  # and so are smaller ones that inflate past this
_INFLATE_STEP = 1024 * 1024
_PROBE_READ_BYTES = 64 * 1024  # a readiness probe reads no more of GET /v1/models


def _too_large(limit: int) -> UpstreamTooLargeError:
    return UpstreamTooLargeError(
        f"the upstream's answer exceeds the sidecar's limit of {limit} bytes"
    )


@dataclass(frozen=True, slots=True)
class UpstreamBody:
    """A whole upstream answer. ``raw``: the bytes as sent, what a client is given.
    ``decoded``: the same with gzip/deflate undone, or None when it cannot be (br, an
    unknown coding, corrupt or truncated data): callers treat that as unparsed."""

    raw: bytes
    decoded: bytes | None

    def json(self) -> tuple[Any, bool]:
        """``(document, lenient)`` of the decoded body (see :func:`sidecar.jsonio.loads`),
        ``(None, False)`` when it cannot be decoded or is not JSON."""
        if not self.decoded:
            return None, False
        try:
            return jsonio.loads(self.decoded)
        except ValueError:
            return None, False


def _inflate_with(raw: bytes, wbits: int, limit: int) -> bytes | None:
    """``raw`` inflated with ``wbits``; None if it is not such a stream (or truncated)."""
    inflater = zlib.decompressobj(wbits)
    parts: list[bytes] = []
    total, data = 0, raw
    step = min(_INFLATE_STEP, limit + 1)  # never more than the limit past it
    try:
        while True:
            part = inflater.decompress(data, step)
            total += len(part)
            if total > limit:
                raise _too_large(limit)
            parts.append(part)
            data = inflater.unconsumed_tail
            if inflater.eof:  # bytes after the end stay in unconsumed_tail: ignored
                break
            if not data and len(part) < step:
                break  # truncated (a full step may leave output pending: drained first)
    except zlib.error:
        return None
    return b"".join(parts) if inflater.eof else None


def inflate(raw: bytes, encoding: str, limit: int) -> bytes | None:
    """``raw`` with its ``Content-Encoding`` (lower case) undone, the one decoder of
    upstream answers. Inflates 1 MB at a time and stops past ``limit`` decoded bytes, so
    a bomb costs at most ``limit`` bytes of CPU work and memory: raises
    :class:`UpstreamTooLargeError`. None when the body cannot be decoded (br, an unknown
    coding, corrupt data); raw deflate (no zlib header) is tried when the zlib form fails.
    CPU-bound: callers run big bodies in a thread."""
    if not encoding or encoding == "identity":
        return raw
    wbits = _INFLATE_WBITS.get(encoding)
    if wbits is None:
        return None
    decoded = _inflate_with(raw, wbits, limit)
    if decoded is None and wbits == zlib.MAX_WBITS:
        decoded = _inflate_with(raw, -zlib.MAX_WBITS, limit)
    return decoded


def public_url(url: str) -> str:
    """The URL without user info, safe for records, logs and ``/readyz``."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class UpstreamClient:
    """Owns the pooled session. ``start()`` and ``close()`` run in the app's lifespan."""

    def __init__(self, settings: UpstreamSettings, base_url: str) -> None:
        self.settings = settings
        self.base_url = base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        # Non-streaming: a total deadline. Streaming: only the silence between bytes.
        self.unary_timeout = aiohttp.ClientTimeout(
            total=settings.total_timeout_s,
            connect=settings.connect_timeout_s,
            sock_read=settings.read_timeout_s,
        )
        self.stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s
        )
        self._ready_at = 0.0
        self._ready: dict[str, Any] = {"state": "unknown"}
        self.trimmer = MemoryTrimmer()  # gives large answers' memory back to the OS

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.pool_size,
            limit_per_host=self.settings.pool_per_host,
            keepalive_timeout=self.settings.keepalive_s,
            ttl_dns_cache=300,
            family=socket.AF_UNSPEC,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # bytes pass through as the upstream sent them
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            cookie_jar=aiohttp.DummyCookieJar(),
            read_bufsize=2**16,
        )
        self.trimmer.start()

    async def close(self) -> None:
        await self.trimmer.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        return self._session

    async def send(
        self,
        ctx: RequestContext,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        stream: bool,
    ) -> aiohttp.ClientResponse:
        """Send one request; return the response with its headers read, body not yet read.

        The caller must release the response (``async with`` or ``release()``). Raises
        UpstreamUnavailableError or UpstreamTimeoutError; may be cancelled, which
        closes the upstream connection.
        """
        ctx.upstream_attempts += 1
        if ctx.upstream_sent_at is None:
            ctx.upstream_sent_at = time.perf_counter()
        try:
            return await self.session.request(
                method,
                self.base_url + path_qs,
                data=body,
                headers=headers,
                timeout=self.stream_timeout if stream else self.unary_timeout,
                allow_redirects=False,
                compress=None,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeoutError("the upstream model server timed out") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError):
            raise UpstreamUnavailableError("the upstream model server is unreachable") from None
        except aiohttp.ClientError:  # a malformed status line or headers
            raise UpstreamUnavailableError(
                "the upstream model server sent a malformed response", code="upstream_bad_response"
            ) from None

    async def read_body(self, resp: aiohttp.ClientResponse) -> UpstreamBody:
        """The whole response body, as sent and decoded (once: see :func:`inflate`);
        broken or stalled bodies map to 502/504, bodies over ``max_response_bytes`` (as
        sent, or once gzip/deflate is undone: a compression bomb) to 502
        ``upstream_response_too_large``, read no further."""
        limit = self.settings.max_response_bytes
        if resp.content_length is not None and resp.content_length > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := await resp.content.readany():
                size += len(chunk)
                if size > limit:
                    self.trimmer.note(size)
                    raise _too_large(limit)
                chunks.append(chunk)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeoutError("the upstream model server timed out") from None
        except (aiohttp.ClientError, OSError):
            raise UpstreamUnavailableError(
                "the upstream model server closed the connection before the response was complete",
                code="upstream_broken_response",
            ) from None
        self.trimmer.note(size)
        raw = b"".join(chunks)
        encoding = resp.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in _INFLATE_WBITS:  # nothing to inflate
            return UpstreamBody(raw, inflate(raw, encoding, limit))
        if len(raw) <= _INLINE_INFLATE_BYTES:
            try:  # a small answer on the loop; a small body that inflates big: a thread
                return UpstreamBody(raw, inflate(raw, encoding,
                                                 min(limit, _INLINE_DECODED_BYTES)))
            except UpstreamTooLargeError:
                if limit <= _INLINE_DECODED_BYTES:
                    raise
        return UpstreamBody(raw, await asyncio.to_thread(inflate, raw, encoding, limit))

    def last_probe(self) -> dict[str, Any]:
        """The most recent probe result (``{"state": "unknown"}`` before the first)."""
        return self._ready

    async def probe(self, max_age_s: float = 2.0, timeout_s: float = 2.0) -> dict[str, Any]:
        """Is the upstream answering HTTP at all? Cached for ``max_age_s``; never raises."""
        now = time.monotonic()
        if now - self._ready_at < max_age_s:
            return self._ready
        started = time.perf_counter()
        try:
            async with self.session.get(
                self.base_url + "/v1/models",
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as resp:
                await resp.content.read(_PROBE_READ_BYTES)  # the status is what counts
                # Any HTTP answer means reachable; 401/404 only say what the route wants.
                state = {"state": "ok", "status": resp.status}
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            state = {"state": "unreachable", "error": type(exc).__name__}
        state["url"] = public_url(self.base_url)
        state["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        self._ready, self._ready_at = state, now
        return state
