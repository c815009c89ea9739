"""The bounded queue + worker between the request path and exporters."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import orjson

from exporters.base import ExportResult
from exporters.batch import BatchProcessor, ExportPipeline
from exporters.jsonl import JsonLinesExporter
from exporters.memory import MemoryExporter
from sidecar.record import DecisionRecord, FindingRecord, TraceRecord


def rec(i: int, **kw: object) -> TraceRecord:
    base: dict[str, object] = dict(
        request_id=f"{i:032x}", trace_id=f"{i:032x}", span_id=f"{i:016x}", parent_span_id=None,
        started_at=1.0, ended_at=2.0, method="POST", path="/v1/chat/completions", route="chat",
        upstream="http://u",
    )
    base.update(kw)
    return TraceRecord(**base)  # type: ignore[arg-type]


class Blocking:
    """An exporter whose export blocks until released (a stalled backend)."""

    name = "blocking"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.got: list[TraceRecord] = []

    def export(self, batch: Sequence[TraceRecord]) -> ExportResult:
        self.entered.set()
        self.release.wait(10)
        self.got.extend(batch)
        return ExportResult.SUCCESS

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        pass


class Failing:
    name = "failing"

    def export(self, batch: Sequence[TraceRecord]) -> ExportResult:
        raise RuntimeError("backend exploded")

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        pass


def test_records_arrive_in_order_in_batches() -> None:
    mem = MemoryExporter()
    proc = BatchProcessor(mem, max_batch=10, schedule_delay_s=0.05)
    for i in range(95):
        assert proc.submit(rec(i))
    assert proc.force_flush(5)
    assert [r.request_id for r in mem.records] == [f"{i:032x}" for i in range(95)]
    assert proc.stats.exported == 95 and proc.stats.batches >= 10
    proc.shutdown(2)


def test_full_queue_drops_and_counts_instead_of_blocking() -> None:
    slow = Blocking()
    proc = BatchProcessor(slow, max_queue=5, max_batch=1, schedule_delay_s=0.01)
    proc.submit(rec(0))
    assert slow.entered.wait(5)  # the worker is now stuck inside export
    accepted = sum(proc.submit(rec(i)) for i in range(1, 20))
    assert accepted == 5
    assert proc.stats.dropped_queue_full == 14
    slow.release.set()
    assert proc.force_flush(5)
    assert len(slow.got) == 6
    proc.shutdown(2)


def test_raising_exporter_is_counted_not_propagated() -> None:
    proc = BatchProcessor(Failing(), schedule_delay_s=0.01)
    proc.submit(rec(1))
    proc.force_flush(2)
    assert proc.stats.failed == 1
    assert proc.state()["worker_alive"]
    proc.shutdown(2)


def test_shutdown_drains_and_refuses_new_records() -> None:
    mem = MemoryExporter()
    pipe = ExportPipeline([BatchProcessor(mem, schedule_delay_s=10)])
    for i in range(3):
        pipe.submit(rec(i))
    pipe.shutdown(5)
    assert len(mem.records) == 3
    pipe.submit(rec(9))
    assert pipe.processors[0].stats.dropped_queue_full == 1


def test_jsonl_exporter_writes_every_field(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "traces.jsonl"
    exp = JsonLinesExporter.from_options({"path": "{data_dir}/sub/traces.jsonl"}, data_dir=tmp_path)
    r = rec(
        1,
        prompt_text="héllo \u2603",
        findings=(FindingRecord("input", "pii", "EMAIL_ADDRESS", 1.0, 0, 5, "mask", 0.1),),
        decisions=(DecisionRecord("input", "mask", ("pii:EMAIL_ADDRESS",)),),
        attributes={"k": "v"},
    )
    assert exp.export([r, rec(2)]) is ExportResult.SUCCESS
    exp.shutdown()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2
    first = orjson.loads(lines[0])
    assert first == r.as_dict()
    assert first["findings"][0]["label"] == "EMAIL_ADDRESS"
    assert first["decisions"][0]["reasons"] == ["pii:EMAIL_ADDRESS"]
    assert first["prompt_text"] == "héllo \u2603"


def test_jsonl_exporter_rejects_unknown_options(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match="unknown option"):
        JsonLinesExporter.from_options({"pth": "x"}, data_dir=tmp_path)
