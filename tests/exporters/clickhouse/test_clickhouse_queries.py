"""Read API (tail, query, report) and the review tables (feedback, hand-offs)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from exporters.clickhouse import queries, review
from exporters.clickhouse.migrations import MIGRATIONS, migrate
from exporters.clickhouse.queries import format_report, parse_since, query_traces, report, tail
from sidecar.record import DetectorRunRecord, FindingRecord
from tests.exporters.clickhouse.ch_records import T0, full_record

PII = FindingRecord("input", "pii", "EMAIL_ADDRESS", 0.9, 0, 5, "mask", 0.2)
PHONE = FindingRecord("input", "pii", "PHONE_NUMBER", 0.8, 6, 9, "mask", 0.2)
FMT = FindingRecord("output", "format", "json_invalid", 1.0, 0, 9, "retry", 0.1)
ASKED_JSON = {"railwatch.request.response_format": "json_object"}


@pytest.fixture
def loaded(backend, database, make_exporter):
    exporter = make_exporter(prices={"gpt-small-2024": {"input": 1, "output": 2}})
    records = []
    for i in range(100):
        findings = ((PII, PHONE) if i < 10 else (PII,) if i < 30 else ()) + ((FMT,) if i % 10 == 0 else ())
        runs = (DetectorRunRecord("input", "pii", 1.0, float(i + 1), batch_size=4),)
        if i < 40:
            runs += (DetectorRunRecord("output", "toxicity", 90.0, 200.0,
                                       error="timeout" if i % 20 == 0 else None),)
        records.append(full_record(
            i, started_at=T0 + i, total_ms=float(i + 1), overhead_ms=1.0,
            decision="block" if i % 25 == 0 else "pass", findings=findings, detector_runs=runs,
            route="embeddings" if i >= 90 else "chat",
            model_served="gpt-small-2024" if i < 50 else "gpt-big",
            status=500 if i in (3, 4) else 200, error_type=None,
            # the first 20 asked for JSON: 2 of them (0, 10) got invalid JSON
            **({"attributes": ASKED_JSON} if i < 20 else {}),
        ))
    exporter.export(records)
    assert exporter.force_flush(10)
    return exporter, records


def test_query_traces_filters_and_orders(backend, database, loaded):
    _, records = loaded
    client = backend.admin
    rows = query_traces(client, database=database, limit=1000)
    assert [r["request_id"] for r in rows] == [r.request_id for r in reversed(records)]
    assert rows[0]["started_at"] == datetime.fromtimestamp(records[-1].started_at, UTC)
    assert "prompt_text" not in rows[0]
    assert len(query_traces(client, database=database, decision="block")) == 4
    assert len(query_traces(client, database=database, route="embeddings")) == 10
    assert len(query_traces(client, database=database, model="gpt-big")) == 50
    assert len(query_traces(client, database=database, model="gpt-small")) == 100  # requested
    assert len(query_traces(client, database=database, since=T0 + 95)) == 5
    assert len(query_traces(client, database=database, since=T0 + 10, until=T0 + 20)) == 10
    assert len(query_traces(client, database=database, limit=7)) == 7
    one = query_traces(client, database=database, request_id=records[5].request_id,
                       include_text=True)
    assert one[0]["prompt_text"] == records[5].prompt_text


def test_tail_last_n_then_follow(backend, database, loaded, make_exporter):
    exporter, records = loaded
    client = backend.admin
    last = list(tail(client, 5, database=database))
    assert [r["request_id"] for r in last] == [r.request_id for r in records[-5:]]
    stop = threading.Event()
    follow = tail(client, 2, follow=True, database=database, poll_s=0.05, stop=stop)
    assert [next(follow)["request_id"] for _ in range(2)] == [r.request_id for r in records[-2:]]
    late = [full_record(1000 + i, started_at=T0 - 3600) for i in range(3)]  # old, but new arrivals
    exporter.export(late)
    assert exporter.force_flush(10)
    got = [next(follow)["request_id"] for _ in range(3)]
    stop.set()
    assert sorted(got) == sorted(r.request_id for r in late)


def test_report_numbers_match_the_data(backend, database, loaded):
    client = backend.admin
    data = report(client, database=database, since=T0 - 60, until=T0 + 3600)
    assert data["requests"] == 100
    assert data["errors"] == 2 and data["error_rate"] == pytest.approx(0.02)
    assert data["tokens"] == {"prompt": 100_000, "completion": 50_000, "total": 150_000}
    assert data["cost_usd"] == pytest.approx(50 * (1000 * 1 + 500 * 2) / 1e6)
    assert data["decisions"] == {"pass": 96, "block": 4}
    total = data["latency_ms"]["total"]
    assert 40 <= total["p50"] <= 60 and total["p50"] <= total["p90"] <= total["p99"] <= 100
    assert data["latency_ms"]["overhead"]["p50"] == 1.0
    detectors = {d["detector"]: d for d in data["detectors"]}
    assert detectors["pii"]["requests"] == 30 and detectors["pii"]["findings"] == 40
    assert detectors["pii"]["rate"] == pytest.approx(0.30)
    assert detectors["format"]["requests"] == 10
    assert data["pii_types"] == [
        {"label": "EMAIL_ADDRESS", "findings": 30, "requests": 30},
        {"label": "PHONE_NUMBER", "findings": 10, "requests": 10},
    ]
    assert data["format"]["requests_with_findings"] == 10
    # JSON validity counts only the answers to requests that asked for JSON
    assert data["format"]["json_requests"] == 20 and data["format"]["json_invalid"] == 2
    assert data["format"]["valid_rate"] == pytest.approx(0.9)
    assert {(r["route"], r["model"]) for r in data["routes"]} == {
        ("chat", "gpt-small-2024"), ("chat", "gpt-big"), ("embeddings", "gpt-big")}
    runs = data["detector_latency_ms"]
    assert [(r["detector"], r["runs"], r["errors"], r["timeouts"]) for r in runs] == [
        ("pii", 100, 0, 0), ("toxicity", 40, 2, 2)]
    pii, tox = runs[0]["latency_ms"], runs[1]["latency_ms"]
    assert 45 <= pii["p50"] <= 55 and pii["p50"] <= pii["p90"] <= pii["p99"] <= 100
    assert tox == {"p50": 200.0, "p90": 200.0, "p99": 200.0}
    assert runs[1]["error_rate"] == pytest.approx(0.05)
    text = format_report(data)
    assert "requests" in text and "EMAIL_ADDRESS 30" in text
    assert "JSON answers valid 90.00% of 20 that asked for JSON" in text
    assert "no model prices configured" not in text
    assert "no model prices configured" in format_report(data, prices=False)
    assert "detector ms" in text and "toxicity" in text
    empty = report(client, database=database, since=T0 + 86400, until=T0 + 90000)
    assert empty["requests"] == 0 and empty["latency_ms"]["total"]["p50"] is None
    assert empty["detector_latency_ms"] == []
    assert "(no findings)" in format_report(empty)


def test_parse_since():
    now = 1_000_000.0
    assert parse_since("15m", now=now) == now - 900
    assert parse_since("2h", now=now) == now - 7200
    assert parse_since(timedelta(days=1), now=now) == now - 86400
    assert parse_since("2026-01-01T00:00:00", now=now) == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    assert parse_since(12.5) == 12.5 and parse_since(None) is None
    with pytest.raises(ValueError, match="not a time"):
        parse_since("yesterday")


def test_feedback_and_handoffs(backend, database):
    client = backend.admin
    migrate(client, database)
    fid = review.insert_feedback(client, database, trace_id="t1", kind="thumbs", value=-1,
                                 comment="wrong ✓", corrected_answer="42", known_trace=True)
    review.insert_feedback(client, database, trace_id="t2", kind="score", value=0.5,
                           comment="secret", store_text=False)
    rows = review.list_feedback(client, database, trace_id="t1")
    assert len(rows) == 1 and rows[0]["id"] == fid and rows[0]["comment"] == "wrong ✓"
    assert rows[0]["known_trace"] is True and rows[0]["created_at"].tzinfo is UTC
    assert review.list_feedback(client, database, trace_id="t2")[0]["comment"] is None
    with pytest.raises(ValueError):
        review.insert_feedback(client, database, trace_id="t", kind="stars", value=1)
    assert not review.trace_exists(client, database, "t1")

    review.upsert_handoff(client, database, {"id": "h1", "content": "please check",
                                             "findings": [{"detector": "pii"}], "reason": "pii",
                                             "route": "chat", "model": "m"})
    review.upsert_handoff(client, database, {"id": "h2", "reason": "toxicity"})
    review.upsert_handoff(client, database, {"id": "h1", "content": "please check",
                                             "status": "resolved", "assignee": "ana",
                                             "resolution": "approved", "resolved_at": T0,
                                             "created_at": T0})
    h1 = review.get_handoff(client, database, "h1")
    assert h1 is not None and h1["status"] == "resolved" and h1["assignee"] == "ana"
    assert h1["findings"] == [] and h1["resolved_at"] == datetime.fromtimestamp(T0, UTC)
    assert [h["id"] for h in review.list_handoffs(client, database, status="pending")] == ["h2"]
    assert review.get_handoff(client, database, "nope") is None
    assert len(review.list_handoffs(client, database)) == 2


def test_query_helpers_export_names():
    assert {"tail", "query_traces", "report", "format_report"} <= set(dir(queries))


@pytest.mark.parametrize("bad", ["x; DROP TABLE t", "a.b", "", "1db"])
def test_database_names_are_checked_before_reaching_sql(backend, bad):
    with pytest.raises(ValueError, match="not a database name"):
        query_traces(backend.admin, database=bad)
    with pytest.raises(ValueError, match="not a database name"):
        review.list_handoffs(backend.admin, bad)


def test_report_on_a_v3_database_has_no_detector_latency(backend, database):
    """A CLI newer than the sidecar that migrated the server sees the v3 schema."""
    migrate(backend.admin, database, migrations=MIGRATIONS[:3])
    data = report(backend.admin, database=database, since=T0 - 60, until=T0 + 60)
    assert data["requests"] == 0 and data["detector_latency_ms"] == []
    assert "detector ms" not in format_report(data)


def test_trace_detail_gathers_one_traces_findings_decisions_and_attempts(backend, database, loaded):
    _, records = loaded
    rows = queries.trace_detail(backend.admin, records[0].trace_id, database=database)
    assert [r["request_id"] for r in rows] == [records[0].request_id]
    row = rows[0]
    assert [(f["detector"], f["label"]) for f in row["findings"]] == [
        ("pii", "EMAIL_ADDRESS"), ("pii", "PHONE_NUMBER"), ("format", "json_invalid")]
    assert [d["stage"] for d in row["decisions"]] == [d.stage for d in records[0].decisions]
    assert [a["kind"] for a in row["attempts"]] == [a.kind for a in records[0].attempts]
    assert queries.trace_detail(backend.admin, "f" * 32, database=database) == []
