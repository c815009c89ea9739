"""How long does one request hold the sidecar's event loop? (issue 8/9: at most 1 ms)

Starts the demo upstream and a sidecar with the default policy (guardrails on, chDB off:
an in-memory exporter) on one event loop in a background thread, times every callback
that loop runs (``asyncio.Handle._run``: the longest synchronous step), and sends, from
another thread, prompts of the given sizes full of e-mails and card numbers while a
second client polls ``/healthz``. Prints, per size: the status, the longest loop step in
wall time and in the loop thread's CPU time (wall time also counts waits for the GIL
held by detector threads, and a busy machine), the slowest ``/healthz`` answer during
the request, and whether any raw value reached the upstream. ``/healthz`` is polled from a child process, so its latency is
the sidecar's, not this process's GIL.

    PYTHONPATH=. python bench/bench_loop_stall.py --sizes 32768 3000000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from typing import Any

import aiohttp

from tests.helpers.servers import LoopThread, sidecar_settings, start_sidecar_async

UNIT = "contact jane.doe{i}@example.com card 4111 1111 1111 1111 please. "


class LoopTimer:
    """Times every callback the loop in ``thread_id`` runs; keeps the longest."""

    def __init__(self) -> None:
        self.thread_id = 0
        self.longest = 0.0  # wall time: includes waits for the GIL and the machine's noise
        self.longest_cpu = 0.0  # the loop thread's own CPU time in its longest step
        self.where = ""
        self.where_cpu = ""
        self._run = asyncio.events.Handle._run

    def install(self) -> None:
        timer, original = self, self._run

        def timed(handle: asyncio.events.Handle) -> None:
            if threading.get_ident() != timer.thread_id:
                original(handle)
                return
            t0, c0 = time.perf_counter(), time.thread_time()
            original(handle)
            took, cpu = time.perf_counter() - t0, time.thread_time() - c0
            if took > timer.longest:
                timer.longest, timer.where = took, repr(handle)[:100]
            if cpu > timer.longest_cpu:
                timer.longest_cpu, timer.where_cpu = cpu, repr(handle)[:100]

        asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    def reset(self) -> None:
        self.longest, self.where = 0.0, ""
        self.longest_cpu, self.where_cpu = 0.0, ""


def prompt(chars: int) -> str:
    parts: list[str] = []
    size = i = 0
    while size < chars:
        unit = UNIT.format(i=i)
        parts.append(unit)
        size += len(unit)
        i += 1
    return "".join(parts)[:chars]


POLLER = """
import sys, time, urllib.request
url, worst = sys.argv[1], 0.0
sys.stdout.write("ready\\n"); sys.stdout.flush()
while not sys.stdin.closed:
    t0 = time.perf_counter()
    urllib.request.urlopen(url, timeout=60).read()
    worst = max(worst, time.perf_counter() - t0)
    sys.stdout.write(f"{worst}\\n"); sys.stdout.flush()
    time.sleep(0.01)
"""


async def one(url: str, upstream: str, chars: int, timer: LoopTimer) -> dict[str, Any]:
    """One request; ``/healthz`` is polled from another process (this one's GIL is busy)."""
    text = prompt(chars)
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    poller = await asyncio.create_subprocess_exec(
        sys.executable, "-c", POLLER, url + "/healthz",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert poller.stdout is not None and poller.stdin is not None
    await poller.stdout.readline()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        await http.delete(upstream + "/_demo/requests")
        await asyncio.sleep(0.05)
        timer.reset()
        t0 = time.perf_counter()
        async with http.post(url + "/v1/chat/completions", json=body) as r:
            status = r.status
            answer = await r.json()
        took = time.perf_counter() - t0
        await asyncio.sleep(0.2)  # the step that wrote the answer ends after it was sent
        longest, where = timer.longest, timer.where
        longest_cpu, where_cpu = timer.longest_cpu, timer.where_cpu
        poller.terminate()
        lines = (await poller.stdout.read()).split()
        await poller.wait()
        worst_health = float(lines[-1]) if lines else float("nan")
        async with http.get(upstream + "/_demo/requests") as r:
            seen = await r.text()
    return {
        "chars": chars, "status": status,
        "code": (answer.get("error") or {}).get("code") if isinstance(answer, dict) else None,
        "request_s": round(took, 3), "longest_loop_step_ms": round(longest * 1000, 3),
        "step": where, "longest_loop_step_cpu_ms": round(longest_cpu * 1000, 3),
        "step_cpu": where_cpu, "worst_healthz_ms": round(worst_health * 1000, 1),
        "raw_reached_upstream": "@example.com" in seen or "4111 1111 1111 1111" in seen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32_768, 3_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--capture", default="masked", choices=["raw", "masked", "none"],
                        help="privacy.capture: masked runs the trace masker (emit stage)")
    parser.add_argument("--switch-interval-ms", type=float, default=None,
                        help="sys.setswitchinterval for the run (CPython default: 5 ms)")
    args = parser.parse_args()
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    from sidecar.demo.upstream import start_demo_upstream

    server = LoopThread()
    timer = LoopTimer()
    server.run(_ident(timer))
    timer.install()
    upstream = LoopThread()  # its own loop: the demo's work is not the sidecar's
    demo = upstream.run(start_demo_upstream())
    settings = sidecar_settings(
        demo.url, guardrails={"enabled": True}, privacy={"capture": args.capture},
        server={"max_body_bytes": 16 * 1024 * 1024},
    )
    sidecar = server.run(start_sidecar_async(settings))
    client = LoopThread()
    try:
        for chars in args.sizes:
            for _ in range(args.repeat):
                print(client.run(one(sidecar.url, demo.url, chars, timer), timeout=300), flush=True)
    finally:
        server.run(sidecar.runner.cleanup())
        upstream.run(demo.close())
        upstream.stop()
        server.stop()
        client.stop()


async def _ident(timer: LoopTimer) -> None:
    timer.thread_id = threading.get_ident()


if __name__ == "__main__":
    main()
