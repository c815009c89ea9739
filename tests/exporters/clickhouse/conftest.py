"""Fixtures for the ClickHouse exporter tests: one real engine per session.

chDB runs one engine path per process, so the whole pytest process shares one
chDB directory (session-scoped) and every test gets its own **database** in it.
With ``RAILWATCH_TEST_CLICKHOUSE_URL`` set (``http://user:pass@host:8123``) every
backend test also runs against that server.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter, connect

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
def make_exporter(
    backend: Backend, database: str, tmp_path: Path
) -> Iterator[Callable[..., ClickHouseExporter]]:
    """``make_exporter(**config_overrides)``: a started exporter, shut down after the test."""
    made: list[ClickHouseExporter] = []

    def factory(*, start: bool = True, **overrides: Any) -> ClickHouseExporter:
        options: dict[str, Any] = {
            "dsn": backend.dsn,
            "database": database,
            "data_dir": tmp_path / "data",
            "spill_dir": tmp_path / "spill",
            "insert_max_rows": 50,
            "insert_max_age_s": 0.05,
            "retry_initial_s": 0.02,
            "retry_max_s": 0.2,
            "ttl_text_days": None,
        }
        options.update(overrides)
        exporter = ClickHouseExporter(ClickHouseConfig(**options))
        made.append(exporter)
        if start:
            exporter.start()
        return exporter

    yield factory
    for exporter in made:
        exporter.shutdown(5.0)


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    """Poll until ``predicate()``; fail the test (not a timing assertion) if it never holds."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition never held: {what}")
        time.sleep(0.02)


@pytest.fixture
def wait() -> Callable[..., None]:
    return wait_until
