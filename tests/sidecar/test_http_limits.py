"""The HTTP layer under attack, over real sockets (issue 9): slowloris, malformed requests.

Requests aiohttp refuses itself answer in the OpenAI shape, echo nothing and leave a
trace; stalled headers and bodies get 408 and hold no in-flight slot.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import openai
import pytest
from aiohttp import web

from exporters.memory import MemoryExporter
from sidecar.app import create_app
from sidecar.http_server import SidecarRunner
from sidecar.record import TraceRecord
from tests.helpers.servers import LoopThread, RunningSidecar, sidecar_settings

SECRET = b"sk-live-secret-4242"
AUTH = b"Authorization: Bearer " + SECRET + b"\r\n"


def _address(sc: RunningSidecar) -> tuple[str, int]:
    host, port = sc.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _exchange(sc: RunningSidecar, raw: bytes, timeout_s: float = 10.0) -> bytes:
    """Send ``raw``; read until the server closes, or up to one full response."""
    with socket.create_connection(_address(sc), timeout=timeout_s) as sock:
        sock.sendall(raw)
        return _read_response(sock)


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and b"content-length:" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length:
                break
    return data


def _parse(data: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


REJECTED = {
    "a 1 MB header": (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + AUTH + b"X-Big: " + b"a" * 1_000_000
        + b"\r\n\r\n", "header_too_large"),
    "NUL in a header": (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + AUTH + b"X-Nul: a\x00" + SECRET + b"\r\n\r\n",
        "invalid_http_request"),
    "an unknown method": (
        b"BREW /v1/models HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n", "invalid_method"),
    "Content-Encoding br": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + AUTH
        + b"Content-Encoding: br\r\nContent-Length: 4\r\n\r\nabcd", "unsupported_encoding"),
    "%0a in the path": (
        b"GET /v1/models%0aX-Injected:%20" + SECRET + b" HTTP/1.1\r\nHost: x\r\n" + AUTH
        + b"Connection: close\r\n\r\n", "invalid_path"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_requests_aiohttp_refuses_answer_in_the_openai_shape_and_leave_a_trace(
    case: str, sidecar: RunningSidecar
) -> None:
    raw, code = REJECTED[case]
    status, headers, body = _parse(_exchange(sidecar, raw))
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert body["error"]["code"] == code and body["error"]["type"] == "invalid_request_error"
    assert SECRET.decode() not in json.dumps(body)  # nothing echoed
    rec: TraceRecord = sidecar.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert (rec.status, rec.error_type) == (400, code)
    assert SECRET.decode() not in repr(rec)


def test_stalled_headers_get_408_and_are_closed(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url, server={"header_timeout_s": 0.5})
    started = time.monotonic()
    data = _exchange(sc, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + AUTH)
    assert time.monotonic() - started < 5
    status, headers, body = _parse(data)
    assert status == 408 and headers["connection"] == "close"
    assert body["error"]["code"] == "request_timeout"
    rec: TraceRecord = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert (rec.status, rec.error_type) == (408, "request_timeout")


def test_slowloris_bodies_hold_no_in_flight_slot(start_sidecar: Any, demo_upstream: Any) -> None:
    """Connections that send half a chunked body and stop: others are still served (they
    are not in flight until their body is in), and each stalled one gets 408 in time."""
    sc = start_sidecar(demo_upstream.url,
                       server={"max_in_flight": 4, "body_timeout_s": 1.5, "header_timeout_s": 1.0})
    stalled: list[socket.socket] = []
    try:
        for _ in range(32):
            sock = socket.create_connection(_address(sc), timeout=10)
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n" + AUTH + b"\r\n10\r\n{\"model\": \"m\", "
            )
            stalled.append(sock)
        time.sleep(0.3)  # every stalled request has reached the handler
        client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "still served"}]
        )
        assert reply.choices[0].message.content == "Echo: still served"
        answers = [_parse(_read_response(sock)) for sock in stalled]
    finally:
        for sock in stalled:
            sock.close()
    assert {(status, body["error"]["code"]) for status, _, body in answers} == {
        (408, "request_timeout")
    }
    recs = sc.memory.wait_for(lambda rs: len(rs) == 33)
    assert sorted(r.error_type or "ok" for r in recs) == ["ok"] + ["request_timeout"] * 32
    assert sc.runtime.proxy.in_flight == 0


def test_a_handler_crash_is_logged_with_its_traceback_and_answered_in_the_openai_shape(
    loop_thread: LoopThread, demo_upstream: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug (here: a middleware added by the test that raises with request content in
    its message) gets a JSON 500 and a traceback in the log without that content."""
    app = create_app(sidecar_settings(demo_upstream.url), exporters=[MemoryExporter()])

    @web.middleware
    async def crash(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/crash":
            raise TypeError(f"bad value from {request.headers.get('Authorization')}")
        return await handler(request)

    app.middlewares.append(crash)

    async def start() -> SidecarRunner:
        runner = SidecarRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = loop_thread.run(start())
    try:
        host, port = runner.addresses[0][:2]
        with caplog.at_level(logging.ERROR), socket.create_connection((host, port), 10) as sock:
            sock.sendall(b"GET /crash HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n")
            status, headers, body = _parse(_read_response(sock))
        assert status == 500 and headers["content-type"].startswith("application/json")
        assert body["error"]["code"] == "internal_error"
        logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "sidecar.http_server")
        assert "Traceback (most recent call last)" in logged and "in crash" in logged
        assert logged.rstrip().endswith("TypeError") and SECRET.decode() not in logged
    finally:
        loop_thread.run(runner.cleanup())
