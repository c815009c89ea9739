"""The OpenTelemetry exporter: span trees, ids, GenAI attributes, events and metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from exporters.base import ExportResult
from exporters.errors import ExporterConfigError
from exporters.otel import OtelExporter, PresetIdGenerator
from sidecar import semconv as sc
from sidecar.record import (
    AttemptRecord,
    DecisionRecord,
    DetectorRunRecord,
    FindingRecord,
    TraceRecord,
)
from tests.helpers.servers import LoopThread, sidecar_settings, start_sidecar_async

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
PARENT_ID = "b7ad6b7169203331"
T0 = 1_760_000_000.25
SEMCONV_NAMES = {
    value for key, value in vars(sc).items() if key.isupper() and isinstance(value, str)
}


def full_record(**kw: Any) -> TraceRecord:
    base: dict[str, Any] = dict(
        request_id="9" * 32, trace_id=TRACE_ID, span_id=SPAN_ID, parent_span_id=PARENT_ID,
        started_at=T0, ended_at=T0 + 1.5, method="POST", path="/v1/chat/completions",
        route="chat", upstream="http://llm.internal:8000", tenant="acme", user="u-1",
        conversation_id="conv-7", model_requested="gpt-4o", model_served="gpt-4o-2024-08-06",
        system_fingerprint="fp_1", response_id="chatcmpl-abc", finish_reasons=("stop",),
        temperature=0.2, top_p=0.9, max_tokens=256, n=1, stream=True, status=200,
        upstream_attempts=1, total_ms=1500.0, upstream_offset_ms=2.5, upstream_ms=1490.0,
        overhead_ms=10.0, ttft_ms=120.0, tpot_ms=15.0, prompt_tokens=42, completion_tokens=99,
        total_tokens=141, usage_source="upstream", prompt_text="my email is bob@example.com",
        output_text="a secret answer",
        findings=(
            FindingRecord("input", "pii", "EMAIL_ADDRESS", 0.95, 12, 27, "mask", 0.3),
            FindingRecord("output", "toxicity", "insult", 0.61, 0, 8, "flag", 4.0),
        ),
        detector_runs=(
            DetectorRunRecord("input", "pii", 0.5, 0.3, findings=1, batch_size=3),
            DetectorRunRecord("output", "toxicity", 1495.0, 4.0, findings=1),
        ),
        decisions=(
            DecisionRecord("input", "mask", ("pii:EMAIL_ADDRESS",)),
            DecisionRecord("output", "flag", ("toxicity:insult",)),
        ),
        decision="mask",
        attributes={"railwatch.policy.route": "default"},
    )
    base.update(kw)
    return TraceRecord(**base)


def error_record(**kw: Any) -> TraceRecord:
    base: dict[str, Any] = dict(
        request_id="8" * 32, trace_id="1" * 32, span_id="2" * 16, parent_span_id=None,
        started_at=T0, ended_at=T0 + 30.0, method="POST", path="/v1/chat/completions",
        route="chat", upstream="https://api.example.com", model_requested="gpt-4o", status=504,
        error_type="upstream_timeout", upstream_attempts=1, total_ms=30000.0,
        upstream_offset_ms=1.0, upstream_ms=None,
        detector_runs=(DetectorRunRecord("input", "toxicity", 0.2, 50.0, error="timeout"),),
    )
    base.update(kw)
    return TraceRecord(**base)


@pytest.fixture
def otel() -> Iterator[OtelExporter]:
    exp = OtelExporter(exporter="memory")
    exp.start()
    yield exp
    exp.shutdown(1)


def spans_of(exp: OtelExporter) -> list[ReadableSpan]:
    return list(exp.span_exporter.get_finished_spans())  # type: ignore[union-attr]


def server_span(spans: list[ReadableSpan]) -> ReadableSpan:
    (span,) = [s for s in spans if s.kind is SpanKind.SERVER]
    return span


def metric_points(exp: OtelExporter) -> dict[str, list[Any]]:
    data = exp.metric_reader.get_metrics_data()  # type: ignore[union-attr]
    out: dict[str, list[Any]] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
                out.setdefault(f"unit:{m.name}", []).append(m.unit)
    return out


def ns(epoch_s: float) -> int:
    return int(epoch_s * 1e9)


# -- spans -------------------------------------------------------------------------------


def test_server_span_continues_the_records_trace(otel: OtelExporter) -> None:
    r = full_record()
    assert otel.export([r]) is ExportResult.SUCCESS
    span = server_span(spans_of(otel))
    assert span.name == "chat gpt-4o"
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert span.context.span_id == int(SPAN_ID, 16)
    assert span.parent is not None and span.parent.span_id == int(PARENT_ID, 16)
    assert span.parent.trace_id == int(TRACE_ID, 16) and span.parent.is_remote
    assert span.start_time == ns(r.started_at) and span.end_time == ns(r.ended_at)
    assert span.status.status_code is StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "railwatch"


def test_root_record_keeps_its_own_trace_id(otel: OtelExporter) -> None:
    otel.export([full_record(parent_span_id=None)])
    span = server_span(spans_of(otel))
    assert span.parent is None
    assert (span.context.trace_id, span.context.span_id) == (int(TRACE_ID, 16), int(SPAN_ID, 16))


def test_server_attributes_follow_the_genai_semconv(otel: OtelExporter) -> None:
    r = full_record()
    otel.export([r])
    a = dict(server_span(spans_of(otel)).attributes or {})
    expected = {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.GEN_AI_REQUEST_TEMPERATURE: 0.2,
        sc.GEN_AI_REQUEST_TOP_P: 0.9,
        sc.GEN_AI_REQUEST_MAX_TOKENS: 256,
        sc.GEN_AI_REQUEST_CHOICE_COUNT: 1,
        sc.GEN_AI_REQUEST_STREAM: True,
        sc.GEN_AI_RESPONSE_ID: "chatcmpl-abc",
        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        sc.GEN_AI_RESPONSE_FINISH_REASONS: ("stop",),
        sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: 0.12,
        sc.GEN_AI_OPENAI_RESPONSE_SYSTEM_FINGERPRINT: "fp_1",
        sc.GEN_AI_USAGE_INPUT_TOKENS: 42,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 99,
        sc.GEN_AI_CONVERSATION_ID: "conv-7",
        sc.SERVER_ADDRESS: "llm.internal",
        sc.SERVER_PORT: 8000,
        sc.HTTP_REQUEST_METHOD: "POST",
        sc.HTTP_ROUTE: "/v1/chat/completions",
        sc.HTTP_RESPONSE_STATUS_CODE: 200,
        sc.URL_PATH: "/v1/chat/completions",
        sc.RAILWATCH_REQUEST_ID: "9" * 32,
        sc.RAILWATCH_DECISION: "mask",
        sc.RAILWATCH_TENANT: "acme",
        sc.RAILWATCH_USER: "u-1",
        sc.RAILWATCH_USAGE_SOURCE: "upstream",
        sc.RAILWATCH_OVERHEAD_MS: 10.0,
        sc.RAILWATCH_TPOT_MS: 15.0,
        "railwatch.policy.route": "default",
    }
    assert a == expected
    assert set(a) - {"railwatch.policy.route"} <= SEMCONV_NAMES


def test_every_attribute_and_event_name_is_a_semconv_constant(otel: OtelExporter) -> None:
    attempt = AttemptRecord("primary", "primary", "gpt-4o", 1.0, 2.0, status=500, error="x")
    otel.export([full_record(retries=1, handoff_id="h-1", attempts=(attempt,)), error_record()])
    for span in spans_of(otel):
        names = set(span.attributes or {}) - {"railwatch.policy.route"}
        assert names <= SEMCONV_NAMES, (span.name, names - SEMCONV_NAMES)
        for event in span.events:
            assert event.name in SEMCONV_NAMES
            assert set(event.attributes or {}) <= SEMCONV_NAMES


def test_child_spans_for_upstream_and_each_detector_run(otel: OtelExporter) -> None:
    r = full_record()
    otel.export([r])
    spans = spans_of(otel)
    server = server_span(spans)
    children = [s for s in spans if s is not server]
    assert len(children) == 1 + len(r.detector_runs)
    for child in children:
        assert child.parent is not None and child.parent.span_id == int(SPAN_ID, 16)
        assert child.context.trace_id == int(TRACE_ID, 16)
        assert child.context.span_id not in (int(SPAN_ID, 16), int(PARENT_ID, 16))
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time  # type: ignore[operator]
    (upstream,) = [s for s in children if s.kind is SpanKind.CLIENT]
    assert upstream.name == "POST /v1/chat/completions"
    assert upstream.start_time == ns(T0) + int(2.5e6)
    assert upstream.end_time == upstream.start_time + int(1490.0e6)  # type: ignore[operator]
    assert upstream.attributes is not None
    assert upstream.attributes[sc.URL_FULL] == "http://llm.internal:8000/v1/chat/completions"
    assert upstream.attributes[sc.SERVER_ADDRESS] == "llm.internal"
    assert upstream.attributes[sc.RAILWATCH_UPSTREAM_ATTEMPTS] == 1
    detectors = sorted((s for s in children if s.kind is SpanKind.INTERNAL), key=lambda s: s.start_time or 0)
    assert [s.name for s in detectors] == ["detect pii", "detect toxicity"]
    pii = detectors[0]
    assert pii.start_time == ns(T0) + int(0.5e6)
    assert pii.end_time == pii.start_time + int(0.3e6)  # type: ignore[operator]
    assert dict(pii.attributes or {}) == {
        sc.RAILWATCH_DETECTOR: "pii", sc.RAILWATCH_DETECTOR_STAGE: "input",
        sc.RAILWATCH_DETECTOR_FINDINGS: 1, sc.RAILWATCH_DETECTOR_BATCH_SIZE: 3,
    }


def test_one_evaluation_event_per_finding_and_a_decision_event_per_decision(
    otel: OtelExporter,
) -> None:
    r = full_record()
    otel.export([r])
    server = server_span(spans_of(otel))
    evals = [e for e in server.events if e.name == sc.GEN_AI_EVALUATION_RESULT]
    assert [dict(e.attributes or {}) for e in evals] == [
        {
            sc.GEN_AI_EVALUATION_NAME: f.detector,
            sc.GEN_AI_EVALUATION_SCORE_VALUE: f.score,
            sc.GEN_AI_EVALUATION_SCORE_LABEL: f.label,
            sc.RAILWATCH_FINDING_STAGE: f.stage,
            sc.RAILWATCH_FINDING_ACTION: f.action,
            sc.RAILWATCH_FINDING_START: f.start,
            sc.RAILWATCH_FINDING_END: f.end,
        }
        for f in r.findings
    ]
    # each finding is stamped when its detector run ended
    assert evals[0].timestamp == ns(T0) + int(0.5e6) + int(0.3e6)
    decisions = [e for e in server.events if e.name == sc.EVENT_DECISION]
    assert [(e.attributes or {})[sc.RAILWATCH_DECISION_ACTION] for e in decisions] == [
        "mask", "flag"]
    assert (decisions[0].attributes or {})[sc.RAILWATCH_DECISION_REASONS] == ("pii:EMAIL_ADDRESS",)
    for event in server.events:
        assert server.start_time <= event.timestamp <= server.end_time  # type: ignore[operator]


def test_no_content_by_default(otel: OtelExporter) -> None:
    r = full_record()
    otel.export([r])
    for span in spans_of(otel):
        values = [str(v) for v in (span.attributes or {}).values()]
        values += [str(v) for e in span.events for v in (e.attributes or {}).values()]
        assert not any(r.prompt_text in v or r.output_text in v for v in values)  # type: ignore[operator]
        assert sc.GEN_AI_INPUT_MESSAGES not in (span.attributes or {})


def test_content_only_with_capture_content() -> None:
    exp = OtelExporter.from_options({"exporter": "memory", "capture_content": True},
                                    data_dir=Path("."))
    try:
        exp.export([full_record(text_masked=True)])
        a = server_span(spans_of(exp)).attributes or {}
        assert json.loads(str(a[sc.GEN_AI_INPUT_MESSAGES])) == [
            {"role": "user", "parts": [{"type": "text", "content": "my email is bob@example.com"}]}
        ]
        assert json.loads(str(a[sc.GEN_AI_OUTPUT_MESSAGES])) == [
            {"role": "assistant", "parts": [{"type": "text", "content": "a secret answer"}],
             "finish_reason": "stop"}
        ]
        assert a[sc.RAILWATCH_CONTENT_MASKED] is True
    finally:
        exp.shutdown(1)


def test_error_record_sets_error_status_and_type(otel: OtelExporter) -> None:
    r = error_record()
    otel.export([r])
    spans = spans_of(otel)
    server = server_span(spans)
    assert server.parent is None and server.context.trace_id == int("1" * 32, 16)
    assert server.status.status_code is StatusCode.ERROR
    assert server.status.description == "upstream_timeout"
    a = server.attributes or {}
    assert a[sc.ERROR_TYPE] == "upstream_timeout"
    assert a[sc.HTTP_RESPONSE_STATUS_CODE] == 504
    assert a[sc.SERVER_ADDRESS] == "api.example.com" and a[sc.SERVER_PORT] == 443
    (upstream,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert upstream.status.status_code is StatusCode.ERROR  # timed out: ends with the request
    assert upstream.end_time == server.end_time
    (detector,) = [s for s in spans if s.kind is SpanKind.INTERNAL]
    assert detector.status.status_code is StatusCode.ERROR
    assert (detector.attributes or {})[sc.ERROR_TYPE] == "timeout"


def test_one_client_span_per_upstream_attempt(otel: OtelExporter) -> None:
    attempts = (
        AttemptRecord("primary", "primary", "gpt-4o", 2.0, 300.0, status=200, decision="retry"),
        AttemptRecord("retry", "primary", "gpt-4o", 310.0, 40.0, status=503,
                      error="upstream_unavailable"),
        AttemptRecord("fallback", "backup", "llama-3", 360.0, 500.0, status=200),
    )
    otel.export([full_record(attempts=attempts, upstream_attempts=3, retries=1)])
    clients = sorted((s for s in spans_of(otel) if s.kind is SpanKind.CLIENT),
                     key=lambda s: s.start_time or 0)
    assert len(clients) == 3
    for i, (span, att) in enumerate(zip(clients, attempts, strict=True)):
        a = span.attributes or {}
        assert span.name == "POST /v1/chat/completions"
        assert span.parent is not None and span.parent.span_id == int(SPAN_ID, 16)
        assert span.start_time == ns(T0) + int(att.offset_ms * 1e6)
        assert span.end_time == span.start_time + int(att.duration_ms * 1e6)  # type: ignore[operator]
        assert (a[sc.RAILWATCH_ATTEMPT_INDEX], a[sc.RAILWATCH_ATTEMPT_KIND]) == (i, att.kind)
        assert a[sc.RAILWATCH_UPSTREAM_NAME] == att.upstream
        assert a[sc.GEN_AI_REQUEST_MODEL] == att.model
        assert a[sc.HTTP_RESPONSE_STATUS_CODE] == att.status
        assert a[sc.RAILWATCH_ATTEMPT_DECISION] == att.decision
    assert clients[1].status.status_code is StatusCode.ERROR
    assert (clients[1].attributes or {})[sc.ERROR_TYPE] == "upstream_unavailable"
    assert clients[2].status.status_code is StatusCode.UNSET


def test_never_sent_upstream_has_no_client_span(otel: OtelExporter) -> None:
    otel.export([error_record(upstream_offset_ms=None, upstream_attempts=0, status=429,
                              error_type="overloaded", detector_runs=())])
    assert [s.kind for s in spans_of(otel)] == [SpanKind.SERVER]


@pytest.mark.parametrize(
    ("route", "method", "path", "name"),
    [
        ("models", "GET", "/v1/models", "GET /v1/models"),
        ("passthrough", "POST", "/v1/files/file-123", "POST"),
        ("embeddings", "POST", "/v1/embeddings", "embeddings text-embedding-3-small"),
        ("text_completion", "POST", "/v1/completions", "text_completion text-embedding-3-small"),
    ],
)
def test_span_names_per_route(otel: OtelExporter, route: str, method: str, path: str,
                              name: str) -> None:
    model = None if route in ("models", "passthrough") else "text-embedding-3-small"
    otel.export([full_record(route=route, method=method, path=path, model_requested=model,
                             findings=(), detector_runs=(), decisions=())])
    span = server_span(spans_of(otel))
    assert span.name == name
    a = span.attributes or {}
    if route in ("models", "passthrough"):
        assert sc.GEN_AI_OPERATION_NAME not in a and a[sc.RAILWATCH_ROUTE] == route
        assert a[sc.URL_PATH] == path
        assert sc.OTEL_METRIC_OPERATION_DURATION not in metric_points(otel)
    else:
        assert a[sc.GEN_AI_OPERATION_NAME] == route


def test_chat_without_model_is_named_by_operation(otel: OtelExporter) -> None:
    otel.export([full_record(model_requested=None)])
    assert server_span(spans_of(otel)).name == "chat"


def test_unsampled_parent_is_respected_when_the_record_carries_flags(otel: OtelExporter) -> None:
    class Flagged:  # a record from a future version that carries the caller's flags
        def __init__(self, r: TraceRecord, flags: str) -> None:
            self._r, self.trace_flags = r, flags

        def __getattr__(self, name: str) -> Any:
            return getattr(self._r, name)

    otel.export([Flagged(full_record(), "00")])  # type: ignore[list-item]
    assert spans_of(otel) == []
    assert metric_points(otel)[sc.OTEL_METRIC_OPERATION_DURATION]  # metrics are never sampled


def test_sampler_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exp = OtelExporter(exporter="memory")
    try:
        assert exp.export([full_record(), full_record(span_id="3" * 16)]) is ExportResult.SUCCESS
        assert spans_of(exp) == []
        assert metric_points(exp)[sc.OTEL_METRIC_OPERATION_DURATION][0].count == 2
    finally:
        exp.shutdown(1)


def test_preset_ids_are_used_once_and_per_thread() -> None:
    gen = PresetIdGenerator()
    gen.preset(7, 9)
    assert (gen.generate_trace_id(), gen.generate_span_id()) == (7, 9)
    assert gen.generate_span_id() != 9 and gen.generate_trace_id() != 7


def test_batch_span_processor_mode_delivers_on_flush() -> None:
    exp = OtelExporter(exporter="memory", span_processor="batch")
    try:
        exp.export([full_record()])
        assert exp.force_flush(5)
        assert len(spans_of(exp)) == 4  # server, upstream, two detector runs
    finally:
        exp.shutdown(1)


# -- metrics -----------------------------------------------------------------------------


def test_genai_metrics_from_records(otel: OtelExporter) -> None:
    otel.export([full_record(), full_record(span_id="3" * 16), error_record()])
    points = metric_points(otel)
    assert points[f"unit:{sc.OTEL_METRIC_TOKEN_USAGE}"] == ["{token}"]
    for name in (sc.OTEL_METRIC_OPERATION_DURATION, sc.OTEL_METRIC_TIME_TO_FIRST_CHUNK,
                 sc.OTEL_METRIC_TIME_PER_OUTPUT_CHUNK):
        assert points[f"unit:{name}"] == ["s"]
    tokens = {p.attributes[sc.GEN_AI_TOKEN_TYPE]: p for p in points[sc.OTEL_METRIC_TOKEN_USAGE]}
    assert (tokens["input"].count, tokens["input"].sum) == (2, 84)
    assert (tokens["output"].count, tokens["output"].sum) == (2, 198)
    assert dict(tokens["input"].attributes) == {
        sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_PROVIDER_NAME: "openai",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o", sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
        sc.SERVER_ADDRESS: "llm.internal", sc.SERVER_PORT: 8000,
        sc.GEN_AI_TOKEN_TYPE: "input",
    }
    durations = points[sc.OTEL_METRIC_OPERATION_DURATION]
    ok = [p for p in durations if sc.ERROR_TYPE not in p.attributes]
    failed = [p for p in durations if p.attributes.get(sc.ERROR_TYPE) == "upstream_timeout"]
    assert ok[0].count == 2 and ok[0].sum == pytest.approx(3.0)
    assert failed[0].count == 1 and failed[0].sum == pytest.approx(30.0)
    (ttfc,) = points[sc.OTEL_METRIC_TIME_TO_FIRST_CHUNK]
    assert ttfc.count == 2 and ttfc.sum == pytest.approx(0.24)
    (tpoc,) = points[sc.OTEL_METRIC_TIME_PER_OUTPUT_CHUNK]
    assert tpoc.count == 2 and tpoc.sum == pytest.approx(0.03)


def test_model_values_on_metrics_are_bounded() -> None:
    exp = OtelExporter(exporter="memory", max_models=2)
    try:
        exp.export([full_record(model_requested=f"m{i}", model_served="s") for i in range(5)])
        # names asked for but never served (the upstream refused them) take no slot
        exp.export([full_record(model_requested=f"junk{i}", model_served=None)
                    for i in range(5)])
        models = {p.attributes[sc.GEN_AI_REQUEST_MODEL]
                  for p in metric_points(exp)[sc.OTEL_METRIC_OPERATION_DURATION]}
        assert models == {"m0", "m1", sc.LABEL_OTHER}
        # spans keep the real name: they are not aggregated
        assert {s.name for s in spans_of(exp) if s.kind is SpanKind.SERVER} >= {
            f"chat m{i}" for i in range(5)
        }
    finally:
        exp.shutdown(1)


# -- robustness and configuration ------------------------------------------------------------


def test_a_bad_record_is_counted_and_the_rest_exported(otel: OtelExporter) -> None:
    bad = full_record(trace_id="not-hex")
    assert otel.export([bad, full_record()]) is ExportResult.FAILURE
    assert otel.records_failed == 1 and otel.records_exported == 1
    assert len([s for s in spans_of(otel) if s.kind is SpanKind.SERVER]) == 1


def test_unreachable_collector_fails_the_batch_without_raising(
    monkeypatch: pytest.MonkeyPatch, closed_port: int
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    exp = OtelExporter.from_options({}, data_dir=Path("."))
    try:
        assert exp.export([full_record()]) is ExportResult.FAILURE
        st = exp.state()
        assert st["export_failures"] == 1 and st["spans_failed"] == 4
        assert st["records_failed"] == 1
    finally:
        exp.shutdown(1)


def test_otlp_http_delivers_protobuf_with_the_records_ids(
    monkeypatch: pytest.MonkeyPatch, loop_thread: LoopThread
) -> None:
    bodies: list[bytes] = []

    async def traces(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(status=200, content_type="application/x-protobuf")

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/v1/traces", traces)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner

    runner = loop_thread.run(start())
    host, port = runner.addresses[0][:2]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{host}:{port}")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "rw-test")
    exp = OtelExporter()
    try:
        assert exp.export([full_record()]) is ExportResult.SUCCESS
    finally:
        exp.shutdown(1)
        loop_thread.run(runner.cleanup())
    req = ExportTraceServiceRequest()
    req.ParseFromString(bodies[0])
    resource = {kv.key: kv.value.string_value for kv in req.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "rw-test"
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    (server,) = [s for s in spans if s.name == "chat gpt-4o"]
    assert server.trace_id.hex() == TRACE_ID and server.span_id.hex() == SPAN_ID
    assert server.parent_span_id.hex() == PARENT_ID


def test_options_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown option"):
        OtelExporter.from_options({"endpoint": "x"}, data_dir=Path("."))
    with pytest.raises(ValueError, match="exporter must be"):
        OtelExporter.from_options({"exporter": "zipkin"}, data_dir=Path("."))
    with pytest.raises(TypeError, match="capture_content"):
        OtelExporter.from_options({"capture_content": "yes"}, data_dir=Path("."))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ExporterConfigError, match="not supported"):
        OtelExporter.from_options({}, data_dir=Path("."))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    try:
        import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
    except ImportError:
        with pytest.raises(ExporterConfigError, match="opentelemetry-exporter-otlp-proto-grpc"):
            OtelExporter.from_options({}, data_dir=Path("."))


# -- end to end ------------------------------------------------------------------------------


def test_sidecar_request_with_traceparent_yields_a_continuing_span(
    loop_thread: LoopThread, demo_upstream: Any
) -> None:
    otel = OtelExporter(exporter="memory")
    sc_ = loop_thread.run(
        start_sidecar_async(sidecar_settings(demo_upstream.url), exporters=[otel])
    )
    try:
        async def call() -> int:
            async with aiohttp.ClientSession() as s, s.post(
                sc_.url + "/v1/chat/completions",
                json={"model": "demo", "messages": [{"role": "user", "content": "hi"}]},
                headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
            ) as r:
                await r.read()
                return r.status

        assert asyncio.run(call()) == 200
        (record,) = sc_.memory.wait_for(lambda rs: len(rs) >= 1)
        assert sc_.runtime.intake.force_flush(5)
        span = server_span(spans_of(otel))
        assert span.context.trace_id == int(TRACE_ID, 16)
        assert span.parent is not None and span.parent.span_id == int(PARENT_ID, 16)
        assert span.context.span_id == int(record.span_id, 16)
        assert span.name == "chat demo"
        assert (span.attributes or {})[sc.HTTP_RESPONSE_STATUS_CODE] == 200
        assert any(s.kind is SpanKind.CLIENT for s in spans_of(otel))
    finally:
        loop_thread.run(sc_.runner.cleanup())
    assert replace(record) == record  # the record is frozen and untouched by the exporter
