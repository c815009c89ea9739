"""The ``railwatch`` command line.

Subcommands: ``serve`` (the sidecar), ``demo-upstream`` (the scripted demo model
server alone), ``check``, ``models``, ``traces`` and ``report``
(:mod:`sidecar.cli_traces`). Exit codes: 0 ok, 2 usage or configuration error, 1
start-up failure (a busy port included); ``check`` exits 3 when the decision is
``block``.
Diagnostics go through ``logging``; what a person asked to see goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidecar import __version__, cli_traces
from sidecar.drift import commands as drift_commands
from sidecar.errors import ConfigError, StartupError

logger = logging.getLogger("railwatch")


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(coro)
    return uvloop.run(coro)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-POSIX
            pass
    await stop.wait()


def _banner(url: str, upstream: str, demo: bool, traces: str) -> str:
    # the demo needs no key and serves any model name; a real upstream wants its own
    key = "unused-by-the-demo" if demo else "YOUR-API-KEY (the upstream's; forwarded as is)"
    model = "railwatch-demo" if demo else "YOUR-MODEL"
    lines = [f"railwatch {__version__} listening on {url}"]
    if demo:
        lines.append(
            f"upstream: built-in demo upstream at {upstream} "
            "(scripted answers, not a language model; pass --upstream URL for a real one)"
        )
    else:
        lines.append(f"upstream: {upstream}")
    lines += [
        "",
        "Point the openai client at the sidecar:",
        "",
        "    from openai import OpenAI",
        f'    client = OpenAI(base_url="{url}/v1", api_key="{key}")',
        "    reply = client.chat.completions.create(",
        f'        model="{model}",',
        '        messages=[{"role": "user", "content": "Hello!"}],',
        "    )",
        "    print(reply.choices[0].message.content)",
        "",
        f"or: curl {url}/v1/chat/completions -H 'Content-Type: application/json' "
        + ("" if demo else "-H 'Authorization: Bearer YOUR-API-KEY' ")
        + f"-d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'",
        f"traces: {traces}    health: {url}/healthz    readiness: {url}/readyz",
        "Ctrl-C stops.",
    ]
    return "\n".join(lines)


def _describe_exporters(settings: Any) -> str:
    parts = []
    for spec in settings.exporters:
        if spec.kind == "jsonl":
            path = str(spec.options.get("path", "-")).replace("{data_dir}", str(settings.data_path()))
            parts.append(f"jsonl -> {path}")
        elif spec.kind == "clickhouse":
            dsn = spec.options.get("dsn")
            where = "server" if dsn else f"embedded chDB in {settings.data_path('clickhouse')}"
            parts.append(f"clickhouse ({where}; read with `railwatch traces` / `railwatch report`)")
        else:
            parts.append(spec.kind)
    return ", ".join(parts) or "no exporters"


def _tune_gc(young_threshold: int) -> None:
    """Take what start-up built (detector models and tables, libraries: hundreds of MB
    of objects) out of the cyclic GC's reach, before the first request. Full
    collections walked all of it on the event loop: 236 ms pauses at concurrency 16
    (``bench/bench_load.py --profile``), the worst of the tail. Then collect the young
    generation every ``young_threshold`` container allocations (``server.
    gc_young_threshold``; 0 keeps Python's 700) instead of every 700: a request
    allocates thousands, and each collection walks every young object still alive (at
    concurrency 32, those of all requests in flight). ``bench/bench_proxy.py`` side by
    side: 9-13% less CPU per request with the default policy, p99 no worse under load
    (``bench_load.py``). The server process only (an app embedded elsewhere leaves its
    host's GC alone); objects freed later are still freed by reference counting, and
    cyclic garbage waits at most ``young_threshold`` allocations."""
    gc.collect()
    gc.freeze()
    if young_threshold:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)


async def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from sidecar.app import RUNTIME, create_app
    from sidecar.http_server import SidecarRunner
    from sidecar.settings import load_settings

    overrides: dict[str, Any] = {}
    if args.upstream:
        overrides.setdefault("upstream", {})["url"] = args.upstream
    if args.host:
        overrides.setdefault("server", {})["host"] = args.host
    if args.port is not None:
        overrides.setdefault("server", {})["port"] = args.port
    settings = load_settings(args.config, overrides=overrides)
    _setup_logging(settings.log_level)

    demo = None
    if settings.upstream.url is None:
        from sidecar.demo.upstream import start_demo_upstream

        demo = await start_demo_upstream(host="127.0.0.1", port=0)
        settings = settings.model_copy(
            update={"upstream": settings.upstream.model_copy(update={"url": demo.url})}
        )
    app = create_app(settings)
    runner = SidecarRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=settings.server.shutdown_timeout_s,
    )
    try:
        await runner.setup()
        _tune_gc(settings.server.gc_young_threshold)
        site = web.TCPSite(runner, settings.server.host, settings.server.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:  # a busy port, an address not on this host, no permission
            where = f"{settings.server.host}:{settings.server.port}"
            reason = exc.strerror or str(exc)
            raise StartupError(f"cannot listen on {where}: {reason} (is another process "
                               "using the port? pick another with --port)") from None
        host, port = runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        traces = _describe_exporters(settings)
        url = f"http://{host}:{port}"
        print(_banner(url, settings.upstream.url or "", demo is not None, traces), flush=True)
        runtime = app[RUNTIME]
        if runtime.review_auth is not None:
            notice = runtime.review_auth.startup_notice(url)
            if notice:  # a generated review token: shown once, here, never logged
                print(notice, flush=True)
        from sidecar.dashboard.wiring import startup_notice as dashboard_notice

        if notice := dashboard_notice(app, url):  # the same, for /dashboard
            print(notice, flush=True)
        await _wait_for_signal()
        logger.info("shutting down: finishing in-flight requests, flushing exporters")
    finally:
        await runner.cleanup()
        if demo is not None:
            await demo.close()
    return 0


def _demo_upstream(args: argparse.Namespace) -> int:
    from sidecar.demo.upstream import run_demo_upstream

    _setup_logging("INFO")
    run_demo_upstream(args.host, args.port, chunk_delay_ms=args.chunk_delay_ms)
    return 0


async def _check_async(args: argparse.Namespace, text: str) -> dict[str, Any]:
    from sidecar.app import build_guard
    from sidecar.policy import load_policy

    guard = build_guard(load_policy(args.policy))
    try:
        await guard.runner.start()
    except Exception as exc:  # noqa: BLE001 - any start failure ends the command cleanly
        await guard.runner.close()
        raise StartupError(f"detectors failed to start: {exc}") from None
    try:
        if args.route:
            route = guard.route_named(args.route)
            if route is None:
                raise ConfigError(f"no policy route named '{args.route}'")
        else:
            route = guard.route_for("/v1/chat/completions", None, None)
        return await guard.check_text(text, args.stage, route)
    finally:
        await guard.runner.close()


def _check(args: argparse.Namespace) -> int:
    import orjson

    _setup_logging("WARNING")
    text = sys.stdin.read() if args.text == "-" else args.text
    result = _run(_check_async(args, text))
    code = 3 if result["decision"]["action"] == "block" else 0
    if args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return code
    findings = result["findings"]
    print(f"route: {result['route'] or '(none matched)'}    stage: {args.stage}")
    if findings:
        print(f"{'detector':<12} {'label':<20} {'score':>7} {'span':>13}")
        for f in findings:
            print(f"{f['detector']:<12} {f['label']:<20} {f['score']:>7.3f} "
                  f"{str(f['start']) + '-' + str(f['end']):>13}")
    else:
        print("no findings")
    decision = result["decision"]
    reasons = ", ".join(decision["reasons"]) or "-"
    print(f"decision: {decision['action']}    reasons: {reasons}")
    if "masked_text" in result:
        print(f"masked: {result['masked_text']}")
    return code


def _models_pull(args: argparse.Namespace) -> int:
    from detectors.errors import DetectorError
    from detectors.toxicity.folder import default_model_dir
    from detectors.toxicity.pull import pull_detoxify

    _setup_logging("INFO")
    dest = Path(args.dest) if args.dest else default_model_dir(args.checkpoint)
    try:
        folder = pull_detoxify(args.checkpoint, dest, overwrite=args.overwrite, progress=True)
    except DetectorError as exc:
        print(f"railwatch: models pull failed: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {folder}; the toxicity detector finds it there (or set options.model_dir)")
    return 0


def _help_of(parser: argparse.ArgumentParser) -> Any:
    """A command group run without its action: show its help, exit 2."""

    def show(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="railwatch",
        description="Observability and guardrails sidecar for OpenAI-compatible LLM servers.",
    )
    parser.add_argument("--version", action="version", version=f"railwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the sidecar in front of an upstream",
        description="Run the sidecar proxy. With no --upstream (and no upstream.url in the "
        "config or RAILWATCH_UPSTREAM__URL), the built-in demo upstream is started.",
    )
    serve.add_argument("--upstream", metavar="URL", help="model server base URL, e.g. http://127.0.0.1:8000")
    serve.add_argument("--config", metavar="FILE", help="YAML settings file (railwatch.yaml)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080; 0 picks one)")
    serve.set_defaults(func=lambda a: _run(_serve(a)))

    demo = sub.add_parser(
        "demo-upstream",
        help="run the scripted demo upstream alone",
        description="Run the built-in OpenAI-compatible demo server (deterministic, scripted "
        "answers; not a language model).",
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--chunk-delay-ms", type=float, default=0.0,
                      help="delay between streamed chunks, milliseconds")
    demo.set_defaults(func=_demo_upstream)

    check = sub.add_parser(
        "check",
        help="run the detectors and the policy on a text",
        description="Run a policy route's detectors on TEXT (or standard input with '-') and "
        "print the findings and the decision. Exits 3 when the decision is block.",
    )
    check.add_argument("text", metavar="TEXT|-")
    check.add_argument("--stage", choices=("input", "output"), default="input")
    check.add_argument("--policy", metavar="FILE", help="policy file (default: the shipped one)")
    check.add_argument("--route", help="policy route name (default: the one for chat)")
    check.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    check.set_defaults(func=_check)

    models = sub.add_parser("models", help="manage local model folders",
                            description="Fetch and prepare model folders for offline use.")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    pull = msub.add_parser(
        "pull",
        help="download a Detoxify checkpoint into a self-contained folder (needs a network)",
        description="Download Detoxify weights, config and tokenizer and write a folder the "
        "toxicity detector loads offline.",
    )
    pull.add_argument("model", choices=("detoxify",))
    pull.add_argument("--checkpoint", choices=("original", "unbiased", "multilingual"),
                      default="original")
    pull.add_argument("--dest", help="destination folder (default: $RAILWATCH_MODELS_DIR or "
                      "~/.cache/railwatch/models, then detoxify-CHECKPOINT)")
    pull.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    pull.set_defaults(func=_models_pull)
    models.set_defaults(func=_help_of(models))

    cli_traces.add_parsers(sub)
    drift_commands.register(sub, cli_traces._storage)  # railwatch drift ... (issue 12)
    from sidecar.dashboard.cli import add_parser as add_dashboards  # its own module

    add_dashboards(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"railwatch: configuration error: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"railwatch: start-up failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
