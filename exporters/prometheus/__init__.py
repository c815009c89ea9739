"""Prometheus exporter: metrics from trace records plus scrape-time state sources.

``PrometheusExporter`` (entry point ``prometheus``) keeps its own registry and renders
it for ``GET /metrics``; ``StateSample`` / ``StateSource`` are the scrape-time interface
and :mod:`exporters.prometheus.sources` adapts the sidecar's ``state()`` dicts to it.
"""

from __future__ import annotations

from exporters.prometheus.exporter import PrometheusExporter
from exporters.prometheus.sources import (
    clickhouse_source,
    detector_runner_source,
    intake_source,
    export_pipeline_source,
    proxy_source,
    upstream_probe_source,
    upstreams_source,
)
from exporters.prometheus.state import FAMILIES, FamilySpec, StateSample, StateSource

__all__ = [
    "FAMILIES",
    "FamilySpec",
    "PrometheusExporter",
    "StateSample",
    "StateSource",
    "clickhouse_source",
    "detector_runner_source",
    "intake_source",
    "export_pipeline_source",
    "proxy_source",
    "upstream_probe_source",
    "upstreams_source",
]
