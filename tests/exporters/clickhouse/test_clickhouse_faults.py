"""Outages: spill while ClickHouse fails, replay in order once it answers, exactly once.

Faults are injected at the edge only: renaming a target table away (inserts then
fail with UNKNOWN_TABLE on chDB and on a server alike), a loopback HTTP server
that answers 500 or a port nothing listens on, and a real process kill.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from exporters.base import ExportResult
from exporters.batch import BatchProcessor
from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter, connect
from exporters.errors import StorageLockedError, StorageUnavailableError
from tests.exporters.clickhouse.ch_records import full_record

REPO = Path(__file__).resolve().parents[3]


def _counts(client, database):
    traces = client.query(
        f"SELECT count(), uniqExact(request_id) FROM {database}.traces"
    ).result_rows[0]
    findings = client.query(f"SELECT count() FROM {database}.findings").result_rows[0][0]
    minute_requests = client.query(f"SELECT sum(requests) FROM {database}.traces_1m").result_rows[0][0]
    minute_runs = client.query(f"SELECT sum(runs) FROM {database}.detector_runs_1m").result_rows[0][0]
    return traces, findings, minute_requests, minute_runs


def _ids(client, database):
    return {r[0] for r in client.query(f"SELECT request_id FROM {database}.traces").result_rows}


@pytest.mark.parametrize("broken", ["traces", "findings"])
def test_outage_mid_stream_spills_then_replays_every_row_exactly_once(
    backend, database, make_exporter, wait, broken
):
    """``findings`` broken = a partial failure: each unit's traces insert succeeds,
    its findings insert fails, the unit spills and its replay re-sends the traces
    rows, which the deduplication token must drop (in the aggregates too)."""
    client = backend.admin
    exporter = make_exporter(insert_max_rows=40)
    processor = BatchProcessor(exporter, max_batch=20, schedule_delay_s=0.01)
    records = [full_record(i) for i in range(600)]

    for r in records[:200]:
        processor.submit(r)
    assert processor.force_flush(20)
    client.command(f"RENAME TABLE {database}.{broken} TO {database}.{broken}_away")
    for r in records[200:400]:
        processor.submit(r)
    processor.force_flush(20)  # False: the rows are in the spill log, not in ClickHouse
    wait(lambda: exporter.backlog_rows > 0, what="rows spilled")
    assert exporter.state()["last_error"].endswith("UNKNOWN_TABLE")
    for r in records[400:500]:
        processor.submit(r)  # still failing: goes behind the backlog
    processor.force_flush(20)
    client.command(f"RENAME TABLE {database}.{broken}_away TO {database}.{broken}")
    for r in records[500:]:
        processor.submit(r)
    assert processor.force_flush(20)
    wait(lambda: exporter.backlog_rows == 0, what="replayed")
    processor.shutdown(5)

    traces, findings, minute_requests, minute_runs = _counts(client, database)
    assert traces == (600, 600)
    assert findings == 600 * 2
    assert minute_requests == 600
    assert minute_runs == 600 * 3  # the runs' aggregate is filled exactly once too
    assert _ids(client, database) == {r.request_id for r in records}
    assert exporter.spilled_rows >= 200 and exporter.replayed_rows == exporter.spilled_rows
    assert exporter.dropped_rows == 0 and processor.stats.failed == 0
    assert exporter.backlog_bytes == 0 or exporter.backlog_rows == 0


def test_restart_replays_a_backlog_left_by_a_previous_exporter(
    backend, database, make_exporter, wait, tmp_path
):
    client = backend.admin
    first = make_exporter()
    first.export([full_record(i) for i in range(50)])
    assert first.force_flush(10)
    client.command(f"RENAME TABLE {database}.traces TO {database}.traces_away")
    assert first.export([full_record(i) for i in range(50, 170)]) is ExportResult.SUCCESS
    first.force_flush(5)
    first.shutdown(5)  # backend still broken: the backlog stays on disk
    assert first.backlog_rows == 0  # closed
    assert any((tmp_path / "spill").glob("*.seg"))

    client.command(f"RENAME TABLE {database}.traces_away TO {database}.traces")
    second = make_exporter()
    assert second.backlog_rows == 120 or second.replayed_rows > 0
    wait(lambda: second.backlog_rows == 0, what="second exporter replayed the backlog")
    assert second.replayed_rows == 120
    assert _counts(client, database)[0] == (170, 170)


def test_spill_written_by_a_killed_process_is_replayed(backend, database, make_exporter, wait,
                                                         tmp_path, closed_port):
    """A child process exports while its ClickHouse server refuses connections,
    then dies with os._exit (no shutdown, no flush); this process replays its spill."""
    spill_dir = tmp_path / "spill"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter
        from ch_records import full_record
        exporter = ClickHouseExporter(ClickHouseConfig(
            dsn="http://127.0.0.1:{closed_port}", database={database!r},
            spill_dir={str(spill_dir)!r}, data_dir={str(tmp_path / "child")!r},
            insert_max_rows=20, connect_timeout_s=1, retry_initial_s=5,
            spill_fsync_every_s=0, spill_fsync_every_n=0))
        exporter.start()
        for start in range(0, 100, 20):
            exporter.export([full_record(i) for i in range(start, start + 20)])
        print(exporter.spilled_rows, exporter.backlog_rows, flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["100", "100"]

    exporter = make_exporter(spill_dir=spill_dir)
    wait(lambda: exporter.backlog_rows == 0, what="replay of the killed process's spill")
    assert exporter.replayed_rows == 100
    assert _counts(backend.admin, database)[0] == (100, 100)


def test_spill_bound_drops_and_counts_without_logging_text(backend, database, make_exporter,
                                                           caplog):
    client = backend.admin
    exporter = make_exporter(spill_max_bytes=20_000, spill_segment_bytes=8_000,
                             insert_max_rows=5, retry_initial_s=60, retry_max_s=60)
    client.command(f"RENAME TABLE {database}.traces TO {database}.traces_away")
    results = []
    with caplog.at_level(logging.WARNING):
        for start in range(0, 200, 5):
            results.append(exporter.export([full_record(i) for i in range(start, start + 5)]))
    assert ExportResult.FAILURE in results
    assert exporter.dropped_rows > 0
    assert exporter.spilled_rows + exporter.dropped_rows == 200
    assert exporter.backlog_bytes <= 20_000
    assert "dropped" in caplog.text
    assert "Bonjour" not in caplog.text and "Réponse" not in caplog.text
    client.command(f"RENAME TABLE {database}.traces_away TO {database}.traces")
    assert exporter.force_flush(10)
    assert _counts(client, database)[0] == (exporter.spilled_rows, exporter.spilled_rows)


def test_store_text_false_writes_no_text_to_the_spill_log(backend, database, make_exporter,
                                                          tmp_path):
    client = backend.admin
    exporter = make_exporter(store_text=False, retry_initial_s=60, retry_max_s=60)
    client.command(f"RENAME TABLE {database}.traces TO {database}.traces_away")
    exporter.export([full_record(i) for i in range(60)])
    exporter.force_flush(2)
    assert exporter.backlog_rows == 60
    blob = b"".join(p.read_bytes() for p in (tmp_path / "spill").glob("*.seg"))
    assert blob and b"Bonjour" not in blob and "Réponse".encode() not in blob


class _Always500(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._fail()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._fail()

    def _fail(self) -> None:
        body = b"Code: 999. DB::Exception: injected failure. (KEEPER_EXCEPTION)"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_500() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Always500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_server_answering_500_starts_degraded_and_spills(tmp_path, http_500, caplog):
    dsn = f"http://railwatch:s3cret-pw@127.0.0.1:{http_500}"
    cfg = ClickHouseConfig(dsn=dsn, spill_dir=tmp_path / "spill", insert_max_rows=10,
                           retry_initial_s=60, retry_max_s=60)
    exporter = ClickHouseExporter(cfg)
    with caplog.at_level(logging.INFO):
        exporter.start()
        try:
            assert not exporter.ready
            assert exporter.export([full_record(i) for i in range(30)]) is ExportResult.SUCCESS
            assert exporter.spilled_rows == 30 and exporter.backlog_rows == 30
            state = exporter.state()
        finally:
            exporter.shutdown(2)
    assert "s3cret-pw" not in str(state) and "s3cret-pw" not in caplog.text
    assert state["dsn"] == f"http://railwatch:***@127.0.0.1:{http_500}"

    strict = ClickHouseExporter(cfg.with_options(require_at_start=True,
                                                 spill_dir=tmp_path / "spill2"))
    with pytest.raises(StorageUnavailableError) as info:
        strict.start()
    assert f"127.0.0.1:{http_500}" in str(info.value) and "s3cret-pw" not in str(info.value)


def test_refused_port_with_require_at_start_fails_clearly(tmp_path, closed_port):
    cfg = ClickHouseConfig(dsn=f"http://127.0.0.1:{closed_port}", require_at_start=True,
                           spill_dir=tmp_path / "spill", connect_timeout_s=1)
    with pytest.raises(StorageUnavailableError, match=f"127.0.0.1:{closed_port}"):
        ClickHouseExporter(cfg).start()


def test_embedded_path_held_by_another_process_is_refused_by_name(backend):
    if backend.kind != "chdb":
        pytest.skip("chDB only")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from exporters.clickhouse import ClickHouseConfig, connect
        from exporters.errors import StorageLockedError
        try:
            connect(ClickHouseConfig(dsn={backend.dsn!r}))
        except StorageLockedError as exc:
            print("LOCKED", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.stdout.startswith("LOCKED"), out.stdout + out.stderr[-2000:]
    assert str(backend.path) in out.stdout and f"pid {os.getpid()}" in out.stdout
    assert "http(s)://" in out.stdout


def test_second_embedded_path_in_one_process_is_refused_by_name(backend, tmp_path):
    if backend.kind != "chdb":
        pytest.skip("chDB only")
    with pytest.raises(StorageLockedError) as info:
        connect(ClickHouseConfig(dsn=f"chdb://{tmp_path / 'other'}"))
    assert str(backend.path) in str(info.value) and "one engine path per process" in str(info.value)


def test_a_query_longer_than_query_timeout_is_stopped_by_the_engine(backend):
    """``query_timeout_s`` bounds every query, embedded chDB included (it has no socket
    to time out): the engine stops it with TIMEOUT_EXCEEDED."""
    import time

    from clickhouse_connect.driver.exceptions import DatabaseError

    client = connect(ClickHouseConfig(dsn=backend.dsn, query_timeout_s=1))
    started = time.monotonic()
    with pytest.raises(DatabaseError) as err:
        client.query("SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 1")
    assert "TIMEOUT_EXCEEDED" in str(err.value) and time.monotonic() - started < 10
    assert client.query("SELECT 1").result_rows == [(1,)]  # the client is still usable


def test_trace_inserts_through_a_slow_view_are_not_stopped_half_way(
        backend, database, make_exporter):
    """query_timeout_s bounds queries, not the trace inserts: an insert feeding a
    materialized view, stopped half-way, would keep the base rows and lose the view's
    (the retry is then deduplicated away). Here a view takes 1.8 s per batch of 6 rows
    against a 1 s query timeout, and every row reaches both tables."""
    client = backend.admin
    exporter = make_exporter(query_timeout_s=1)
    client.command(f"CREATE TABLE {database}.slow_agg (request_id String) "
                   "ENGINE = MergeTree ORDER BY request_id")
    client.command(f"CREATE MATERIALIZED VIEW {database}.slow_mv TO {database}.slow_agg AS "
                   f"SELECT request_id FROM {database}.traces WHERE sleepEachRow(0.3) = 0")
    processor = BatchProcessor(exporter, max_batch=6, schedule_delay_s=0.01)
    records = [full_record(i) for i in range(6)]
    for r in records:
        processor.submit(r)
    assert processor.force_flush(30)
    processor.shutdown(5)
    assert exporter.spilled_rows == 0 and exporter.state()["last_error"] is None
    agg = client.query(f"SELECT count() FROM {database}.slow_agg").result_rows
    assert agg == [(6,)] and _counts(client, database)[2] == 6
