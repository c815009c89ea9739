"""The OpenTelemetry SDK pieces the exporter plugs in: ids, counting, inline delivery, OTLP.

- :class:`PresetIdGenerator` lets a span carry ids decided before it was created (the
  record's), which the SDK otherwise always generates itself.
- :class:`CountingSpanExporter` wraps the real span exporter and counts what it
  delivered or lost; it never raises.
- :class:`InlineSpanProcessor` keeps the spans ended during one record batch and hands
  them to the exporter in one synchronous call (see :mod:`exporters.otel.exporter` for
  why this rather than the SDK's simple or batch processor).
- ``otlp_span_exporter`` / ``otlp_metric_reader`` pick HTTP/protobuf or gRPC from the
  standard ``OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]PROTOCOL`` variables; the exporters
  read every other ``OTEL_EXPORTER_OTLP_*`` variable themselves.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Sequence

from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator

from exporters.errors import ExporterConfigError

logger = logging.getLogger(__name__)

EXPORT_CHUNK = 512  # spans per span-exporter call (the SDK's own default batch size)


class PresetIdGenerator(IdGenerator):
    """Random ids, except the next ids preset for the calling thread (used once).

    :meth:`preset` right before ``start_span`` makes that span carry the given ids;
    every other span (children) gets random ones. Thread-local, so exporters in other
    threads never take each other's ids.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._rng = random.Random(os.urandom(32))

    def preset(self, trace_id: int, span_id: int) -> None:
        """Ids for the next span this thread starts; ``(0, 0)`` clears them."""
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


class CountingSpanExporter(SpanExporter):
    """Delegates to the real span exporter and counts spans delivered or lost."""

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


class InlineSpanProcessor(SpanProcessor):
    """Collects ended spans until :meth:`deliver` exports them, on the caller's thread."""

    def __init__(self, exporter: CountingSpanExporter) -> None:
        self.exporter = exporter
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        with self._lock:
            self._spans.append(span)

    def deliver(self) -> bool:
        """Export what was collected, in chunks; ``False`` if any chunk failed. May block."""
        with self._lock:
            spans, self._spans = self._spans, []
        ok = True
        for i in range(0, len(spans), EXPORT_CHUNK):
            result = self.exporter.export(spans[i : i + EXPORT_CHUNK])
            ok = result is SpanExportResult.SUCCESS and ok
        return ok

    def shutdown(self) -> None:
        self.deliver()
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.deliver()


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def protocol(signal: str) -> str:
    """The OTLP protocol for ``signal`` ("TRACES" | "METRICS"), as the distro reads it."""
    return (
        _env(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).lower()


def check_protocols() -> None:
    """Raise :class:`ExporterConfigError` unless both signals' protocols can be served."""
    for signal in ("TRACES", "METRICS"):
        proto = protocol(signal)
        if proto == "grpc":
            try:
                import opentelemetry.exporter.otlp.proto.grpc  # noqa: F401
            except ImportError:
                raise ExporterConfigError(
                    "OTLP protocol grpc needs the package opentelemetry-exporter-otlp-proto-grpc;"
                    " install it or use http/protobuf"
                ) from None
        elif proto != "http/protobuf":
            raise ExporterConfigError(
                f"OTLP protocol '{proto}' is not supported (use http/protobuf or grpc)"
            )


def signal_off(variable: str) -> bool:
    """``OTEL_TRACES_EXPORTER=none`` / ``OTEL_METRICS_EXPORTER=none``."""
    return os.environ.get(variable, "").strip().lower() == "none"


def otlp_span_exporter() -> SpanExporter:
    if protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter()  # type: ignore[no-any-return]
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def otlp_metric_reader() -> MetricReader:
    """A periodic reader (``OTEL_METRIC_EXPORT_INTERVAL``, 60 s default) over OTLP."""
    if protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return PeriodicExportingMetricReader(GrpcMetricExporter())
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return PeriodicExportingMetricReader(OTLPMetricExporter())
