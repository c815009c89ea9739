"""A full spill log while ClickHouse fails: rows dropped are reported as dropped, not
exported, and /readyz says degraded with a reason (the sidecar keeps serving)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import openai
from prometheus_client.parser import text_string_to_metric_families

from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter
from sidecar import semconv as sc


def _sample(metrics: str, family: str, sample: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(metrics):
        if fam.name == family:
            for s in fam.samples:
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
    raise KeyError(sample)


def test_a_full_spill_log_is_reported_as_loss_and_degraded_readiness(
    tmp_path: Path, backend: Any, database: str, start_sidecar: Any, demo_upstream: Any,
) -> None:
    clickhouse = ClickHouseExporter(ClickHouseConfig(
        dsn=backend.dsn, database=database, data_dir=tmp_path / "data",
        spill_dir=tmp_path / "spill", spill_max_bytes=20_000, spill_segment_bytes=8_000,
        insert_max_rows=5, insert_max_age_s=0.05, retry_initial_s=60, retry_max_s=60,
    ))
    sc_ = start_sidecar(demo_upstream.url, exporters=[clickhouse])

    async def get(path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as s:
            async with s.get(sc_.url + path) as r:
                return r.status, await r.text()

    status, body = asyncio.run(get("/readyz"))
    assert status == 200 and '"status":"ready"' in body
    backend.admin.command(f"RENAME TABLE {database}.traces TO {database}.traces_away")
    client = openai.OpenAI(base_url=sc_.base_url, api_key="x", max_retries=0)
    for i in range(40):
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"request {i} " + "x" * 1000}])
    sc_.memory.wait_for(lambda rs: len(rs) >= 40)
    sc_.runtime.intake.force_flush(10)

    snap = clickhouse.snapshot()
    assert snap.dropped_rows > 0 and snap.spilled_rows + snap.dropped_rows == 40
    processor = next(p for p in sc_.runtime.exports.snapshots() if p.name == "clickhouse")
    assert processor.failed == snap.dropped_rows  # not counted as exported
    assert processor.exported == snap.spilled_rows

    status, body = asyncio.run(get("/readyz"))
    assert status == 200 and '"status":"degraded"' in body
    assert "exporter clickhouse lost records" in body
    _, metrics = asyncio.run(get("/metrics"))
    failed = _sample(metrics, sc.METRIC_EXPORTER_FAILED, sc.METRIC_EXPORTER_FAILED + "_total",
                     exporter="clickhouse")
    dropped = _sample(metrics, sc.METRIC_CLICKHOUSE_DROPPED_ROWS,
                      sc.METRIC_CLICKHOUSE_DROPPED_ROWS + "_total", exporter="clickhouse")
    assert failed == dropped == snap.dropped_rows
    journal = sc.METRIC_JOURNAL_UNJOURNALED
    assert _sample(metrics, journal, journal + "_total") == 0  # the crash journal took them all
    backend.admin.command(f"RENAME TABLE {database}.traces_away TO {database}.traces")
