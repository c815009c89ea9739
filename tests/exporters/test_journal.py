"""The record intake: finishing off the caller's thread, the crash journal, replay."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from exporters.batch import BatchProcessor, ExportPipeline
from exporters.journal import JournalSettings, RecordIntake
from exporters.memory import MemoryExporter
from sidecar.record import TraceRecord
from tests.exporters.clickhouse.ch_records import full_record
from tests.exporters.test_batch import Blocking, rec


def _wait(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_records_are_finished_in_the_worker_and_the_journal_empties(tmp_path: Path) -> None:
    memory = MemoryExporter()
    intake = RecordIntake(ExportPipeline([BatchProcessor(memory, schedule_delay_s=0.01)]),
                          journal=JournalSettings(tmp_path / "journal"))
    intake.start()
    threads: list[str] = []

    def finish(record: TraceRecord) -> TraceRecord:
        threads.append(threading.current_thread().name)
        return dataclasses.replace(record, prompt_text="masked")

    try:
        for i in range(20):
            intake.submit(rec(i, prompt_text="raw"), finish)
        memory.wait_for(lambda rs: len(rs) == 20)
        assert all(r.prompt_text == "masked" for r in memory.records)
        assert set(threads) == {"railwatch-intake"}
        _wait(lambda: intake.state()["journal_backlog_rows"] == 0)
        assert intake.stats.journaled == 20
    finally:
        intake.shutdown(5)


def test_a_crash_leaves_the_journal_and_the_next_start_replays_it(tmp_path: Path) -> None:
    stuck = Blocking()  # an exporter that never finishes: records stay in the journal
    first = RecordIntake(ExportPipeline([BatchProcessor(stuck, schedule_delay_s=0.01)]),
                         journal=JournalSettings(tmp_path / "journal"))
    first.start()
    for i in range(10):
        first.submit(full_record(i) if i % 2 else rec(i, prompt_text="kept"))
    _wait(lambda: first.stats.journaled == 10)
    assert first._log is not None
    first._log.close()  # the process dies here: no settling, no shutdown
    first._stopping = True
    stuck.release.set()

    memory = MemoryExporter()
    second = RecordIntake(ExportPipeline([BatchProcessor(memory, schedule_delay_s=0.01)]),
                          journal=JournalSettings(tmp_path / "journal"))
    second.start()
    try:
        assert second.stats.replayed == 10
        got = memory.wait_for(lambda rs: len(rs) == 10)
        assert got == [full_record(i) if i % 2 else rec(i, prompt_text="kept") for i in range(10)]
        _wait(lambda: second.state()["journal_backlog_rows"] == 0)
    finally:
        second.shutdown(5)


def test_a_failing_finisher_stores_no_text() -> None:
    memory = MemoryExporter()

    def strip(record: TraceRecord) -> TraceRecord:
        return dataclasses.replace(record, prompt_text=None)

    def broken(record: TraceRecord) -> TraceRecord:
        raise RuntimeError("masking failed")

    intake = RecordIntake(ExportPipeline([BatchProcessor(memory, schedule_delay_s=0.01)]),
                          strip_text=strip)
    intake.start()
    try:
        intake.submit(rec(1, prompt_text="raw secret"), broken)
        got = memory.wait_for(lambda rs: len(rs) == 1)
        assert got[0].prompt_text is None and intake.stats.finish_errors == 1
    finally:
        intake.shutdown(5)


def test_shutdown_does_not_wait_forever_for_a_stuck_finisher(caplog) -> None:  # type: ignore[no-untyped-def]
    """A finisher that never returns holds the intake's drain: shutdown gives up at its
    timeout and says so, instead of blocking the process's exit."""
    memory = MemoryExporter()
    entered, release = threading.Event(), threading.Event()

    def stuck(record: TraceRecord) -> TraceRecord:
        entered.set()
        release.wait(30)
        return record

    intake = RecordIntake(ExportPipeline([BatchProcessor(memory, schedule_delay_s=0.01)]))
    intake.start()
    try:
        intake.submit(rec(1), stuck)
        assert entered.wait(5)
        intake.submit(rec(2))
        started = time.monotonic()
        intake.shutdown(0.5)
        assert time.monotonic() - started < 3
        assert any("still busy at shutdown; 1 queued records" in r.getMessage()
                   for r in caplog.records)
    finally:
        release.set()


def test_a_full_intake_queue_drops_and_counts() -> None:
    memory = MemoryExporter()
    intake = RecordIntake(ExportPipeline([BatchProcessor(memory)]), max_queue=3)
    for i in range(5):  # not started: nothing drains
        intake.submit(rec(i))
    assert intake.stats.submitted == 3 and intake.stats.dropped == 2
    intake.start()
    try:
        assert len(memory.wait_for(lambda rs: len(rs) == 3)) == 3
    finally:
        intake.shutdown(5)
