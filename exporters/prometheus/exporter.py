"""Prometheus exporter: request, token, guardrail and detector metrics from trace records.

Metrics live in the exporter's own :class:`~prometheus_client.CollectorRegistry`
(never the global one), are updated from finished records in the export worker
thread, and are rendered by :meth:`PrometheusExporter.render` for the app's
``GET /metrics``. Scrape-time values (queues, backlogs, in-flight, detector info)
come from state sources registered with :meth:`PrometheusExporter.add_state_source`
(see :mod:`exporters.prometheus.state`).

From records (names in :mod:`sidecar.semconv`; counters get ``_total``)::

    railwatch_requests_total{route, model, status, decision}
    railwatch_request_errors_total{route, error_type}
    railwatch_retries_total{route}
    railwatch_upstream_attempts_total{upstream, kind, error}   one per attempt (name, not URL)
    railwatch_request_duration_seconds{route, model}      histogram, total time
    railwatch_upstream_duration_seconds{route, model}     histogram
    railwatch_overhead_seconds{route}                     histogram, sub-ms buckets
    railwatch_time_to_first_token_seconds{model}          histogram, streams
    railwatch_time_per_output_token_seconds{model}        histogram, streams
    railwatch_tokens_total{type="input"|"output", model}
    railwatch_guardrail_triggers_total{detector, stage, label, action}   one per finding
    railwatch_detector_duration_seconds{detector, stage}  histogram, one per detector run
    railwatch_detector_errors_total{detector, error}

Label values are bounded: ``model`` is the model the upstream *served* (its answer's
``model``), never a client's free text: a requested name is used only when it
already has a slot (an upstream served it, or :meth:`PrometheusExporter.known_models`
listed it from the upstream's ``/v1/models``), else it is ``other``. Served names are
limited to model-name characters and to the first ``max_models`` (50) distinct
names (listed models take no slot), or to the ``models`` allow-list when configured.
``status`` is the code for a known set, else its class (``"4xx"``). Every other label is
capped too (routes 16, decisions 16, error types 32, detectors 64, finding labels 128,
actions 16, upstream names 16). No label ever holds an id or request text.

Options: ``max_models`` (50), ``models`` (an allow-list of model names), and
``process_metrics`` (true: the process, platform and GC collectors that the global
registry would have, registered in ours).

Cost (measured here): about 16-22 us of CPU per record in the worker thread, for a
record with one finding per stage and three detector runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from exporters.base import ExportResult
from exporters.prometheus._labels import BoundedLabel, model_label, status_label
from exporters.prometheus.state import StateCollector, StateSource
from sidecar import semconv as sc
from sidecar.record import TraceRecord

logger = logging.getLogger(__name__)

# Buckets (seconds). Overhead and detectors resolve tens of microseconds.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5)
DETECTOR_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0,
                   80.0, 160.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0)

_OPTIONS = frozenset(("max_models", "models", "process_metrics"))


class PrometheusExporter:
    """Record-driven Prometheus metrics plus scrape-time state; never raises from export.

    ``export`` runs on the export worker thread; ``render`` on whichever thread serves
    ``/metrics`` (prometheus-client's values are lock-protected, so both may run at once).
    """

    name = "prometheus"
    reads_text = False  # counts and durations only: the intake need not mask text for it

    def __init__(
        self,
        *,
        max_models: int = 50,
        models: Sequence[str] | None = None,
        process_metrics: bool = True,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.state_collector = StateCollector()
        reg.register(self.state_collector)
        if process_metrics:
            ProcessCollector(registry=reg)
            PlatformCollector(registry=reg)
            GCCollector(registry=reg)
        self._model = model_label(max_models, models)
        self._route = BoundedLabel(16)
        self._decision = BoundedLabel(16)
        self._error_type = BoundedLabel(32)
        self._detector = BoundedLabel(64)
        self._label = BoundedLabel(128)
        self._action = BoundedLabel(16)
        self._stage = BoundedLabel(4)
        self._detector_error = BoundedLabel(8)
        self._upstream = BoundedLabel(16)
        self._attempt_kind = BoundedLabel(8)
        self._attempt_error = BoundedLabel(16)
        self.requests = Counter(
            sc.METRIC_REQUESTS, "Requests served, by route, model, status and final decision.",
            (sc.LABEL_ROUTE, sc.LABEL_MODEL, sc.LABEL_STATUS, sc.LABEL_DECISION), registry=reg)
        self.request_errors = Counter(
            sc.METRIC_REQUEST_ERRORS, "Requests that ended with an error, by error type.",
            (sc.LABEL_ROUTE, sc.LABEL_ERROR_TYPE), registry=reg)
        self.retries = Counter(
            sc.METRIC_RETRIES, "Guardrail retries of upstream calls.", (sc.LABEL_ROUTE,),
            registry=reg)
        self.attempts = Counter(
            sc.METRIC_UPSTREAM_ATTEMPTS,
            "Requests sent to upstreams, by upstream name, kind (primary, retry, fallback) "
            "and error ('' when the upstream answered).",
            (sc.LABEL_UPSTREAM, sc.LABEL_KIND, sc.LABEL_ERROR), registry=reg)
        self.duration = Histogram(
            sc.METRIC_REQUEST_DURATION, "Total request time in the sidecar (seconds).",
            (sc.LABEL_ROUTE, sc.LABEL_MODEL), buckets=LATENCY_BUCKETS, registry=reg)
        self.upstream = Histogram(
            sc.METRIC_UPSTREAM_DURATION, "Upstream time: request sent to last byte (seconds).",
            (sc.LABEL_ROUTE, sc.LABEL_MODEL), buckets=LATENCY_BUCKETS, registry=reg)
        self.overhead = Histogram(
            sc.METRIC_OVERHEAD, "Time the sidecar added: total minus upstream (seconds).",
            (sc.LABEL_ROUTE,), buckets=OVERHEAD_BUCKETS, registry=reg)
        self.ttft = Histogram(
            sc.METRIC_TTFT, "Streams: request received to first content token sent (seconds).",
            (sc.LABEL_MODEL,), buckets=TTFT_BUCKETS, registry=reg)
        self.tpot = Histogram(
            sc.METRIC_TPOT, "Streams: mean time per output token after the first (seconds).",
            (sc.LABEL_MODEL,), buckets=TPOT_BUCKETS, registry=reg)
        self.tokens = Counter(
            sc.METRIC_TOKENS, "Tokens by type (input, output) and model.",
            (sc.LABEL_TOKEN_TYPE, sc.LABEL_MODEL), registry=reg)
        self.triggers = Counter(
            sc.METRIC_GUARDRAIL_TRIGGERS, "Detector findings, by detector, stage, label and action.",
            (sc.LABEL_DETECTOR, sc.LABEL_STAGE, sc.LABEL_LABEL, sc.LABEL_ACTION), registry=reg)
        self.detector_duration = Histogram(
            sc.METRIC_DETECTOR_DURATION, "Detector wait per text, queueing included (seconds).",
            (sc.LABEL_DETECTOR, sc.LABEL_STAGE), buckets=DETECTOR_BUCKETS, registry=reg)
        self.detector_errors = Counter(
            sc.METRIC_DETECTOR_ERRORS, "Detector runs that failed, by error.",
            (sc.LABEL_DETECTOR, sc.LABEL_ERROR), registry=reg)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._text_view = _WithoutCreated(self.registry)
        self.records_exported = 0
        self.records_failed = 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, data_dir: Path) -> PrometheusExporter:
        """Build from settings (``data_dir`` unused). Raises ``ValueError`` on bad options."""
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(_OPTIONS)}")
        models = options.get("models")
        if models is not None and (
            not isinstance(models, list) or not all(isinstance(m, str) for m in models)
        ):
            raise ValueError("models must be a list of model names")
        return cls(
            max_models=int(options.get("max_models", 50)),
            models=models,
            process_metrics=bool(options.get("process_metrics", True)),
        )

    def known_models(self, names: Sequence[str]) -> None:
        """Models the upstream lists (``GET /v1/models``): labelled as themselves,
        without using a ``max_models`` slot. Any thread."""
        self._model.reserve(names)

    # -- state sources -------------------------------------------------------------------

    def add_state_source(self, name: str, fn: StateSource) -> None:
        """Register (or replace) a scrape-time source; see :mod:`exporters.prometheus.state`."""
        self.state_collector.add(name, fn)

    def remove_state_source(self, name: str) -> None:
        self.state_collector.remove(name)

    # -- exposition ----------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type. Never raises.

        Text format 0.0.4 by default; OpenMetrics when ``accept`` (the request's
        ``Accept`` header) asks for ``application/openmetrics-text``. The text format
        leaves out prometheus-client's ``*_created`` series (which that format can only
        show as extra gauges, doubling the series count); OpenMetrics keeps them.

        Blocking CPU work that grows with the series count: about 4 ms for 450 lines and
        30-50 ms at the label caps (3,700 lines) here, so call it through
        ``asyncio.to_thread`` from a handler (it is thread-safe), not on the event loop.
        """
        try:
            encoder, content_type = choose_encoder(accept or "")
            if content_type.startswith("application/openmetrics-text"):
                return encoder(self.registry), content_type
            return encoder(self._text_view), content_type
        except Exception as exc:  # noqa: BLE001 - /metrics must answer
            logger.error("rendering metrics failed: %s", type(exc).__name__)
            return b"", "text/plain; version=0.0.4; charset=utf-8"

    # -- the exporter contract -----------------------------------------------------------

    def export(self, batch: Sequence[TraceRecord]) -> ExportResult:
        failed = 0
        for record in batch:
            try:
                self._observe(record)
            except Exception as exc:  # noqa: BLE001 - one odd record must not stop the rest
                failed += 1
                logger.error("prometheus exporter skipped record %s: %s", record.request_id,
                             type(exc).__name__)
        self.records_exported += len(batch) - failed
        self.records_failed += failed
        return ExportResult.SUCCESS if not failed else ExportResult.FAILURE

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        return True  # nothing buffered: values are live in the registry

    def shutdown(self, timeout_s: float = 10.0) -> None:
        pass

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "records_exported": self.records_exported,
            "records_failed": self.records_failed,
            "models_labelled": self._model.distinct,
            "state_sources": sorted(self.state_collector.errors),
            "state_source_errors": sum(self.state_collector.errors.values()),
        }

    # -- record -> metrics ----------------------------------------------------------------

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, cached: a dict hit instead of a locked lookup."""
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def _observe(self, r: TraceRecord) -> None:
        child = self._child
        route = self._route(r.route)
        # the served model is the upstream's word; a client's requested name is free text
        # (50 junk names must not take every slot), so it only reuses an existing slot
        model = (self._model(r.model_served) if r.model_served
                 else self._model.known(r.model_requested))
        child(self.requests, route, model, status_label(r.status), self._decision(r.decision)).inc()
        if r.error_type:
            child(self.request_errors, route, self._error_type(r.error_type)).inc()
        if r.retries:
            child(self.retries, route).inc(r.retries)
        for att in r.attempts:
            child(
                self.attempts, self._upstream(att.upstream), self._attempt_kind(att.kind),
                self._attempt_error(att.error),
            ).inc()
        child(self.duration, route, model).observe(r.total_ms / 1000.0)
        if r.upstream_ms is not None:
            child(self.upstream, route, model).observe(r.upstream_ms / 1000.0)
        if r.overhead_ms is not None:
            child(self.overhead, route).observe(max(r.overhead_ms, 0.0) / 1000.0)
        if r.ttft_ms is not None:
            child(self.ttft, model).observe(r.ttft_ms / 1000.0)
        if r.tpot_ms is not None:
            child(self.tpot, model).observe(r.tpot_ms / 1000.0)
        if r.prompt_tokens:
            child(self.tokens, sc.GEN_AI_TOKEN_TYPE_INPUT, model).inc(r.prompt_tokens)
        if r.completion_tokens:
            child(self.tokens, sc.GEN_AI_TOKEN_TYPE_OUTPUT, model).inc(r.completion_tokens)
        for f in r.findings:
            child(
                self.triggers, self._detector(f.detector), self._stage(f.stage),
                self._label(f.label), self._action(f.action),
            ).inc()
        for run in r.detector_runs:
            detector = self._detector(run.detector)
            child(self.detector_duration, detector, self._stage(run.stage)).observe(
                run.latency_ms / 1000.0
            )
            if run.error:
                child(self.detector_errors, detector, self._detector_error(run.error)).inc()


class _WithoutCreated(Collector):
    """The registry's metrics minus the ``*_created`` samples (for the 0.0.4 text format)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self.registry.collect():
            if metric.type in ("counter", "histogram", "summary"):
                metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric
