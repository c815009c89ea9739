"""Proxy overhead benchmark: direct vs a minimal floor proxy vs the railwatch sidecar.

Starts the demo upstream, the floor proxy (``_floor_proxy.py``: aiohttp server and
client on uvloop, nothing else) and the sidecar (tracing on: every request becomes
a trace record written by the JSON-lines exporter; no detectors unless
``--policy`` is given), each as its own process. The proxies are pinned to one
core; the load generator and the upstream share the other. Targets take turns in
every round, and each figure is the median over rounds, because this machine is
shared and noisy. The steadiest figure is the proxy process's CPU time per
request, read from ``/proc/PID/stat``.

Run: ``.venv/bin/python bench/bench_proxy.py [--rounds 5] [--requests 2000]``

Stream guard time to first token, headers with the first window vs at once:
``bench/bench_proxy.py --scenarios stream --policy default --early-headers compare``
(``default``: the shipped default policy; ``compare`` runs a second sidecar whose
routes set ``stream.early_headers: true``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from _data import benchdata  # bench/ is the script's own folder

HERE = Path(__file__).resolve().parent
BODY_2KB = "Summarise the following text. " + ("lorem ipsum dolor sit amet " * 72)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """On-CPU time of every thread of ``pid`` (exporter workers included), in seconds.

    ``/proc/PID/task/*/schedstat`` counts nanoseconds; ``/proc/PID/stat`` only clock
    ticks (10 ms), too coarse for sub-millisecond figures.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended between listing and reading
    return total / 1e9


def spawn(
    cmd: list[str], core: int | None, env: dict[str, str] | None = None, cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    if core is not None and len(os.sched_getaffinity(0)) > 1:
        cmd = ["taskset", "-c", str(core), *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            cwd=cwd)


async def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url) as r:
                    await r.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)  # seconds
    wall: float = 0.0
    cpu: float = 0.0
    chunks: int = 0
    ttfb: list[float] = field(default_factory=list)  # to the first byte of the body
    ttft: list[float] = field(default_factory=list)  # to the first content token
    gaps: list[float] = field(default_factory=list)  # largest gap between chunks, per stream


_SENT = iter(range(1 << 62))


PROSE: list[str] = []  # --text prose: 2 KB prompts of real sentences, filled by main()


def prose_prompts(count: int = 400) -> list[str]:
    """``count`` different 2 KB prompts made of the Presidio synthetic dataset's texts
    (ordinary sentences with names, e-mails, phone and card numbers): what the
    detectors meet in real traffic, unlike lorem ipsum (almost no vocabulary words, no
    numbers). Raises ``FileNotFoundError`` without ``shared/benchdata``."""
    rows = orjson.loads(benchdata("presidio_synth_dataset_v2.json").read_bytes())
    texts = [" ".join(str(r["full_text"]).split()) for r in rows]
    out: list[str] = []
    start = 0
    while len(out) < count:
        parts: list[str] = []
        size = 0
        for i in range(start, start + len(texts)):
            part = texts[i % len(texts)]
            parts.append(part)
            size += len(part) + 1
            if size >= 2048:
                break
        out.append("Summarise the following text. " + " ".join(parts)[:2020])
        start += 7  # the next prompt starts elsewhere: every prompt differs
    return out


def unary_body(repeat: bool) -> bytes:
    """A 2 KB chat body; unless ``repeat``, its text differs from every other request's
    (a memo of recent texts must not make the benchmark's single prompt free)."""
    n = next(_SENT)
    if PROSE:
        text = PROSE[0 if repeat else n % len(PROSE)]
        text = text if repeat else f"Request {n}. {text}"
    else:
        text = BODY_2KB if repeat else f"Request {n}. {BODY_2KB}"
    return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})


async def load_unary(
    session: aiohttp.ClientSession, url: str, n: int, conc: int, repeat: bool = False
) -> Run:
    run = Run()
    counter = iter(range(n))

    async def worker() -> None:
        for _ in counter:
            body = unary_body(repeat)
            t = time.perf_counter()
            async with session.post(
                url + "/v1/chat/completions",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as r:
                await r.read()
                assert r.status == 200, r.status
            run.latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    run.wall = time.perf_counter() - t0
    return run


def _first_content(chunk: bytes) -> bool:
    """Does this network chunk carry a non-empty content delta (a token)?"""
    at = chunk.find(b'"content":"')
    while at != -1:
        if chunk[at + 11 : at + 12] not in (b'"', b""):
            return True
        at = chunk.find(b'"content":"', at + 11)
    return False


async def load_stream(session: aiohttp.ClientSession, url: str, n: int, pace_ms: float) -> Run:
    prompt = f"stream a paced answer please [[demo:pace_ms={pace_ms}]] [[demo:chunk=4]] " + "word " * 40
    body = orjson.dumps({"model": "m", "stream": True,
                         "messages": [{"role": "user", "content": prompt}]})
    run = Run()
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        async with session.post(url + "/v1/chat/completions", data=body,
                                headers={"Content-Type": "application/json"}) as r:
            first_byte = first_token = True
            last = None
            gap = 0.0
            async for chunk in r.content.iter_any():
                now = time.perf_counter()
                if last is not None and _first_content(chunk):
                    gap = max(gap, now - last)
                if _first_content(chunk):
                    last = now
                if first_byte:
                    run.ttfb.append(now - t)
                    first_byte = False
                if first_token and _first_content(chunk):
                    run.ttft.append(now - t)
                    first_token = False
                run.chunks += chunk.count(b"data: ")
            run.gaps.append(gap)
        run.latencies.append(time.perf_counter() - t)
    run.wall = time.perf_counter() - t0
    return run


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def sidecar_config(data_dir: Path, exporters: str, policy: str | None,
                   capture: str = "raw") -> str:
    """Settings for one sidecar variant: which exporters, and guardrails on or off."""
    lines = [f"data_dir: {data_dir}", f"privacy: {{capture: {capture}}}"]
    if exporters == "jsonl":
        lines += ["exporters:", f"  - {{kind: jsonl, options: {{path: '{data_dir}/traces.jsonl'}}}}",
                  "metrics: {enabled: false}"]
    elif exporters == "none":
        lines += ["exporters: []", "metrics: {enabled: false}"]
    elif exporters == "storage":  # ClickHouse (embedded) and Prometheus, no OTLP
        lines += ["exporters:", "  - {kind: clickhouse}", "metrics: {enabled: true}"]
    else:  # all: ClickHouse (embedded), Prometheus, OTLP to the local sink
        lines += ["exporters:", "  - {kind: clickhouse}", "  - {kind: otel}",
                  "metrics: {enabled: true}"]
    lines.append(f"guardrails: {{enabled: true, policy: '{policy}'}}" if policy
                 else "guardrails: {enabled: false}")
    return "\n".join(lines) + "\n"


async def start_otlp_sink() -> tuple[web.AppRunner, str]:
    """A local OTLP/HTTP receiver that accepts and discards (the collector's edge)."""

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/{signal}", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def main_async(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="railwatch-bench-"))
    up_port, floor_port = free_port(), free_port()
    py = sys.executable
    procs = {
        "upstream": spawn([py, "-m", "sidecar.cli", "demo-upstream", "--port", str(up_port)], 0),
    }
    upstream = f"http://127.0.0.1:{up_port}"
    procs["floor"] = spawn(
        [py, str(HERE / "_floor_proxy.py"), "--upstream", upstream, "--port", str(floor_port)], 1
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAILWATCH_", "OTEL_"))}
    sink = None
    variants = ["none", "storage", "all"] if args.exporters == "compare" else [args.exporters]
    if "all" in variants:
        sink = await start_otlp_sink()
    targets: dict[str, tuple[str, int | None]] = {
        "direct": (upstream, None),
        "floor": (f"http://127.0.0.1:{floor_port}", procs["floor"].pid),
    }
    policies = [("", args.policy)]
    if args.early_headers == "compare":
        policies.append(("-early", str(early_policy(args.policy, tmp / "policy-early.yaml"))))
    for variant, (suffix, policy) in ((v, p) for v in variants for p in policies):
        port = free_port()
        cfg = tmp / f"railwatch-{variant}{suffix}.yaml"
        cfg.write_text(sidecar_config(tmp / f"{variant}{suffix}", variant, policy, args.capture))
        venv = dict(env)
        if variant == "all" and sink is not None:
            venv["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink[1]
        name = ("sidecar" if len(variants) == 1 else f"sidecar-{variant}") + suffix
        trees = [(name, None)]
        if args.baseline_tree:  # the same configuration on another checkout, side by side
            trees.append((name + "-base", args.baseline_tree))
        for label, tree in trees:
            port = free_port()
            tenv = dict(venv)
            if tree is not None:
                tenv["PYTHONPATH"] = tree
                cfg = tmp / f"railwatch-{variant}{suffix}-base.yaml"
                cfg.write_text(sidecar_config(tmp / f"{variant}{suffix}-base", variant, policy,
                                              args.capture))
            procs[label] = spawn([py, "-m", "sidecar.cli", "serve", "--config", str(cfg),
                                  "--upstream", upstream, "--port", str(port)], 1, tenv,
                                 cwd=tree)
            targets[label] = (f"http://127.0.0.1:{port}", procs[label].pid)
    try:
        for url, _ in targets.values():
            await wait_ready(url + "/v1/models")
        if len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, {0})  # the load generator shares core 0 with the upstream
        results: dict[tuple[str, str], list[Run]] = {}
        conn = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=conn) as session:
            scenarios = [
                ("unary c=1",
                 lambda u: load_unary(session, u, args.requests // 4, 1, args.repeat_prompt)),
                ("unary c=32",
                 lambda u: load_unary(session, u, args.requests, 32, args.repeat_prompt)),
                ("stream", lambda u: load_stream(session, u, args.streams, args.pace_ms)),
            ]
            wanted = args.scenarios.split(",")
            scenarios = [s for s in scenarios if s[0].split()[0] in wanted]
            for url, _ in targets.values():  # warm-up: connections, caches, JIT-free paths
                await load_unary(session, url, 200, 8)
            for rnd in range(args.rounds):
                for scen, fn in scenarios:
                    for name, (url, pid) in targets.items():
                        before = cpu_seconds(pid) if pid else 0.0
                        run = await fn(url)
                        run.cpu = (cpu_seconds(pid) - before) if pid else 0.0
                        results.setdefault((scen, name), []).append(run)
                print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():  # asynchronously: the OTLP sink on this loop must keep answering
            await asyncio.to_thread(p.wait, 30)
        if sink is not None:
            await sink[0].cleanup()
    report(results, args, [n for n in targets if n.startswith("sidecar")])


def early_policy(policy: str | None, path: Path) -> Path:
    """``policy`` (the shipped default when None) with ``stream.early_headers: true``."""
    import yaml

    from sidecar.policy import default_policy_path

    doc = yaml.safe_load(Path(policy or default_policy_path()).read_text())
    for route in doc.get("routes") or ():
        route.setdefault("stream", {})["early_headers"] = True
    path.write_text(yaml.safe_dump(doc))
    return path


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def report(results: dict[tuple[str, str], list[Run]], args: argparse.Namespace,
           sidecars: list[str]) -> None:
    names = ["direct", "floor", *sidecars]
    print(f"\nrailwatch proxy benchmark: medians of {args.rounds} rounds, 2 KB chat bodies ({args.text}), "
          f"proxies pinned to one core, exporters: {args.exporters}, guardrails: "
          + (f"on ({args.policy})" if args.policy else "off"))
    for scen in ("unary c=1", "unary c=32"):
        if (scen, "direct") not in results:
            continue
        print(f"\n{scen}")
        print(f"{'target':<14} {'CPU ms/req':>10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'added p50':>10} {'added p99':>10}")
        direct = results[(scen, "direct")]
        d50 = med([pct(r.latencies, 0.5) for r in direct])
        d99 = med([pct(r.latencies, 0.99) for r in direct])
        cpu: dict[str, float] = {}
        for name in names:
            runs = results[(scen, name)]
            n = len(runs[0].latencies)
            cpu[name] = med([r.cpu / n * 1000 for r in runs])
            rps = med([n / r.wall for r in runs])
            p50 = med([pct(r.latencies, 0.5) for r in runs])
            p99 = med([pct(r.latencies, 0.99) for r in runs])
            cpu_s = f"{cpu[name]:.3f}" if name != "direct" else "-"
            print(f"{name:<14} {cpu_s:>10} {rps:>8.0f} {p50 * 1000:>8.3f} {p99 * 1000:>8.3f} "
                  f"{(p50 - d50) * 1000:>10.3f} {(p99 - d99) * 1000:>10.3f}")
        if not args.policy:
            target = "<= 1.5x: guardrails off"
        elif Path(args.policy).name == "default.yaml":
            target = ("<= 2.5x at c=1, <= 2x at c=32: the shipped default policy, "
                      "profanity fallback (issue 8)")
        else:
            target = "no target for this policy"
        for name in sidecars:
            print(f"CPU per request, {name}/floor: {cpu[name] / cpu['floor']:.2f}x ({target})")
    if ("stream", "direct") not in results:
        return
    print(f"\nstream ({args.streams} streams per round, chunks paced {args.pace_ms} ms)")
    print(f"{'target':<14} {'TTFB p50 ms':>12} {'vs direct':>10} {'TTFT p50 ms':>12} "
          f"{'vs direct':>10} {'CPU us/chunk':>13} {'chunks':>7} {'max gap ms':>11}")
    d_ttfb = med([pct(r.ttfb, 0.5) for r in results[("stream", "direct")]])
    d_ttft = med([pct(r.ttft, 0.5) for r in results[("stream", "direct")]])
    per_chunk: dict[str, float] = {}
    for name in names:
        runs = results[("stream", name)]
        ttfb = med([pct(r.ttfb, 0.5) for r in runs])
        ttft = med([pct(r.ttft, 0.5) for r in runs])
        per_chunk[name] = med([r.cpu / max(1, r.chunks) * 1e6 for r in runs])
        cpu_s = f"{per_chunk[name]:.1f}" if name != "direct" else "-"
        gap = med([pct(r.gaps, 0.5) for r in runs])
        print(f"{name:<14} {ttfb * 1000:>12.3f} {(ttfb - d_ttfb) * 1000:>10.3f} "
              f"{ttft * 1000:>12.3f} {(ttft - d_ttft) * 1000:>10.3f} {cpu_s:>13} "
              f"{runs[0].chunks:>7} {gap * 1000:>11.1f}")
    for name in sidecars:
        print(f"CPU per chunk, {name}/floor: {per_chunk[name] / per_chunk['floor']:.2f}x "
              "(target <= 1.5x; time to first token within 1 ms of direct)")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--requests", type=int, default=2000, help="requests per c=32 run (c=1 runs a quarter)"
    )
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--pace-ms", type=float, default=5.0)
    ap.add_argument("--exporters", choices=("jsonl", "none", "storage", "all", "compare"), default="jsonl",
                    help="sidecar exporters: jsonl (tracing on, default), none, storage (ClickHouse "
                    "and Prometheus), all (plus OTLP to a local sink, unsampled), or compare "
                    "(none, storage and all side by side)")
    ap.add_argument("--capture", choices=("raw", "masked", "none"), default="raw",
                    help="privacy.capture of the sidecars (masked is the shipped default)")
    ap.add_argument("--baseline-tree", metavar="DIR",
                    help="also run a sidecar from this checkout (e.g. /work/main), same settings")
    ap.add_argument(
        "--policy",
        help="policy file for the sidecar (detectors on); default: "
        "guardrails off, tracing only (e.g. bench/policy_cpu.yaml)",
    )
    ap.add_argument("--scenarios", default="unary,stream",
                    help="comma list of unary, stream (default both)")
    ap.add_argument("--repeat-prompt", action="store_true",
                    help="send one identical 2 KB prompt (default: each request's differs, so "
                    "the toxicity memo of recent texts cannot help)")
    ap.add_argument("--text", choices=("lorem", "prose"), default="lorem",
                    help="what the 2 KB unary prompts say: lorem ipsum (default; the issue's "
                    "figures) or prose, real sentences with PII from shared/benchdata")
    ap.add_argument("--early-headers", choices=("off", "compare"), default="off",
                    help="compare: a second sidecar with stream.early_headers on every route")
    args = ap.parse_args()
    if args.text == "prose":
        PROSE[:] = prose_prompts()
    if args.policy == "default":
        from sidecar.policy import default_policy_path

        args.policy = str(default_policy_path())
    try:
        import uvloop

        uvloop.run(main_async(args))
    except ImportError:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
