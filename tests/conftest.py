"""Shared fixtures: a background event loop, the demo upstream, sidecar factories, and
the one real ClickHouse engine of the test process.

chDB runs one engine path per process, so the whole pytest process shares one
chDB directory (session-scoped ``backend``) and every test gets its own
**database** in it (``database``; ``review_database`` also has the schema). With
``RAILWATCH_TEST_CLICKHOUSE_URL`` set (``http://user:pass@host:8123``) every
backend test also runs against that server.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# No test may download model weights: the toxicity detector's `backend: auto` would
# otherwise start fetching Detoxify (tests/detectors/toxicity/test_toxicity_fetch.py
# lifts this for its loopback server).
os.environ.setdefault("RAILWATCH_MODEL_DOWNLOADS", "0")

from clickhouse_connect.driver.client import Client

from tests.helpers.servers import LoopThread, RunningSidecar, sidecar_settings, start_sidecar_async


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture(scope="session")
def demo_upstream(loop_thread: LoopThread) -> Iterator[Any]:
    from sidecar.demo.upstream import start_demo_upstream

    demo = loop_thread.run(start_demo_upstream(host="127.0.0.1", port=0))
    yield demo
    loop_thread.run(demo.close())


@pytest.fixture
def start_sidecar(loop_thread: LoopThread) -> Iterator[Callable[..., RunningSidecar]]:
    """Factory: ``start_sidecar(upstream_url, server={...}, upstream={...})``; stopped after the test."""
    started: list[RunningSidecar] = []

    def factory(
        upstream_url: str, *, exporters: list[Any] | None = None, **sections: dict[str, Any]
    ) -> RunningSidecar:
        settings = sidecar_settings(upstream_url, **sections)
        sc = loop_thread.run(start_sidecar_async(settings, exporters))
        started.append(sc)
        return sc

    yield factory
    for sc in started:
        loop_thread.run(sc.runner.cleanup())


@pytest.fixture
def scripted_upstream(loop_thread: LoopThread) -> Iterator[Callable[..., str]]:
    """Factory: ``scripted_upstream({"/v1/chat/completions": handler, ...})`` starts a real
    aiohttp server on loopback answering POSTs with the given handlers; returns its URL."""
    from aiohttp import web

    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Any]) -> web.AppRunner:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_post(path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    def factory(routes: dict[str, Any]) -> str:
        runner = loop_thread.run(start(routes))
        runners.append(runner)
        return "http://{}:{}".format(*runner.addresses[0][:2])

    yield factory
    for runner in runners:
        loop_thread.run(runner.cleanup())


@pytest.fixture
def sidecar(start_sidecar: Callable[..., RunningSidecar], demo_upstream: Any) -> RunningSidecar:
    return start_sidecar(demo_upstream.url)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- ClickHouse: one engine per process -------------------------------------------------------

SERVER_URL = os.environ.get("RAILWATCH_TEST_CLICKHOUSE_URL")


@dataclass
class Backend:
    kind: str  # "chdb" | "server"
    dsn: str
    admin: Client
    path: Path | None = None  # the chDB directory


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb") / "engine"


@pytest.fixture(scope="session", params=["chdb", "server"] if SERVER_URL else ["chdb"])
def backend(request: pytest.FixtureRequest, chdb_dir: Path) -> Iterator[Backend]:
    import clickhouse_connect

    from exporters.clickhouse import ClickHouseConfig, connect

    if request.param == "server":
        assert SERVER_URL
        admin = connect(ClickHouseConfig(dsn=SERVER_URL))
        yield Backend("server", SERVER_URL, admin)
    else:
        dsn = f"chdb://{chdb_dir}"
        # held for the whole session: the engine stays up while exporters come and go
        admin = clickhouse_connect.get_client(dsn=dsn)
        yield Backend("chdb", dsn, admin, chdb_dir)
    admin.close()


@pytest.fixture
def database(backend: Backend) -> Iterator[str]:
    name = f"rw_test_{uuid.uuid4().hex[:12]}"
    yield name
    backend.admin.command(f"DROP DATABASE IF EXISTS {name} SYNC")


@pytest.fixture
def review_database(backend: Backend, database: str) -> str:
    """``database`` with railwatch's schema (traces, feedback, handoffs...) applied."""
    from exporters.clickhouse import migrate

    migrate(backend.admin, database)
    return database
