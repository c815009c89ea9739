"""Fixtures for the ClickHouse exporter tests.

The real engine (``backend``: one chDB directory per pytest process, or the server
named by ``RAILWATCH_TEST_CLICKHOUSE_URL``) and the per-test ``database`` live in
``tests/conftest.py``: chDB opens one engine path per process, and the hand-off and
feedback tests share it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter

if TYPE_CHECKING:
    from tests.conftest import Backend


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
