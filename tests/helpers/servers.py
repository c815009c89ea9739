"""Real servers on loopback for tests, each on its own event loop in a background thread.

Tests talk to them over TCP exactly as a user would (the official ``openai``
client, raw HTTP); only the process is shared, so tests can read the in-memory
exporter of the sidecar they started.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from exporters.base import Exporter
from exporters.memory import MemoryExporter
from sidecar.app import RUNTIME, Runtime, create_app
from sidecar.http_server import SidecarRunner
from sidecar.settings import Settings, load_settings

T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@dataclass
class RunningSidecar:
    url: str
    runner: web.AppRunner
    memory: MemoryExporter
    runtime: Runtime

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


async def start_sidecar_async(
    settings: Settings, exporters: Sequence[Exporter] | None = None
) -> RunningSidecar:
    memory = MemoryExporter()
    app = create_app(settings, exporters=[memory, *(exporters or [])])
    runner = SidecarRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return RunningSidecar(f"http://{host}:{port}", runner, memory, app[RUNTIME])


def sidecar_settings(upstream_url: str, **sections: dict[str, Any]) -> Settings:
    overrides: dict[str, Any] = {
        # each sidecar its own data dir: crash journal, privacy key (never the cwd's)
        "data_dir": tempfile.mkdtemp(prefix="railwatch-test-"),
        "upstream": {"url": upstream_url},
        "privacy": {"capture": "raw"},
        "guardrails": {"enabled": False},  # proxy tests; guard tests turn it on
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            overrides.setdefault(key, {}).update(value)
        else:
            overrides[key] = value
    return load_settings(env={}, overrides=overrides)


def seen(demo: Any, needle: str) -> list[dict[str, Any]]:
    """What the demo upstream received (its ``/_demo/requests`` log) with ``needle`` in
    the JSON of its body. Blocks the calling thread (runs its own event loop)."""

    async def go() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.get(demo.url + "/_demo/requests") as r:
            return list((await r.json())["data"])

    return [r for r in asyncio.run(go()) if needle in json.dumps(r["body"])]
