"""OpenTelemetry exporter: one span tree and GenAI metrics per finished trace record.

Spans are built *after* the request, from the frozen :class:`~sidecar.record.TraceRecord`,
in the export worker thread; the request path never touches OpenTelemetry.

Span tree of one request (all timestamps from the record, never "now")::

    SERVER  "chat gpt-4o"                 id = record.span_id, parent = record.parent_span_id,
    │                                     trace = record.trace_id
    │  events: gen_ai.evaluation.result (one per finding), railwatch.policy.decision
    ├── CLIENT   "POST /v1/chat/completions"   the upstream call (one per attempt, see below)
    ├── INTERNAL "detect pii"                  one per detector run (input and output)
    └── INTERNAL "detect toxicity"

Naming: GenAI routes (``chat``, ``text_completion``, ``embeddings``) follow the GenAI
semantic conventions, ``{gen_ai.operation.name} {gen_ai.request.model}`` (just the
operation when the request named no model). ``models`` and pass-through requests are
not GenAI operations: they follow the HTTP server conventions, ``GET /v1/models`` for
the fixed route and the bare method (``POST``) for pass-through, whose paths are
unbounded (``url.path`` carries the path).

Ids: the sidecar already sent ``traceparent`` with ``record.span_id`` to the upstream,
so the server span must carry exactly that id. :class:`PresetIdGenerator` hands the
SDK the record's ids for the server span; child spans get random ids. The record does
not carry the caller's trace flags yet, so a caller's parent is taken as sampled (the
exporter reads ``record.trace_flags`` when the record grows that field).

Upstream attempts: today a record has one upstream window (``upstream_offset_ms``,
``upstream_ms``, ``upstream_attempts``) and gets one CLIENT span. When the record
gains ``attempts`` (a sequence of values with ``offset_ms``, ``latency_ms`` and
optional ``status``, ``error``, ``upstream``, ``model``), :func:`_upstream_spans`
emits one CLIENT span per attempt with ``railwatch.upstream.attempt`` = its index.

Content: ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON strings in the
semconv's message shape) are set only with ``capture_content: true``, and then only
what the privacy setting let into the record. The record holds the prompt as one
text with roles flattened, so it is reported as a single ``user`` message.

Metrics (GenAI client histograms, recorded only for GenAI routes):
``gen_ai.client.token.usage`` ({token}, ``gen_ai.token.type`` input/output),
``gen_ai.client.operation.duration`` (s, the request's total time),
``gen_ai.client.operation.time_to_first_chunk`` (s, streams) and
``gen_ai.client.operation.time_per_output_chunk`` (s, streams; the record has the
*mean* time per output token, so one value per request is recorded, not one per chunk).
``gen_ai.request.model`` on metrics is bounded: the first ``max_models`` distinct
values, then ``other`` (models come from clients).

Export: ``exporter: otlp`` (default; OTLP over HTTP/protobuf, or gRPC when
``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]PROTOCOL=grpc`` and
``opentelemetry-exporter-otlp-proto-grpc`` is installed), ``console`` or ``memory``
(the SDK's in-memory span exporter and metric reader, for tests). Everything else is
the SDK's standard environment: ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, timeout,
compression, certificates), ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``
(service name defaults to ``railwatch``), ``OTEL_TRACES_SAMPLER[_ARG]``, span limits,
``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_SDK_DISABLED``; ``OTEL_TRACES_EXPORTER=none`` or
``OTEL_METRICS_EXPORTER=none`` turn a signal off; ``OTEL_BSP_*`` apply with
``span_processor: batch``.

Span processor (``span_processor``): ``inline`` (default) hands the spans of each
record batch to the span exporter in one call at the end of :meth:`OtelExporter.export`,
on this worker thread, so a collector outage shows in ``export``'s result and in the
pipeline's counters, and no second queue or thread exists. The SDK's
``SimpleSpanProcessor`` would make one OTLP request per span; its
``BatchSpanProcessor`` (``span_processor: batch``) adds a second bounded queue and
thread behind ours, whose drops our counters cannot see, and up to
``OTEL_BSP_SCHEDULE_DELAY`` (5 s) more delay. With ``inline``, a dead collector holds
this worker for up to ``OTEL_EXPORTER_OTLP_TIMEOUT`` (10 s) per batch; the pipeline's
queue then fills and drops (counted), never the request path.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    InMemoryMetricReader,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

from exporters.base import ExportResult
from exporters.errors import ExporterConfigError
from sidecar import semconv as sc
from sidecar.record import DetectorRunRecord, TraceRecord

logger = logging.getLogger(__name__)

_GENAI_ROUTES = frozenset((sc.OP_CHAT, sc.OP_TEXT_COMPLETION, sc.OP_EMBEDDINGS))
_HTTP_ROUTES = {  # route -> http.route of the sidecar (and of the upstream)
    sc.OP_CHAT: "/v1/chat/completions",
    sc.OP_TEXT_COMPLETION: "/v1/completions",
    sc.OP_EMBEDDINGS: "/v1/embeddings",
    sc.OP_MODELS: "/v1/models",
}
_EXPORTERS = ("otlp", "console", "memory")
_PROCESSORS = ("inline", "batch")
_OPTIONS = frozenset(
    ("exporter", "capture_content", "provider_name", "span_processor", "max_models",
     "service_name")
)
_EXPORT_CHUNK = 512  # spans per span-exporter call (the SDK's own default batch size)

# Explicit bucket boundaries the GenAI semantic conventions advise for these histograms.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                  16777216, 67108864)
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                     40.96, 81.92)
_TTFC_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                 5.0, 7.5, 10.0)
_TPOC_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


class PresetIdGenerator(IdGenerator):
    """Random ids, except the next ids preset for the calling thread (used once).

    :meth:`preset` right before ``start_span`` makes that span carry the given ids;
    every other span (children) gets random ones. Thread-local, so concurrent
    exporters in other threads never take each other's ids.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._rng = random.Random(os.urandom(32))

    def preset(self, trace_id: int, span_id: int) -> None:
        self._local.trace_id = trace_id
        self._local.span_id = span_id

    def generate_span_id(self) -> int:
        span_id: int = getattr(self._local, "span_id", 0)
        if span_id:
            self._local.span_id = 0
            return span_id
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        trace_id: int = getattr(self._local, "trace_id", 0)
        if trace_id:
            self._local.trace_id = 0
            return trace_id
        return self._rng.getrandbits(128) or 1


class _CountingSpanExporter(SpanExporter):
    """Delegates to the real span exporter and counts what it delivered or lost."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # noqa: BLE001 - a broken exporter is a failed export
            logger.error("otel span export raised %s", type(exc).__name__)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


class _InlineSpanProcessor(SpanProcessor):
    """Collects the spans ended during one ``export`` call for one synchronous hand-off."""

    def __init__(self, exporter: _CountingSpanExporter) -> None:
        self.exporter = exporter
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self._spans.append(span)

    def deliver(self) -> bool:
        with self._lock:
            spans, self._spans = self._spans, []
        ok = True
        for i in range(0, len(spans), _EXPORT_CHUNK):
            ok = self.exporter.export(spans[i : i + _EXPORT_CHUNK]) is SpanExportResult.SUCCESS and ok
        return ok

    def shutdown(self) -> None:
        self.deliver()
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.deliver()


class _BoundedValues:
    """The first ``limit`` distinct values pass; later new ones become ``other``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return sc.LABEL_OTHER
        self._seen.add(value)
        return value


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _protocol(signal: str) -> str:
    return (
        _env(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).lower()


def _check_protocol(protocol: str) -> None:
    if protocol == "grpc":
        try:
            import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
        except ImportError:
            raise ExporterConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the package "
                "opentelemetry-exporter-otlp-proto-grpc; install it or use http/protobuf"
            ) from None
    elif protocol != "http/protobuf":
        raise ExporterConfigError(
            f"OTLP protocol '{protocol}' is not supported (use http/protobuf or grpc)"
        )


def _otlp_span_exporter() -> SpanExporter:
    if _protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter()  # type: ignore[no-any-return]
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _otlp_metric_reader() -> MetricReader:
    if _protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return PeriodicExportingMetricReader(GrpcMetricExporter())
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return PeriodicExportingMetricReader(OTLPMetricExporter())


def _signal_off(name: str) -> bool:
    return (os.environ.get(name, "").strip().lower() or "otlp") == "none"


def _ns(epoch_s: float) -> int:
    return int(epoch_s * 1e9)


class OtelExporter:
    """Turns trace records into OpenTelemetry spans and GenAI metrics; never raises.

    Thread-safety: ``export`` runs on one worker thread (the pipeline serialises it);
    ``force_flush``/``shutdown`` may come from another thread.
    """

    name = "otel"

    def __init__(
        self,
        *,
        exporter: str = "otlp",
        capture_content: bool = False,
        provider_name: str = sc.GEN_AI_PROVIDER_OPENAI,
        span_processor: str = "inline",
        max_models: int = 50,
        service_name: str | None = None,
    ) -> None:
        if exporter not in _EXPORTERS:
            raise ValueError(f"exporter must be one of {list(_EXPORTERS)}, not '{exporter}'")
        if span_processor not in _PROCESSORS:
            raise ValueError(f"span_processor must be one of {list(_PROCESSORS)}")
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        if exporter == "otlp":
            _check_protocol(_protocol("TRACES"))
            _check_protocol(_protocol("METRICS"))
        self.exporter_kind = exporter
        self.capture_content = bool(capture_content)
        self.provider_name = str(provider_name)
        self.span_processor = span_processor
        self.service_name = service_name
        self._models = _BoundedValues(max_models)
        self._start_lock = threading.Lock()
        self._started = False
        self._servers: dict[str, tuple[str | None, int | None]] = {}
        self.records_exported = 0
        self.records_failed = 0  # records whose spans could not be built (a bug), or lost
        self.export_failures = 0  # batches whose spans the span exporter refused
        # set by start()
        self.tracer_provider: TracerProvider | None = None
        self.meter_provider: MeterProvider | None = None
        self.span_exporter: SpanExporter | None = None  # the real one (InMemorySpanExporter, ...)
        self.metric_reader: MetricReader | None = None
        self._counting: _CountingSpanExporter | None = None
        self._inline: _InlineSpanProcessor | None = None
        self._ids = PresetIdGenerator()
        self._tracer: trace_api.Tracer | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, data_dir: Path) -> OtelExporter:
        """Build from settings (``data_dir`` is unused). Raises ``ValueError`` on bad options."""
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}")
        capture = options.get("capture_content", False)
        if not isinstance(capture, bool):
            raise TypeError("capture_content must be true or false")
        return cls(
            exporter=str(options.get("exporter", "otlp")),
            capture_content=capture,
            provider_name=str(options.get("provider_name", sc.GEN_AI_PROVIDER_OPENAI)),
            span_processor=str(options.get("span_processor", "inline")),
            max_models=int(options.get("max_models", 50)),
            service_name=options.get("service_name"),
        )

    # -- lifecycle ---------------------------------------------------------------------

    def _resource(self) -> Resource:
        resource = Resource.create({})
        name = self.service_name
        if name is None and str(resource.attributes.get(SERVICE_NAME, "")).startswith(
            "unknown_service"
        ):
            name = "railwatch"
        if name is not None:
            resource = resource.merge(Resource({SERVICE_NAME: name}))
        return resource

    def start(self) -> None:
        """Create the providers (no network I/O; OTLP connects on first export). Idempotent."""
        with self._start_lock:
            if self._started:
                return
            resource = self._resource()
            kind = self.exporter_kind
            if kind == "memory":
                span_exporter: SpanExporter | None = InMemorySpanExporter()
                reader: MetricReader | None = InMemoryMetricReader()
            elif kind == "console":
                span_exporter = ConsoleSpanExporter()
                reader = PeriodicExportingMetricReader(ConsoleMetricExporter())
            else:
                span_exporter = None if _signal_off("OTEL_TRACES_EXPORTER") else _otlp_span_exporter()
                reader = None if _signal_off("OTEL_METRICS_EXPORTER") else _otlp_metric_reader()
            tracer_provider = TracerProvider(resource=resource, id_generator=self._ids)
            if span_exporter is not None:
                self._counting = _CountingSpanExporter(span_exporter)
                if self.span_processor == "inline":
                    self._inline = _InlineSpanProcessor(self._counting)
                    tracer_provider.add_span_processor(self._inline)
                else:
                    tracer_provider.add_span_processor(BatchSpanProcessor(self._counting))
            self.span_exporter = span_exporter
            self.tracer_provider = tracer_provider
            self._tracer = tracer_provider.get_tracer("railwatch")
            self.metric_reader = reader
            self.meter_provider = MeterProvider(
                resource=resource, metric_readers=[reader] if reader is not None else []
            )
            meter = self.meter_provider.get_meter("railwatch")
            self._token_usage = meter.create_histogram(
                sc.OTEL_METRIC_TOKEN_USAGE, unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
            )
            self._duration = meter.create_histogram(
                sc.OTEL_METRIC_OPERATION_DURATION, unit="s", description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            )
            self._ttfc = meter.create_histogram(
                sc.OTEL_METRIC_TIME_TO_FIRST_CHUNK, unit="s",
                description="Time to the first output chunk of a stream.",
                explicit_bucket_boundaries_advisory=_TTFC_BUCKETS,
            )
            self._tpoc = meter.create_histogram(
                sc.OTEL_METRIC_TIME_PER_OUTPUT_CHUNK, unit="s",
                description="Mean time per output token after the first, per stream.",
                explicit_bucket_boundaries_advisory=_TPOC_BUCKETS,
            )
            self._started = True

    def export(self, batch: Sequence[TraceRecord]) -> ExportResult:
        """Build and deliver spans and metric points for ``batch``. Never raises."""
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - counted; the pipeline goes on
            logger.error("otel exporter could not start: %s", type(exc).__name__)
            self.records_failed += len(batch)
            return ExportResult.FAILURE
        built = 0
        for record in batch:
            try:
                self._record_spans(record)
                self._record_metrics(record)
                built += 1
            except Exception as exc:  # noqa: BLE001 - one bad record must not lose the batch
                self.records_failed += 1
                logger.error("otel exporter skipped record %s: %s", record.request_id,
                             type(exc).__name__)
        ok = built == len(batch)
        if self._inline is not None and not self._inline.deliver():
            self.export_failures += 1
            self.records_failed += built
            return ExportResult.FAILURE
        self.records_exported += built
        return ExportResult.SUCCESS if ok else ExportResult.FAILURE

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        if not self._started:
            return True
        millis = int(max(timeout_s, 0.0) * 1000)
        try:
            ok = self.tracer_provider.force_flush(millis)  # type: ignore[union-attr]
            return bool(self.meter_provider.force_flush(millis)) and ok  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001
            logger.error("otel force_flush raised %s", type(exc).__name__)
            return False

    def shutdown(self, timeout_s: float = 10.0) -> None:
        if not self._started:
            return
        try:
            self.tracer_provider.shutdown()  # type: ignore[union-attr]
            self.meter_provider.shutdown(int(max(timeout_s, 0.0) * 1000))  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001
            logger.error("otel shutdown raised %s", type(exc).__name__)

    def state(self) -> dict[str, Any]:
        counting = self._counting
        return {
            "name": self.name,
            "exporter": self.exporter_kind,
            "span_processor": self.span_processor,
            "capture_content": self.capture_content,
            "records_exported": self.records_exported,
            "records_failed": self.records_failed,
            "export_failures": self.export_failures,
            "spans_exported": counting.exported if counting else 0,
            "spans_failed": counting.failed if counting else 0,
        }

    # -- spans -------------------------------------------------------------------------

    def _server(self, upstream: str) -> tuple[str | None, int | None]:
        hit = self._servers.get(upstream)
        if hit is None:
            try:
                parts = urlsplit(upstream)
                port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
                hit = (parts.hostname, port)
            except ValueError:
                hit = (None, None)
            if len(self._servers) < 64:
                self._servers[upstream] = hit
        return hit

    def _span_name(self, r: TraceRecord) -> str:
        if r.route in _GENAI_ROUTES:
            return f"{r.route} {r.model_requested}" if r.model_requested else r.route
        route = _HTTP_ROUTES.get(r.route)
        return f"{r.method} {route}" if route else r.method

    def _server_attributes(self, r: TraceRecord) -> dict[str, Any]:
        # Every attribute costs about 10 us of CPU (SDK validation plus OTLP encoding), so
        # values the span tree already shows are left out: total time is the span's
        # duration, upstream time the CLIENT span's, the upstream URL is on that span.
        a: dict[str, Any] = {
            sc.HTTP_REQUEST_METHOD: r.method,
            sc.URL_PATH: r.path,
            sc.RAILWATCH_REQUEST_ID: r.request_id,
            sc.RAILWATCH_DECISION: r.decision,
        }
        http_route = _HTTP_ROUTES.get(r.route)
        if http_route is not None:
            a[sc.HTTP_ROUTE] = http_route
        if r.route in _GENAI_ROUTES:
            a[sc.GEN_AI_OPERATION_NAME] = r.route
            a[sc.GEN_AI_PROVIDER_NAME] = self.provider_name
            a[sc.GEN_AI_REQUEST_STREAM] = r.stream
        else:
            a[sc.RAILWATCH_ROUTE] = r.route
        if r.retries:
            a[sc.RAILWATCH_RETRIES] = r.retries
        address, port = self._server(r.upstream)
        if address:
            a[sc.SERVER_ADDRESS] = address
        if port:
            a[sc.SERVER_PORT] = port
        if r.status:
            a[sc.HTTP_RESPONSE_STATUS_CODE] = r.status
        optional: tuple[tuple[str, Any], ...] = (
            (sc.GEN_AI_REQUEST_MODEL, r.model_requested),
            (sc.GEN_AI_REQUEST_TEMPERATURE, r.temperature),
            (sc.GEN_AI_REQUEST_TOP_P, r.top_p),
            (sc.GEN_AI_REQUEST_MAX_TOKENS, r.max_tokens),
            (sc.GEN_AI_REQUEST_CHOICE_COUNT, r.n),
            (sc.GEN_AI_RESPONSE_ID, r.response_id),
            (sc.GEN_AI_RESPONSE_MODEL, r.model_served),
            (sc.GEN_AI_OPENAI_RESPONSE_SYSTEM_FINGERPRINT, r.system_fingerprint),
            (sc.GEN_AI_USAGE_INPUT_TOKENS, r.prompt_tokens),
            (sc.GEN_AI_USAGE_OUTPUT_TOKENS, r.completion_tokens),
            (sc.GEN_AI_CONVERSATION_ID, r.conversation_id),
            (sc.RAILWATCH_TENANT, r.tenant),
            (sc.RAILWATCH_USER, r.user),
            (sc.RAILWATCH_HANDOFF_ID, r.handoff_id),
            (sc.RAILWATCH_USAGE_SOURCE, r.usage_source),
            (sc.RAILWATCH_OVERHEAD_MS, r.overhead_ms),
            (sc.RAILWATCH_TPOT_MS, r.tpot_ms),
        )
        for key, value in optional:
            if value is not None:
                a[key] = value
        if r.ttft_ms is not None:
            a[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = r.ttft_ms / 1000.0
        if r.finish_reasons:
            a[sc.GEN_AI_RESPONSE_FINISH_REASONS] = list(r.finish_reasons)
        if r.client_disconnected:
            a[sc.RAILWATCH_CLIENT_DISCONNECTED] = True
        if r.error_type:
            a[sc.ERROR_TYPE] = r.error_type
        elif r.status >= 500:
            a[sc.ERROR_TYPE] = str(r.status)
        for key, value in r.attributes.items():
            a.setdefault(key, value)
        if self.capture_content:
            self._content(r, a)
        return a

    def _content(self, r: TraceRecord, a: dict[str, Any]) -> None:
        if r.prompt_text is not None:
            a[sc.GEN_AI_INPUT_MESSAGES] = orjson.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": r.prompt_text}]}]
            ).decode()
        if r.output_text is not None:
            a[sc.GEN_AI_OUTPUT_MESSAGES] = orjson.dumps(
                [{
                    "role": "assistant",
                    "parts": [{"type": "text", "content": r.output_text}],
                    "finish_reason": r.finish_reasons[0] if r.finish_reasons else "unknown",
                }]
            ).decode()
        if r.prompt_text is not None or r.output_text is not None:
            a[sc.RAILWATCH_CONTENT_MASKED] = r.text_masked

    def _parent_context(self, r: TraceRecord) -> Context:
        if not r.parent_span_id:
            return Context()
        flags = getattr(r, "trace_flags", "01")  # not in the record yet: assume sampled
        parent = trace_api.SpanContext(
            int(r.trace_id, 16),
            int(r.parent_span_id, 16),
            is_remote=True,
            trace_flags=trace_api.TraceFlags(int(flags, 16) & 0x01),
        )
        return trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent), Context())

    def _record_spans(self, r: TraceRecord) -> None:
        tracer = self._tracer
        assert tracer is not None
        start = _ns(r.started_at)
        end = max(_ns(r.ended_at), start)
        self._ids.preset(int(r.trace_id, 16), int(r.span_id, 16))
        span = tracer.start_span(
            self._span_name(r),
            context=self._parent_context(r),
            kind=SpanKind.SERVER,
            attributes=self._server_attributes(r),
            start_time=start,
        )
        self._ids.preset(0, 0)  # a sampler that dropped the span must not leak the preset
        if not span.is_recording():
            return
        if r.error_type or r.status >= 500:
            span.set_status(Status(StatusCode.ERROR, r.error_type or str(r.status)))
        child_ctx = trace_api.set_span_in_context(span, Context())
        self._upstream_spans(r, tracer, child_ctx, start, end)
        run_end: dict[tuple[str, str], int] = {}
        stage_end: dict[str, int] = {}
        for run in r.detector_runs:
            run_end_ns = self._detector_span(run, tracer, child_ctx, start)
            run_end.setdefault((run.stage, run.detector), run_end_ns)
            stage_end[run.stage] = max(stage_end.get(run.stage, 0), run_end_ns)
        for f in r.findings:
            span.add_event(
                sc.GEN_AI_EVALUATION_RESULT,
                {
                    sc.GEN_AI_EVALUATION_NAME: f.detector,
                    sc.GEN_AI_EVALUATION_SCORE_VALUE: f.score,
                    sc.GEN_AI_EVALUATION_SCORE_LABEL: f.label,
                    sc.RAILWATCH_FINDING_STAGE: f.stage,
                    sc.RAILWATCH_FINDING_ACTION: f.action,
                    sc.RAILWATCH_FINDING_START: f.start,
                    sc.RAILWATCH_FINDING_END: f.end,
                },
                timestamp=min(run_end.get((f.stage, f.detector), end), end),
            )
        for d in r.decisions:
            span.add_event(
                sc.EVENT_DECISION,
                {
                    sc.RAILWATCH_DECISION_STAGE: d.stage,
                    sc.RAILWATCH_DECISION: d.action,
                    sc.RAILWATCH_DECISION_REASONS: list(d.reasons),
                },
                timestamp=min(stage_end.get(d.stage, end), end),
            )
        span.end(end_time=end)

    def _upstream_spans(
        self, r: TraceRecord, tracer: trace_api.Tracer, ctx: Context, start: int, end: int
    ) -> None:
        """One CLIENT span per upstream attempt (today: one for the whole upstream window)."""
        route = _HTTP_ROUTES.get(r.route)
        name = f"{r.method} {route}" if route else r.method
        address, port = self._server(r.upstream)
        base: dict[str, Any] = {sc.HTTP_REQUEST_METHOD: r.method, sc.URL_FULL: r.upstream + r.path}
        if address:
            base[sc.SERVER_ADDRESS] = address
        if port:
            base[sc.SERVER_PORT] = port
        attempts: Sequence[Any] = getattr(r, "attempts", ())
        if attempts:
            for i, att in enumerate(attempts):
                a = dict(base)
                a[sc.RAILWATCH_ATTEMPT_INDEX] = i
                if getattr(att, "upstream", None):
                    a[sc.URL_FULL] = att.upstream + r.path
                if getattr(att, "model", None):
                    a[sc.GEN_AI_REQUEST_MODEL] = att.model
                if getattr(att, "status", None):
                    a[sc.HTTP_RESPONSE_STATUS_CODE] = att.status
                error = getattr(att, "error", None)
                s = start + int(att.offset_ms * 1e6)
                e = s + int(att.latency_ms * 1e6) if att.latency_ms is not None else end
                self._child(tracer, ctx, name, SpanKind.CLIENT, a, s, min(e, end), error)
            return
        if r.upstream_offset_ms is None:
            return  # never sent
        a = base
        a[sc.RAILWATCH_UPSTREAM_ATTEMPTS] = r.upstream_attempts
        s = start + int(r.upstream_offset_ms * 1e6)
        e = s + int(r.upstream_ms * 1e6) if r.upstream_ms is not None else end
        error = r.error_type if r.error_type and r.error_type.startswith("upstream") else None
        self._child(tracer, ctx, name, SpanKind.CLIENT, a, s, min(e, end), error)

    def _detector_span(
        self, run: DetectorRunRecord, tracer: trace_api.Tracer, ctx: Context, start: int
    ) -> int:
        s = start + int(run.offset_ms * 1e6)
        e = s + int(run.latency_ms * 1e6)
        a: dict[str, Any] = {
            sc.RAILWATCH_DETECTOR: run.detector,
            sc.RAILWATCH_DETECTOR_STAGE: run.stage,
            sc.RAILWATCH_DETECTOR_FINDINGS: run.findings,
        }
        if run.batch_size:
            a[sc.RAILWATCH_DETECTOR_BATCH_SIZE] = run.batch_size
        self._child(tracer, ctx, f"{sc.SPAN_DETECTOR} {run.detector}", SpanKind.INTERNAL, a, s, e,
                    run.error)
        return e

    @staticmethod
    def _child(
        tracer: trace_api.Tracer,
        ctx: Context,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        start: int,
        end: int,
        error: str | None,
    ) -> None:
        if error:
            attributes[sc.ERROR_TYPE] = error
        child = tracer.start_span(name, context=ctx, kind=kind, attributes=attributes,
                                  start_time=start)
        if error:
            child.set_status(Status(StatusCode.ERROR, error))
        child.end(end_time=max(end, start))

    # -- metrics -----------------------------------------------------------------------

    def _record_metrics(self, r: TraceRecord) -> None:
        if r.route not in _GENAI_ROUTES:
            return
        a: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: r.route,
            sc.GEN_AI_PROVIDER_NAME: self.provider_name,
        }
        if r.model_requested:
            a[sc.GEN_AI_REQUEST_MODEL] = self._models(r.model_requested)
        if r.model_served:
            a[sc.GEN_AI_RESPONSE_MODEL] = self._models(r.model_served)
        address, port = self._server(r.upstream)
        if address:
            a[sc.SERVER_ADDRESS] = address
        if port:
            a[sc.SERVER_PORT] = port
        # error.type only on the duration: the semconv's token and chunk metrics lack it
        self._duration.record(
            r.total_ms / 1000.0, {**a, sc.ERROR_TYPE: r.error_type} if r.error_type else a
        )
        if r.prompt_tokens is not None:
            self._token_usage.record(r.prompt_tokens, {**a, sc.GEN_AI_TOKEN_TYPE: sc.GEN_AI_TOKEN_TYPE_INPUT})
        if r.completion_tokens is not None:
            self._token_usage.record(
                r.completion_tokens, {**a, sc.GEN_AI_TOKEN_TYPE: sc.GEN_AI_TOKEN_TYPE_OUTPUT}
            )
        if r.ttft_ms is not None:
            self._ttfc.record(r.ttft_ms / 1000.0, a)
        if r.tpot_ms is not None:
            self._tpoc.record(r.tpot_ms / 1000.0, a)
