"""OpenTelemetry exporter: spans following the GenAI conventions, and GenAI metrics.

``OtelExporter`` (entry point ``otel``) builds one span tree per finished trace record
in the export worker thread, continuing the caller's trace with the record's own ids
(:mod:`exporters.otel.spans`), records the GenAI client histograms
(:mod:`exporters.otel.metrics`) and exports both over OTLP configured by the standard
``OTEL_*`` variables (:mod:`exporters.otel.exporter`).
"""

from __future__ import annotations

from exporters.otel._sdk import PresetIdGenerator
from exporters.otel.exporter import OtelExporter

__all__ = ["OtelExporter", "PresetIdGenerator"]
