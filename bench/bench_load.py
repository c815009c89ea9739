"""Closed-loop load and soak benchmark: the sidecar against direct, and its RSS over time.

Starts the demo upstream and the sidecar in its *default configuration* (default
guardrail policy, embedded ClickHouse, Prometheus, privacy ``masked``; only the data
directory is a temporary one) as separate processes on loopback, then:

1. **load**: ``--rounds`` rounds; in each, ``--requests`` chat requests at
   ``--concurrency`` (closed loop: each worker sends its next request when the last
   answered), against direct and the sidecar in turn. Prints throughput, p50, p99 and
   p99/p50 for both (medians over rounds), the same run being the baseline.
2. **soak**: ``--soak-s`` seconds at about ``--rate`` requests/s (workers take
   tickets spaced 1/rate apart; closed loop, so an overloaded sidecar slows the
   generator rather than queueing without bound), every request from a new user and
   conversation. Prints the sidecar's RSS every ``--sample-s`` and what was lost
   (non-200 answers, transport errors).

``--profile`` runs the sidecar under ``_stall_probe.py`` and prints where the event
loop stalled (stacks), GC pauses by generation and GIL waits.

Bounded: at most 20,000 requests a round and 1,800 s of soak; loopback only.
Run: ``.venv/bin/python bench/bench_load.py [--soak-s 300] [--profile]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_proxy import free_port, pct, spawn, wait_ready  # noqa: E402

MAX_REQUESTS = 20_000
MAX_SOAK_S = 1_800
PROMPT = ("Please summarise this support ticket for the on-call engineer. The customer wrote "
          "in about a failed payment and wants a call back. " * 3)


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)  # seconds
    wall: float = 0.0
    failed: int = 0


def body_for(i: int) -> bytes:
    return orjson.dumps({"model": "m", "user": f"user-{i}",
                         "messages": [{"role": "user", "content": f"{PROMPT} (ticket {i})"}]})


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _one(session: aiohttp.ClientSession, url: str, i: int, run: Run) -> None:
    t = time.perf_counter()
    try:
        async with session.post(url + "/v1/chat/completions", data=body_for(i), headers={
                "Content-Type": "application/json",
                "x-railwatch-conversation-id": f"conv-{i}"}) as r:
            await r.read()
            if r.status != 200:
                run.failed += 1
    except (aiohttp.ClientError, TimeoutError):
        run.failed += 1
    run.latencies.append(time.perf_counter() - t)


async def load(session: aiohttp.ClientSession, url: str, n: int, conc: int, start: int) -> Run:
    run = Run()
    tickets = iter(range(start, start + n))

    async def worker() -> None:
        for i in tickets:
            await _one(session, url, i, run)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    run.wall = time.perf_counter() - t0
    return run


async def soak(session: aiohttp.ClientSession, url: str, pid: int, args: argparse.Namespace,
               start: int) -> tuple[Run, list[tuple[float, float, int]]]:
    run = Run()
    samples: list[tuple[float, float, int]] = [(0.0, rss_mb(pid), 0)]
    t0 = time.perf_counter()
    end = t0 + args.soak_s
    next_ticket = [0]

    async def worker() -> None:
        while True:
            k = next_ticket[0]
            next_ticket[0] += 1
            due = t0 + k / args.rate
            if due >= end:
                return
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await _one(session, url, start + k, run)

    async def sampler() -> None:
        while time.perf_counter() < end:
            await asyncio.sleep(args.sample_s)
            samples.append((time.perf_counter() - t0, rss_mb(pid), len(run.latencies)))
            print(f"  soak t={samples[-1][0]:6.0f} s  rss={samples[-1][1]:7.1f} MB  "
                  f"requests={samples[-1][2]}", file=sys.stderr, flush=True)

    await asyncio.gather(sampler(), *(worker() for _ in range(args.soak_workers)))
    run.wall = time.perf_counter() - t0
    return run, samples


def stats(runs: list[Run]) -> dict[str, float]:
    med = statistics.median
    return {
        "rps": med([len(r.latencies) / r.wall for r in runs]),
        "p50": med([pct(r.latencies, 0.50) for r in runs]) * 1000,
        "p99": med([pct(r.latencies, 0.99) for r in runs]) * 1000,
        "failed": sum(r.failed for r in runs),
    }


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="railwatch-load-"))
    up_port, sc_port = free_port(), free_port()
    py = sys.executable
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAILWATCH_", "OTEL_"))}
    env["RAILWATCH_DATA_DIR"] = str(tmp / "data")
    report = tmp / "stalls.json"
    env["RAILWATCH_STALL_REPORT"] = str(report)
    upstream = f"http://127.0.0.1:{up_port}"
    procs = {"upstream": spawn([py, "-m", "sidecar.cli", "demo-upstream", "--port", str(up_port)],
                               0, env)}
    entry = [str(HERE / "_stall_probe.py")] if args.profile else ["-m", "sidecar.cli"]
    cmd = [py, *entry, "serve", "--upstream", upstream, "--port", str(sc_port)]
    if args.config:
        cmd += ["--config", args.config]
    procs["sidecar"] = spawn(cmd, 1, env)
    sidecar = f"http://127.0.0.1:{sc_port}"
    targets = {"direct": upstream, "sidecar": sidecar}
    results: dict[str, list[Run]] = {}
    soak_result = None
    try:
        for url in targets.values():
            await wait_ready(url + "/v1/models", timeout=120)
        conn = aiohttp.TCPConnector(limit=256)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            serial = 0
            for url in targets.values():  # warm-up
                await load(session, url, 200, 8, serial)
                serial += 200
            for rnd in range(args.rounds):
                for name, url in targets.items():
                    run = await load(session, url, args.requests, args.concurrency, serial)
                    serial += args.requests
                    results.setdefault(name, []).append(run)
                print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
            if args.soak_s > 0:
                if args.profile:  # the probe's growth baseline: after warm-up and load
                    os.kill(procs["sidecar"].pid, signal.SIGUSR1)
                    await asyncio.sleep(2)
                soak_result = await soak(session, sidecar, procs["sidecar"].pid, args, serial)
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            await asyncio.to_thread(p.wait, 60)
    print_report(args, results, soak_result, report if args.profile else None)


def print_report(args: argparse.Namespace, results: dict[str, list[Run]],
                 soak_result: tuple[Run, list[tuple[float, float, int]]] | None,
                 report: Path | None) -> None:
    print(f"\n## load: {args.rounds} rounds x {args.requests} chat requests, "
          f"concurrency {args.concurrency} (medians over rounds)\n")
    print("| target | requests/s | p50 ms | p99 ms | p99/p50 | failed |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        s = stats(runs)
        print(f"| {name} | {s['rps']:.0f} | {s['p50']:.1f} | {s['p99']:.1f} | "
              f"{s['p99'] / s['p50']:.2f} | {s['failed']:.0f} |")
    if soak_result is not None:
        run, samples = soak_result
        print(f"\n## soak: {args.soak_s:.0f} s at ~{args.rate:.0f} requests/s, unique users\n")
        print(f"{len(run.latencies)} requests, {len(run.latencies) / run.wall:.1f}/s, "
              f"p50 {pct(run.latencies, 0.5) * 1000:.1f} ms, "
              f"p99 {pct(run.latencies, 0.99) * 1000:.1f} ms, lost (non-200 or error): "
              f"{run.failed}\n")
        print("| t s | RSS MB | requests |")
        print("| --- | --- | --- |")
        for t, rss, n in samples:
            print(f"| {t:.0f} | {rss:.1f} | {n} |")
        half = [rss for t, rss, _ in samples if t >= args.soak_s / 2]
        if len(half) >= 2:
            print(f"\nRSS over the second half: {half[0]:.1f} -> {half[-1]:.1f} MB "
                  f"({(half[-1] / half[0] - 1) * 100:+.1f}%)")
    if report is not None and report.exists():
        print("\n## stall probe (sidecar process)\n")
        print(json.dumps(json.loads(report.read_text()), indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--soak-s", type=float, default=0.0, help="0: no soak; 300 for the issue")
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--soak-workers", type=int, default=16)
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--config", help="a settings file for the sidecar (default: none)")
    ap.add_argument("--profile", action="store_true", help="run the sidecar under the stall probe")
    args = ap.parse_args()
    if not 0 < args.requests <= MAX_REQUESTS or not 0 <= args.soak_s <= MAX_SOAK_S:
        ap.error(f"--requests must be 1..{MAX_REQUESTS} and --soak-s 0..{MAX_SOAK_S}")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
