"""Bounded upstream answers and malformed streams, against a scripted upstream (issue 9).

The upstream here is a real aiohttp server on loopback that misbehaves on purpose:
oversized and endless bodies, a gzip bomb, an endless SSE line, a malformed event.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.app import _ParserErrorsWithoutContent
from sidecar.sse import EventSizeLimit, SseParser
from tests.helpers.upstream import ANSWER, CHUNK, one_record, post


async def _unary_big(request: web.Request) -> web.StreamResponse:
    await request.read()
    out = web.StreamResponse(headers={"Content-Type": "application/json"})
    await out.prepare(request)  # chunked: no Content-Length to refuse early
    for _ in range(64):
        await out.write(b" " * 65536)
    await out.write_eof()
    return out


async def _unary_huge(request: web.Request) -> web.StreamResponse:
    await request.read()
    out = web.StreamResponse(headers={"Content-Type": "application/json"})
    await out.prepare(request)
    try:
        for _ in range(768):  # 48 MB
            await out.write(b" " * 65536)
        await out.write_eof()
    except ConnectionError:  # the sidecar stopped reading at its limit
        pass
    return out


async def _gzip_bomb(request: web.Request) -> web.Response:
    await request.read()
    body = gzip.compress(ANSWER % (b"a" * (32 * 1024 * 1024)), compresslevel=9)
    return web.Response(body=body, headers={"Content-Type": "application/json",
                                            "Content-Encoding": "gzip"})


async def _endless_line(request: web.Request) -> web.StreamResponse:
    await request.read()
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    await out.write(CHUNK % (b"0", b"Hi"))
    await out.write(b"data: ")
    try:
        for _ in range(2000):  # 128 MB if nobody stops it
            await out.write(b"a" * 65536)
    except (ConnectionResetError, ConnectionError):
        pass
    return out


async def _endless_events(request: web.Request) -> web.StreamResponse:
    """Valid, small chat chunks that never end: only the stream's total size stops it."""
    await request.read()
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    event = CHUNK % (b"0", b"All work and no play. " * 40)
    try:
        for _ in range(20_000):  # about 20 MB if nobody stops it
            await out.write(event)
    except (ConnectionResetError, ConnectionError):
        pass
    return out


async def _malformed(request: web.Request) -> web.StreamResponse:
    await request.read()
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    try:
        for index, text in ((b"0", b"Hel"), (b'"x"', b"lo"), (b"0", b" there")):
            await out.write(CHUNK % (index, text))
            await asyncio.sleep(0.02)
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
    except ConnectionError:  # the sidecar ended the stream at the bad event
        pass
    return out


ROUTES: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]] = {
    "big": _unary_big, "huge": _unary_huge, "bomb": _gzip_bomb, "endless": _endless_line, "endless_events": _endless_events,
    "malformed": _malformed,
}


@pytest.fixture
def scripted(scripted_upstream: Callable[..., str]) -> str:
    """The base URL of an upstream answering ``{base}/{kind}/v1/chat/completions`` from ROUTES."""

    async def dispatch(request: web.Request) -> web.StreamResponse:
        return await ROUTES[request.match_info["kind"]](request)

    return scripted_upstream({"/{kind}/v1/chat/completions": dispatch})


@pytest.mark.parametrize("kind", ["big", "bomb"])
def test_oversized_and_bomb_answers_are_refused(
    kind: str, scripted: str, start_sidecar: Any
) -> None:
    sc = start_sidecar(f"{scripted}/{kind}", upstream={"max_response_bytes": 1024 * 1024})
    status, body = post(sc, stream=False)
    assert status == 502
    assert b'"code":"upstream_response_too_large"' in body and b'"type":"upstream_error"' in body
    rec = one_record(sc)
    assert (rec.status, rec.error_type) == (502, "upstream_response_too_large")


def _rss_mb() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) // 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, glibc malloc")
def test_memory_is_given_back_after_a_burst_of_oversized_answers(
    scripted: str, start_sidecar: Any
) -> None:
    sc = start_sidecar(f"{scripted}/huge", upstream={"max_response_bytes": 32 * 1024 * 1024})
    trimmer = sc.runtime.upstreams.primary.client.trimmer
    before = _rss_mb()

    async def burst() -> list[int]:
        async with aiohttp.ClientSession() as http:
            async def one() -> int:
                async with http.post(sc.url + "/v1/chat/completions", json={
                    "model": "m", "messages": [{"role": "user", "content": "hi"}],
                }) as resp:
                    await resp.read()
                    return resp.status

            return await asyncio.gather(*(one() for _ in range(8)))

    assert asyncio.run(burst()) == [502] * 8  # 8 x 32 MB were held at once
    deadline = time.monotonic() + 10
    while trimmer.trims == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert trimmer.trims >= 1
    assert _rss_mb() - before < 128, (before, _rss_mb())


def test_guarded_route_refuses_a_bomb_too(scripted: str, start_sidecar: Any) -> None:
    sc = start_sidecar(f"{scripted}/bomb", guardrails={"enabled": True},
                       upstream={"max_response_bytes": 1024 * 1024})
    status, body = post(sc, stream=False)
    assert status == 502 and b"upstream_response_too_large" in body


@pytest.mark.parametrize("guarded", [False, True])
def test_an_endless_sse_line_ends_the_stream_with_an_error_event(
    guarded: bool, scripted: str, start_sidecar: Any
) -> None:
    sc = start_sidecar(f"{scripted}/endless", upstream={"max_sse_event_bytes": 256 * 1024},
                       guardrails={"enabled": guarded})
    status, body = post(sc, stream=True)
    assert status == 200
    assert body.endswith(
        b'"code":"upstream_response_too_large"}}\n\n'
    ), body[-200:]
    assert len(body) < 8 * 1024 * 1024  # stopped soon after the limit, not at 128 MB
    rec = one_record(sc)
    assert rec.error_type == "upstream_response_too_large"


@pytest.mark.parametrize("guarded", [False, True])
def test_an_endless_stream_of_valid_events_stops_at_the_answer_limit(
    guarded: bool, scripted: str, start_sidecar: Any
) -> None:
    """Every event is small and valid; the text kept for checks and the trace is bounded
    by ``upstream.max_response_bytes`` all the same."""
    sc = start_sidecar(f"{scripted}/endless_events", guardrails={"enabled": guarded},
                       upstream={"max_response_bytes": 512 * 1024})
    status, body = post(sc, stream=True)
    assert status == 200
    assert body.endswith(b'"code":"upstream_response_too_large"}}\n\n'), body[-200:]
    assert len(body) < 2 * 1024 * 1024
    rec = one_record(sc)
    assert rec.error_type == "upstream_response_too_large"


@pytest.mark.parametrize("guarded", [False, True])
def test_a_malformed_stream_event_becomes_an_error_event_and_a_trace(
    guarded: bool, scripted: str, start_sidecar: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``"index": "x"`` crashed the handler: a cut body, a 200 trace, a bare TypeError."""
    sc = start_sidecar(f"{scripted}/malformed", guardrails={"enabled": guarded})
    with caplog.at_level(logging.ERROR):
        status, body = post(sc, stream=True)
    assert not [r for r in caplog.records if "crashed" in r.getMessage()]
    rec = one_record(sc)
    assert rec.error_type == "upstream_broken_response"
    assert rec.completion_tokens in (None, 1)
    if status == 502:  # guarded, nothing released yet: the attempt failed as a whole
        assert guarded and b'"code":"upstream_broken_response"' in body
    else:  # streamed as it came; ends with the error event, never the bad one's text
        assert status == 200 and b"Hel" in body
        assert body.endswith(b'"code":"upstream_broken_response"}}\n\n')
        assert guarded or b'"lo"' in body  # the lean path forwards before it observes


def test_event_size_limit_counts_from_the_last_blank_line() -> None:
    limit = EventSizeLimit(100)
    assert limit.feed(b"data: " + b"x" * 90 + b"\n")  # 97 bytes of one event
    assert not limit.feed(b"data: more\n")  # 108: over
    assert limit.feed(b"\n" + b"data: y" * 10)  # the blank line straddled the chunks
    assert limit.feed(b"\r\n\r\n")  # CRLF blank lines count too
    assert not limit.feed(b"z" * 101)


def test_sse_parser_memory_is_bounded_on_an_endless_line_or_event() -> None:
    parser = SseParser(max_event_bytes=64 * 1024)
    for _ in range(100):
        assert parser.feed(b"x" * 32 * 1024) == []
    assert parser.overflowed and len(parser._tail) <= 64 * 1024  # noqa: SLF001
    parser = SseParser(max_event_bytes=64 * 1024)
    for _ in range(100):
        parser.feed(b"data: " + b"y" * 16 * 1024 + b"\n")  # lines, never a blank one
    assert parser.overflowed and sum(map(len, parser._data)) <= 64 * 1024  # noqa: SLF001


def test_log_filter_keeps_crash_tracebacks_without_their_message() -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    def record_for(exc: Exception) -> logging.LogRecord:
        try:
            raise exc
        except Exception:  # noqa: BLE001 - any exception: that is the test
            return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                                     "Error handling request", (), sys.exc_info())

    parser = record_for(BadHttpMessage("Authorization: Bearer sk-live-1"))
    assert _ParserErrorsWithoutContent().filter(parser)
    assert parser.getMessage() == "request rejected by the HTTP layer: BadHttpMessage"
    assert parser.exc_info is None and not parser.exc_text

    crash = record_for(TypeError("prompt: my card is 4111 1111 1111 1111"))
    assert _ParserErrorsWithoutContent().filter(crash)
    text = logging.Formatter().format(crash)
    assert "Traceback (most recent call last)" in text and "record_for" in text
    assert text.rstrip().endswith("TypeError") and "4111" not in text


@pytest.mark.parametrize("guarded", [False, True])
def test_a_gzip_answer_is_inflated_once_and_forwarded_as_sent(
    guarded: bool, scripted_upstream: Any, start_sidecar: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # lean: 64 KB that gzip barely shrinks, inflated in a thread; guarded: inline, clean text
    content = b"hello there" if guarded else os.urandom(32 * 1024).hex().encode()
    sent = gzip.compress(ANSWER % content)

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=sent, headers={"Content-Type": "application/json",
                                                "Content-Encoding": "gzip"})

    url = scripted_upstream({"/v1/chat/completions": answer})
    sections: dict[str, Any] = {"guardrails": {"enabled": True}} if guarded else {}
    sc = start_sidecar(url, **sections)
    calls: list[str] = []
    decompressobj, decompress = zlib.decompressobj, zlib.decompress

    def counted_obj(*args: Any, **kwargs: Any) -> Any:
        calls.append("decompressobj")
        return decompressobj(*args, **kwargs)

    def counted(*args: Any, **kwargs: Any) -> bytes:
        calls.append("decompress")
        return decompress(*args, **kwargs)

    monkeypatch.setattr(zlib, "decompressobj", counted_obj)
    monkeypatch.setattr(zlib, "decompress", counted)

    async def go() -> tuple[int, bytes]:
        async with aiohttp.ClientSession(auto_decompress=False) as http:  # counts none itself
            async with http.post(sc.url + "/v1/chat/completions", json={
                "model": "m", "messages": [{"role": "user", "content": "hi"}],
            }) as resp:
                return resp.status, await resp.read()

    status, body = asyncio.run(go())
    assert (status, body) == (200, sent)  # the client gets the bytes as the upstream sent them
    assert calls == ["decompressobj"]
    rec = one_record(sc)
    assert (rec.status, rec.response_id, rec.model_served) == (200, "x", "m")  # it was read


def test_inflate_ends_at_the_stream_end_and_bounds_bombs() -> None:
    """Bytes after the compressed stream are ignored (as zlib.decompress does; the old
    size check looped forever on them when the last step filled its 1 MB window), and
    a body that inflates past the limit is refused."""
    import gzip

    from sidecar.errors import UpstreamTooLargeError
    from sidecar.pipeline.upstream import inflate

    body = b"x" * (5 * 1024 * 1024 + 417)
    packed = gzip.compress(body) + b"junk"
    assert inflate(packed, "gzip", 8 << 20) == body
    with pytest.raises(UpstreamTooLargeError):
        inflate(packed, "gzip", 1 << 20)
    assert inflate(b"not gzip", "gzip", 1 << 20) is None
    assert inflate(b"raw", "br", 1 << 20) is None


def test_a_small_body_that_inflates_big_is_left_to_a_thread() -> None:
    """A gzip body of a few KB can hold megabytes: the loop inflates small bodies only up
    to 128 KB of output (one step no bigger than that), past it a thread does the rest."""
    import gzip

    from sidecar.errors import UpstreamTooLargeError
    from sidecar.pipeline import upstream

    packed = gzip.compress(b"\0" * (16 << 20))
    assert len(packed) <= upstream._INLINE_INFLATE_BYTES  # small enough for the loop
    with pytest.raises(UpstreamTooLargeError):
        upstream.inflate(packed, "gzip", upstream._INLINE_DECODED_BYTES)
    assert upstream.inflate(packed, "gzip", 32 << 20) == b"\0" * (16 << 20)
