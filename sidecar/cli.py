"""The ``railwatch`` command line.

Subcommands: ``serve`` (the sidecar), ``demo-upstream`` (the scripted demo model
server alone). Exit codes: 0 ok, 2 usage or configuration error, 1 start-up failure.
Diagnostics go through ``logging``; what a person asked to see goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from sidecar import __version__
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
        f'    client = OpenAI(base_url="{url}/v1", api_key="unused-by-the-demo")',
        "    reply = client.chat.completions.create(",
        f'        model="{"railwatch-demo" if demo else "YOUR-MODEL"}",',
        '        messages=[{"role": "user", "content": "Hello!"}],',
        "    )",
        "    print(reply.choices[0].message.content)",
        "",
        f"or: curl {url}/v1/chat/completions -H 'Content-Type: application/json' "
        f"-d '{{\"model\": \"railwatch-demo\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'",
        f"traces: {traces}    health: {url}/healthz    readiness: {url}/readyz",
        "Ctrl-C stops.",
    ]
    return "\n".join(lines)


async def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from sidecar.app import create_app
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
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=settings.server.shutdown_timeout_s,
    )
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.server.host, settings.server.port, reuse_address=True)
        await site.start()
        host, port = runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        traces = ", ".join(f"{e.kind}" for e in settings.exporters) or "no exporters"
        for spec in settings.exporters:
            if spec.kind == "jsonl":
                path = str(spec.options.get("path", "-")).replace(
                    "{data_dir}", str(settings.data_path())
                )
                traces = traces.replace("jsonl", f"jsonl -> {path}", 1)
        print(_banner(f"http://{host}:{port}", settings.upstream.url or "", demo is not None, traces),
              flush=True)
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
