"""Drift rows reach ClickHouse within ``drift.insert_max_age_s`` even when no record
follows them; shutdown writes the rest; a failed timed insert is counted and logged."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from exporters.batch import BatchProcessor
from exporters.clickhouse import migrate
from exporters.clickhouse.drift_store import DriftStore
from sidecar import semconv as sc
from sidecar.drift.config import DriftSettings
from sidecar.drift.state import DriftState
from sidecar.drift.worker import DriftExporter
from sidecar.errors import ConfigError
from sidecar.record import TraceRecord
from sidecar.settings import load_settings

if TYPE_CHECKING:
    from tests.conftest import Backend

DEADLINE_S = 30.0  # generous: the machine is shared; the age bound itself is 0.2 s


def _record() -> TraceRecord:
    now = time.time()
    return TraceRecord(
        request_id=uuid.uuid4().hex, trace_id="0" * 32, span_id="0" * 16, parent_span_id=None,
        started_at=now, ended_at=now, method="POST", path="/v1/chat/completions", route="chat",
        upstream="http://u", model_requested="m", model_served="m-2024",
        system_fingerprint="fp1", finish_reasons=("stop",), status=200,
        prompt_tokens=10, completion_tokens=5, total_ms=3.0,
        prompt_text="user: How do I reset my password?", output_text="Echo: ok",
        attributes={sc.RAILWATCH_PROMPT_TURNS: "1"})


def _count(backend: Backend, database: str) -> int:
    rows = backend.admin.query(f"SELECT count() FROM {database}.drift_requests").result_rows
    return int(rows[0][0])


def _wait_for(check: object, deadline_s: float = DEADLINE_S) -> bool:
    assert callable(check)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


def test_a_lone_row_is_stored_within_its_max_age_without_another_record(
    backend: Backend, database: str,
) -> None:
    migrate(backend.admin, database)
    state = DriftState()
    worker = DriftExporter(DriftSettings(insert_max_age_s=0.2), DriftStore.for_client(
        backend.admin, database), state, pod="p", store_text=False)
    worker.start()
    processor = BatchProcessor(worker, schedule_delay_s=0.05)
    try:
        processor.submit(_record())  # and nothing after it: no export call comes to flush
        assert _wait_for(lambda: _count(backend, database) == 1)
        assert state.sampled == 1
    finally:
        processor.shutdown(10)
    assert _count(backend, database) == 1


def test_shutdown_stores_rows_younger_than_their_max_age(backend: Backend,
                                                         database: str) -> None:
    migrate(backend.admin, database)
    worker = DriftExporter(DriftSettings(insert_max_age_s=300), DriftStore.for_client(
        backend.admin, database), DriftState(), pod="p", store_text=False)
    worker.start()
    processor = BatchProcessor(worker, schedule_delay_s=0.05)
    for _ in range(3):
        processor.submit(_record())
    processor.shutdown(10)
    assert _count(backend, database) == 3


def test_a_failed_timed_insert_is_counted_and_logged(
    backend: Backend, database: str, caplog: pytest.LogCaptureFixture,
) -> None:
    # a database with no drift tables: ClickHouse refuses the insert
    state = DriftState()
    worker = DriftExporter(DriftSettings(insert_max_age_s=0.1), DriftStore.for_client(
        backend.admin, database), state, pod="p", store_text=False)
    processor = BatchProcessor(worker, schedule_delay_s=0.05)
    try:
        with caplog.at_level(logging.ERROR, logger="railwatch.drift"):
            processor.submit(_record())
            assert _wait_for(lambda: state.skipped.get("store") == 1)
            assert _wait_for(lambda: any("could not store 1 rows" in r.getMessage()
                                         for r in caplog.records))
    finally:
        processor.shutdown(10)
    assert state.sampled == 0 and state.skipped == {"store": 1}


@pytest.mark.parametrize(("value", "message"), [
    ("0", "greater than 0"), ("-1", "greater than 0"), ("301", "less than or equal to 300"),
    ("soon", "valid number"),
])
def test_a_bad_max_age_names_the_setting_and_its_source(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env={"RAILWATCH_DRIFT__INSERT_MAX_AGE_S": value})
    text = str(err.value)
    assert ("invalid setting 'drift.insert_max_age_s' (from environment variable "
            "RAILWATCH_DRIFT__INSERT_MAX_AGE_S)") in text
    assert message in text


def test_the_max_age_defaults_to_five_seconds_and_keeps_its_old_name() -> None:
    assert load_settings(env={}).drift.insert_max_age_s == 5.0
    old = load_settings(env={"RAILWATCH_DRIFT__INSERT_INTERVAL_S": "2"})
    assert old.drift.insert_max_age_s == 2.0


def test_an_old_setting_above_the_bound_still_starts_at_the_bound(
        caplog: pytest.LogCaptureFixture) -> None:
    """``insert_interval_s`` had no upper bound: an old settings file keeps starting,
    with a warning, at 300 s; with both names, the new one wins, with a warning."""
    with caplog.at_level(logging.WARNING, logger="sidecar.drift.config"):
        old = load_settings(env={"RAILWATCH_DRIFT__INSERT_INTERVAL_S": "600"})
        both = load_settings(env={"RAILWATCH_DRIFT__INSERT_INTERVAL_S": "600",
                                  "RAILWATCH_DRIFT__INSERT_MAX_AGE_S": "3"})
    assert old.drift.insert_max_age_s == 300.0 and both.drift.insert_max_age_s == 3.0
    messages = [r.getMessage() for r in caplog.records]
    assert any("at most 300 s" in m for m in messages)
    assert any("using insert_max_age_s" in m for m in messages)
    with pytest.raises(ConfigError):
        load_settings(env={"RAILWATCH_DRIFT__INSERT_INTERVAL_S": "soon"})
