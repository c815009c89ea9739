"""One run of real traffic per test session, shared by the dashboard and rule tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.dashboards.traffic import Traffic, run_traffic, stop_traffic
from tests.helpers.servers import LoopThread

if TYPE_CHECKING:
    from tests.conftest import Backend


@pytest.fixture(scope="session")
def traffic(
    loop_thread: LoopThread, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Traffic]:
    database = f"rw_dash_{uuid.uuid4().hex[:10]}"
    t = run_traffic(loop_thread, backend.dsn, database, tmp_path_factory.mktemp("dash"))
    yield t
    stop_traffic(loop_thread, t)
    backend.admin.command(f"DROP DATABASE IF EXISTS {database} SYNC")
