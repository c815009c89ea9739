"""Slowloris against the sidecar (issue 9): do stalled clients lock everyone else out?

Opens ``--connections`` sockets that send their headers and half a chunked body, then
stop (and as many that stop mid-headers), against a sidecar with the default
``max_in_flight`` (1024). While they hang, an ordinary client sends requests; the
script prints their statuses and latency, then how the stalled ones were answered
and how long that took.

    PYTHONPATH=. python bench/bench_slowloris.py --connections 1024 --body-timeout 5
"""

from __future__ import annotations

import argparse
import collections
import socket
import time

import openai

from tests.helpers.servers import LoopThread, sidecar_settings, start_sidecar_async

HALF_BODY = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n10\r\n{\"model\": \"m\", ")
HALF_HEADERS = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty"


def status_of(sock: socket.socket) -> str:
    try:
        data = sock.recv(4096)
    except OSError as exc:
        return type(exc).__name__
    if not data:
        return "closed"
    return data.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=1024)
    parser.add_argument("--body-timeout", type=float, default=5.0)
    parser.add_argument("--header-timeout", type=float, default=5.0)
    args = parser.parse_args()
    from sidecar.demo.upstream import start_demo_upstream

    loop = LoopThread()
    demo = loop.run(start_demo_upstream())
    settings = sidecar_settings(demo.url, server={
        "body_timeout_s": args.body_timeout, "header_timeout_s": args.header_timeout,
    })
    sidecar = loop.run(start_sidecar_async(settings))
    host, port = sidecar.url.removeprefix("http://").rsplit(":", 1)
    stalled: list[socket.socket] = []
    try:
        t0 = time.perf_counter()
        for i in range(args.connections):
            sock = socket.create_connection((host, int(port)), timeout=60)
            sock.sendall(HALF_BODY if i % 2 == 0 else HALF_HEADERS)
            stalled.append(sock)
        print(f"opened {len(stalled)} stalled connections in {time.perf_counter() - t0:.2f} s "
              f"(half stop mid-body, half mid-headers); max_in_flight "
              f"{settings.server.max_in_flight}", flush=True)
        time.sleep(1.0)
        client = openai.OpenAI(base_url=sidecar.base_url, api_key="x", max_retries=0)
        latencies: list[float] = []
        for _ in range(20):
            t1 = time.perf_counter()
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            latencies.append(time.perf_counter() - t1)
        latencies.sort()
        print(f"20 ordinary requests while stalled: all 200, p50 {latencies[10] * 1000:.1f} ms, "
              f"max {latencies[-1] * 1000:.1f} ms; in flight now: "
              f"{sidecar.runtime.proxy.in_flight}", flush=True)
        t2 = time.perf_counter()
        answers = collections.Counter(status_of(sock) for sock in stalled)
        print(f"stalled connections answered within {time.perf_counter() - t2 + 1.0:.1f} s "
              f"of the check: {dict(answers)}", flush=True)
    finally:
        for sock in stalled:
            sock.close()
        loop.run(sidecar.runner.cleanup())
        loop.run(demo.close())
        loop.stop()


if __name__ == "__main__":
    main()
