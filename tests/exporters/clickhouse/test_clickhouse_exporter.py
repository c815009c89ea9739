"""The exporter against the real engine: every field round-trips, privacy, aggregates."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from exporters.base import ExportResult
from exporters.batch import BatchProcessor
from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter
from exporters.clickhouse.rows import record_from_dict
from exporters.errors import ExporterConfigError
from sidecar.record import TraceRecord
from tests.exporters.clickhouse.ch_records import T0, full_record, minimal_record

PRICES = {"gpt-small-2024": {"input": 0.5, "output": 1.5}, "gpt-small": {"input": 9, "output": 9}}
_SPECIAL = {"started_at", "ended_at", "findings", "detector_runs", "attempts", "decisions",
            "finish_reasons", "attributes"}
_RUN_KEYS = ("stage", "detector", "offset_ms", "latency_ms", "findings", "error", "batch_size")
_ATTEMPT_KEYS = ("kind", "upstream", "model", "offset_ms", "duration_ms", "status", "error",
                 "decision")


def _trace_rows(client, database):
    result = client.query(
        f"SELECT *, toUnixTimestamp64Micro(started_at) AS s_us, "
        f"toUnixTimestamp64Micro(ended_at) AS e_us FROM {database}.traces"
    )
    return {r["request_id"]: r for r in result.named_results()}


@pytest.mark.parametrize("via_spill", [False, True], ids=["direct", "via_spill"])
def test_every_field_round_trips(backend, database, make_exporter, via_spill):
    exporter = make_exporter(prices=PRICES)
    records = [full_record(1), full_record(2, tenant=None, attributes={}),
               minimal_record(3, started_at=T0, ended_at=T0 + 1)]
    if via_spill:  # written to the spill log, decoded and inserted by the replay
        backend.admin.command(f"RENAME TABLE {database}.traces TO {database}.traces_away")
        assert exporter.export(records) is ExportResult.SUCCESS
        assert not exporter.force_flush(2)
        assert exporter.spilled_rows == 3
        backend.admin.command(f"RENAME TABLE {database}.traces_away TO {database}.traces")
    else:
        assert exporter.export(records) is ExportResult.SUCCESS
    assert exporter.force_flush(10)
    assert exporter.replayed_rows == (3 if via_spill else 0)
    rows = _trace_rows(backend.admin, database)
    assert set(rows) == {r.request_id for r in records}
    for rec in records:
        row = rows[rec.request_id]
        for field in dataclasses.fields(TraceRecord):
            if field.name not in _SPECIAL:
                assert row[field.name] == getattr(rec, field.name), field.name
        assert row["s_us"] == round(rec.started_at * 1e6)
        assert row["e_us"] == round(rec.ended_at * 1e6)
        assert row["finish_reasons"] == list(rec.finish_reasons)
        assert row["attributes"] == dict(rec.attributes)
        assert [(d["stage"], d["action"], tuple(d["reasons"])) for d in row["decisions"]] == [
            (d.stage, d.action, d.reasons) for d in rec.decisions
        ]
        assert [tuple(d[k] for k in _RUN_KEYS) for d in row["detector_runs"]] == [
            tuple(getattr(d, k) for k in _RUN_KEYS) for d in rec.detector_runs
        ]
        assert [tuple(a[k] for k in _ATTEMPT_KEYS) for a in row["attempts"]] == [
            tuple(getattr(a, k) for k in _ATTEMPT_KEYS) for a in rec.attempts
        ]
        assert row["finding_count"] == len(rec.findings)
        assert row["detectors"] == sorted({f.detector for f in rec.findings})
        assert row["model"] == (rec.model_served or rec.model_requested or "")
    assert rows[records[0].request_id]["cost_usd"] == pytest.approx((1000 * 0.5 + 500 * 1.5) / 1e6)
    assert rows[records[2].request_id]["cost_usd"] is None  # no model, no tokens

    findings = backend.admin.query(
        f"SELECT request_id, trace_id, idx, stage, detector, label, score, start, end, action, "
        f"latency_ms, route, model, tenant, toUnixTimestamp64Micro(started_at) "
        f"FROM {database}.findings ORDER BY request_id, idx"
    ).result_rows
    expected = [
        (r.request_id, r.trace_id, i, f.stage, f.detector, f.label, f.score, f.start, f.end,
         f.action, f.latency_ms, r.route, r.model_served, r.tenant, round(r.started_at * 1e6))
        for r in records for i, f in enumerate(r.findings)
    ]
    assert findings == expected


def test_spill_format_round_trips_every_field_and_reads_older_entries():
    for rec in (full_record(1), full_record(2, tenant=None, attributes={}), minimal_record(3)):
        assert record_from_dict(orjson.loads(orjson.dumps(rec.as_dict()))) == rec
    rec = full_record(4)
    older = rec.as_dict()  # an entry spilled before v4: no detector runs, no offset
    del older["detector_runs"], older["upstream_offset_ms"], older["attempts"], older["trace_flags"]
    assert record_from_dict(older) == dataclasses.replace(
        rec, detector_runs=(), upstream_offset_ms=None, attempts=(), trace_flags="01"
    )
    newer = rec.as_dict()  # a newer writer's extra keys are ignored
    newer["detector_runs"][0]["queue_ms"] = 1.0
    newer["something_new"] = 1
    assert record_from_dict(newer) == rec


def test_store_text_false_keeps_no_text(backend, database, make_exporter):
    exporter = make_exporter(store_text=False)
    exporter.export([full_record(i) for i in range(5)])
    assert exporter.force_flush(10)
    row = backend.admin.query(
        f"SELECT count(), countIf(prompt_text IS NOT NULL OR output_text IS NOT NULL), "
        f"countIf(text_masked) FROM {database}.traces"
    ).result_rows[0]
    assert row == (5, 0, 0)


def test_batches_through_the_batch_processor_land_once(backend, database, make_exporter):
    exporter = make_exporter(insert_max_rows=64)
    processor = BatchProcessor(exporter, max_batch=25, schedule_delay_s=0.01)
    for i in range(300):
        assert processor.submit(full_record(i))
    assert processor.force_flush(20)
    processor.shutdown(5)
    assert backend.admin.query(
        f"SELECT count(), uniqExact(request_id) FROM {database}.traces"
    ).result_rows[0] == (300, 300)
    assert processor.stats.failed == 0
    assert exporter.inserted_rows == 300


def test_minute_aggregates_match_the_raw_rows(backend, database, make_exporter):
    exporter = make_exporter(prices=PRICES)
    records = []
    for i in range(240):
        minute = i % 4
        records.append(full_record(
            i,
            started_at=T0 + minute * 60 + (i % 50) * 0.5,
            route=("chat", "text_completion")[i % 2],
            model_served=("gpt-small-2024", "other")[i % 3 == 0],
            decision=("pass", "mask", "block")[i % 3],
            status=(200, 200, 200, 502)[i % 4],
            error_type="upstream_5xx" if i % 4 == 3 else None,
            prompt_tokens=10 + i,
            findings=full_record(0).findings[: i % 3],
            detector_runs=full_record(i).detector_runs[: i % 4],
        ))
    exporter.export(records)
    assert exporter.force_flush(10)
    client = backend.admin
    raw = client.query(
        f"SELECT toStartOfMinute(started_at) AS m, route, model, ifNull(tenant, '') AS t, decision, "
        f"count(), countIf(status >= 400 OR error_type IS NOT NULL), sum(ifNull(prompt_tokens, 0)), "
        f"sum(ifNull(completion_tokens, 0)), round(sum(ifNull(cost_usd, 0)), 9), "
        f"countIf(finding_count > 0), max(total_ms) "
        f"FROM {database}.traces GROUP BY m, route, model, t, decision ORDER BY m, route, model, t, decision"
    ).result_rows
    agg = client.query(
        f"SELECT minute, route, model, tenant, decision, sum(requests), sum(errors), "
        f"sum(prompt_tokens), sum(completion_tokens), round(sum(cost_usd), 9), sum(with_findings), "
        f"quantilesTDigestMerge(0.5, 0.9, 0.99)(total_ms_q)[3] "
        f"FROM {database}.traces_1m GROUP BY minute, route, model, tenant, decision "
        f"ORDER BY minute, route, model, tenant, decision"
    ).result_rows
    assert len(raw) == len(agg) > 4
    for r, a in zip(raw, agg, strict=True):
        assert r[:11] == a[:11]
        assert a[11] <= r[11]  # p99 never above the maximum
    raw_f = client.query(
        f"SELECT toStartOfMinute(started_at) AS m, detector, action, count(), uniqExact(request_id) "
        f"FROM {database}.findings GROUP BY m, detector, action ORDER BY m, detector, action"
    ).result_rows
    agg_f = client.query(
        f"SELECT minute, detector, action, sum(findings), uniqMerge(requests) "
        f"FROM {database}.findings_1m GROUP BY minute, detector, action "
        f"ORDER BY minute, detector, action"
    ).result_rows
    assert raw_f == agg_f and len(raw_f) >= 4
    keys = "minute, route, model, tenant, stage, detector"
    raw_r = client.query(
        f"SELECT toStartOfMinute(started_at) AS minute, route, model, ifNull(tenant, '') AS tenant, "
        f"run.stage AS stage, run.detector AS detector, count(), countIf(run.error IS NOT NULL), "
        f"countIf(run.error = 'timeout'), sum(run.findings), min(run.latency_ms), "
        f"max(run.latency_ms) FROM {database}.traces ARRAY JOIN detector_runs AS run "
        f"GROUP BY {keys} ORDER BY {keys}"
    ).result_rows
    agg_r = client.query(
        f"SELECT {keys}, sum(runs), sum(errors), sum(timeouts), sum(findings), "
        f"quantilesTDigestMerge(0.5, 0.9, 0.99)(latency_ms_q) "
        f"FROM {database}.detector_runs_1m GROUP BY {keys} ORDER BY {keys}"
    ).result_rows
    assert len(raw_r) == len(agg_r) > 4
    assert sum(r[6] for r in raw_r) == sum(1 for r in records for _ in r.detector_runs)
    for r, a in zip(raw_r, agg_r, strict=True):
        assert r[:10] == a[:10]
        # quantiles within [min, max] (the t-digest keeps Float32 centroids)
        assert r[10] * (1 - 1e-6) <= a[10][0] <= a[10][2] <= r[11] * (1 + 1e-6)


def test_from_options_names_the_bad_key_and_hides_the_password(tmp_path):
    with pytest.raises(ExporterConfigError) as info:
        ClickHouseExporter.from_options(
            {"dsn": "ftp://x", "password": "hunter2"}, data_dir=tmp_path
        )
    assert "'dsn'" in str(info.value) and "hunter2" not in str(info.value)
    exporter = ClickHouseExporter.from_options(
        {"spill_dir": "{data_dir}/spill-x", "password": "hunter2"}, data_dir=tmp_path
    )
    assert exporter.config.effective_spill_dir == tmp_path / "spill-x"
    assert exporter.config.effective_dsn == f"chdb://{(tmp_path / 'clickhouse').resolve()}"
    assert "hunter2" not in repr(exporter.config) and "hunter2" not in str(exporter.state())


def test_config_database_and_credentials_from_the_dsn():
    cfg = ClickHouseConfig(dsn="https://bob:pw@ch.example:8443/analytics")
    assert cfg.effective_database == "analytics"
    assert cfg.redacted_dsn() == "https://bob:***@ch.example:8443/analytics"
    assert ClickHouseConfig(dsn="http://h:8123/x", database="y").effective_database == "y"
    with pytest.raises(ValueError):
        ClickHouseConfig(dsn="chdb:///tmp/x", cluster="c")


def test_export_inserts_at_once_and_the_processor_feeds_its_preferred_batches(
    backend, database, make_exporter, wait
):
    exporter = make_exporter(insert_max_rows=1000, insert_max_age_s=0.05)
    assert exporter.export([full_record(i) for i in range(3)]) is ExportResult.SUCCESS
    count = f"SELECT count() FROM {database}.traces"
    assert backend.admin.query(count).result_rows[0][0] == 3  # no buffer of its own
    assert exporter.inserted_rows == 3 and exporter.spilled_rows == 0
    processor = BatchProcessor(exporter, max_batch=1, schedule_delay_s=30)
    try:
        assert (processor.max_batch, processor.schedule_delay_s) == (1000, 0.05)
        for i in range(3, 8):
            processor.submit(full_record(i))
        wait(lambda: processor.stats.exported == 5, what="age-based batch")
        assert backend.admin.query(count).result_rows[0][0] == 8
        assert processor.stats.batches < 5  # fed as it prefers, not one by one
    finally:
        processor.shutdown(5)


def test_export_before_start_starts_and_after_shutdown_fails(backend, database, make_exporter):
    exporter = make_exporter(start=False)
    assert exporter.export([full_record(1)]) is ExportResult.SUCCESS
    assert exporter.ready and exporter.force_flush(10)
    exporter.shutdown(5)
    assert exporter.export([full_record(2)]) is ExportResult.FAILURE
    assert exporter.dropped_rows == 1
