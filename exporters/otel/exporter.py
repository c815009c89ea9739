"""The ``otel`` exporter: trace records -> OpenTelemetry spans and GenAI metrics.

Spans and metric points are built *after* the request, from the frozen record, in the
export worker thread; the request path never touches OpenTelemetry. What the spans
and metrics look like: :mod:`exporters.otel.spans`, :mod:`exporters.otel.metrics`.

Options (``exporters: [{kind: otel, options: {...}}]``):

- ``exporter``: ``otlp`` (default), ``console`` or ``memory`` (the SDK's
  ``InMemorySpanExporter`` and ``InMemoryMetricReader``, for tests).
- ``capture_content`` (false): add ``gen_ai.input.messages`` / ``gen_ai.output.messages``.
- ``provider_name``: the value of ``gen_ai.provider.name``; default ``openai`` because
  the wire format is OpenAI's whatever server answers it; set the conventions' value
  for the real provider when it is known (e.g. ``azure.ai.openai``).
- ``span_processor``: ``inline`` (default) or ``batch`` (below).
- ``max_models`` (50): distinct model names on metrics before ``other``.
- ``service_name``: overrides ``OTEL_SERVICE_NAME``; ``railwatch`` when neither is set.

Everything else is the SDK's standard environment: ``OTEL_EXPORTER_OTLP_*`` (endpoint,
headers, timeout, compression, certificates, per signal too),
``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]PROTOCOL`` (``http/protobuf`` by default;
``grpc`` needs ``opentelemetry-exporter-otlp-proto-grpc``, else a config error at
start-up), ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER[_ARG]``, span limits, ``OTEL_METRIC_EXPORT_INTERVAL``,
``OTEL_SDK_DISABLED``; ``OTEL_TRACES_EXPORTER=none`` / ``OTEL_METRICS_EXPORTER=none`` turn
a signal off (no spans are even built then); ``OTEL_BSP_*`` apply to ``batch``.
The providers are this exporter's own; the global ones are never set.

Span processor. ``inline`` hands the spans of each record batch to the span exporter in
one call at the end of :meth:`OtelExporter.export`, on this worker thread: a collector
outage shows in ``export``'s result and in the pipeline's counters, and there is no
second queue or thread. The SDK's ``SimpleSpanProcessor`` would make one OTLP request
per span; its ``BatchSpanProcessor`` (``batch``) adds a second bounded queue and thread
behind ours whose drops our counters cannot see (they show only in ``spans_failed``
when the export itself fails), and up to ``OTEL_BSP_SCHEDULE_DELAY`` (5 s) more delay.
With ``inline`` a dead collector holds this worker up to ``OTEL_EXPORTER_OTLP_TIMEOUT``
(10 s) per batch; the pipeline's queue then fills and drops (counted), never the
request path.

Cost (measured here: one chat record with 2 findings, 2 detector runs, 2 decisions,
i.e. 4 spans and 4 events): building the spans through the SDK about 150 us of CPU per
record, the metrics about 50 us, and the OTLP exporter's protobuf encoding about 60 us
per span on top. That CPU is off the request path but in the same process (GIL), so at
high request rates sample traces with ``OTEL_TRACES_SAMPLER=parentbased_traceidratio``;
metrics are recorded for every record regardless of sampling.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    InMemoryMetricReader,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from exporters.base import ExportResult
from exporters.otel import _sdk
from exporters.otel.metrics import GenAiMetrics
from exporters.otel.spans import SpanBuilder
from sidecar import semconv as sc
from sidecar.record import TraceRecord

logger = logging.getLogger(__name__)

_EXPORTERS = ("otlp", "console", "memory")
_PROCESSORS = ("inline", "batch")
_OPTIONS = frozenset(
    ("exporter", "capture_content", "provider_name", "span_processor", "max_models",
     "service_name")
)


class OtelExporter:
    """Records -> spans and GenAI metrics. ``export`` never raises.

    ``export`` runs on one worker thread (the pipeline serialises it); ``force_flush`` and
    ``shutdown`` may come from another. The SDK objects are created in :meth:`start`
    (or on the first export): no network I/O there, OTLP connects when it first sends.
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
            _sdk.check_protocols()
        self.exporter_kind = exporter
        self.capture_content = bool(capture_content)
        self.reads_text = self.capture_content  # message content only when captured
        self.provider_name = str(provider_name)
        self.span_processor = span_processor
        self.max_models = max_models
        self.service_name = service_name
        self.records_exported = 0
        self.records_failed = 0  # records whose spans could not be built or delivered
        self.export_failures = 0  # batches whose spans the span exporter refused
        self._start_lock = threading.Lock()
        self._started = False
        self._ids = _sdk.PresetIdGenerator()
        # set by start()
        self.tracer_provider: TracerProvider | None = None
        self.meter_provider: MeterProvider | None = None
        self.span_exporter: SpanExporter | None = None  # the real one (InMemorySpanExporter...)
        self.metric_reader: MetricReader | None = None
        self._counting: _sdk.CountingSpanExporter | None = None
        self._inline: _sdk.InlineSpanProcessor | None = None
        self._spans: SpanBuilder | None = None
        self._metrics: GenAiMetrics | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, data_dir: Path) -> OtelExporter:
        """Build from settings (``data_dir`` is unused). Raises ``ValueError``/``TypeError``
        on bad options and ``ExporterConfigError`` on an unusable OTLP protocol."""
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}")
        capture = options.get("capture_content", False)
        if not isinstance(capture, bool):
            raise TypeError("capture_content must be true or false")
        service_name = options.get("service_name")
        return cls(
            exporter=str(options.get("exporter", "otlp")),
            capture_content=capture,
            provider_name=str(options.get("provider_name", sc.GEN_AI_PROVIDER_OPENAI)),
            span_processor=str(options.get("span_processor", "inline")),
            max_models=int(options.get("max_models", 50)),
            service_name=None if service_name is None else str(service_name),
        )

    # -- lifecycle ---------------------------------------------------------------------

    def _resource(self) -> Resource:
        resource = Resource.create({})  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
        name = self.service_name
        if name is None and str(resource.attributes.get(SERVICE_NAME, "")).startswith(
            "unknown_service"
        ):
            name = "railwatch"
        if name is not None:
            resource = resource.merge(Resource({SERVICE_NAME: name}))
        return resource

    def _readers(self) -> tuple[SpanExporter | None, MetricReader | None]:
        if self.exporter_kind == "memory":
            return InMemorySpanExporter(), InMemoryMetricReader()
        if self.exporter_kind == "console":
            return ConsoleSpanExporter(), PeriodicExportingMetricReader(ConsoleMetricExporter())
        spans = None if _sdk.signal_off("OTEL_TRACES_EXPORTER") else _sdk.otlp_span_exporter()
        reader = None if _sdk.signal_off("OTEL_METRICS_EXPORTER") else _sdk.otlp_metric_reader()
        return spans, reader

    def start(self) -> None:
        """Create the providers. Idempotent; may raise (the app reports a start-up error)."""
        with self._start_lock:
            if self._started:
                return
            resource = self._resource()
            span_exporter, reader = self._readers()
            # The app's lifespan shuts us down after the pipeline drained: no atexit hooks.
            tracer_provider = TracerProvider(
                resource=resource, id_generator=self._ids, shutdown_on_exit=False
            )
            if span_exporter is not None:
                self._counting = _sdk.CountingSpanExporter(span_exporter)
                if self.span_processor == "inline":
                    self._inline = _sdk.InlineSpanProcessor(self._counting)
                    tracer_provider.add_span_processor(self._inline)
                else:
                    tracer_provider.add_span_processor(BatchSpanProcessor(self._counting))
                self._spans = SpanBuilder(
                    tracer_provider.get_tracer("railwatch"),
                    self._ids,
                    provider_name=self.provider_name,
                    capture_content=self.capture_content,
                )
            meter_provider = MeterProvider(
                resource=resource,
                metric_readers=[reader] if reader is not None else [],
                shutdown_on_exit=False,
            )
            if reader is not None:
                self._metrics = GenAiMetrics(
                    meter_provider.get_meter("railwatch"),
                    provider_name=self.provider_name,
                    max_models=self.max_models,
                )
            self.span_exporter, self.metric_reader = span_exporter, reader
            self.tracer_provider, self.meter_provider = tracer_provider, meter_provider
            self._started = True

    def export(self, batch: Sequence[TraceRecord]) -> ExportResult:
        """Build and deliver the spans and metric points of ``batch``. Never raises; may
        block on the collector (``inline``) up to the OTLP timeout."""
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - counted; the pipeline goes on
            logger.error("otel exporter could not start: %s", type(exc).__name__)
            self.records_failed += len(batch)
            return ExportResult.FAILURE
        spans, metrics = self._spans, self._metrics
        built = 0
        for record in batch:
            try:
                if spans is not None:
                    spans.build(record)
                if metrics is not None:
                    metrics.record(record)
                built += 1
            except Exception as exc:  # noqa: BLE001 - one bad record must not lose the batch
                self.records_failed += 1
                logger.error("otel exporter skipped record %s: %s", record.request_id,
                             type(exc).__name__)
        if self._inline is not None and not self._inline.deliver():
            self.export_failures += 1
            self.records_failed += built
            return ExportResult.FAILURE
        self.records_exported += built
        return ExportResult.SUCCESS if built == len(batch) else ExportResult.FAILURE

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
        """Deliver what is left and stop the providers. Never raises."""
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
