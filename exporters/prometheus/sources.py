"""Ready-made state sources for the sidecar's components.

Each function wraps a component's existing ``state()`` callable (the dicts
``/readyz`` already serves) into a :data:`~exporters.prometheus.state.StateSource`.
The application registers them once at start-up, for example::

    prom.add_state_source("exports", export_pipeline_source(runtime.exports.state))
    prom.add_state_source("proxy", proxy_source(runtime.proxy.state))
    prom.add_state_source("detectors", detector_runner_source(runtime.guard.runner.state))
    prom.add_state_source("upstreams", upstreams_source(runtime.upstreams.state))

Missing keys are skipped, so a component may grow (or lack) fields without breaking
the scrape. Wrapped callables are called on every scrape; they must be cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from exporters.prometheus.state import StateSample, StateSource
from sidecar import semconv as sc

StateFn = Callable[[], Mapping[str, Any]]

# BatchProcessor.state() key -> metric
_PIPELINE_KEYS = (
    ("queue_depth", sc.METRIC_EXPORTER_QUEUE),
    ("dropped", sc.METRIC_EXPORTER_DROPPED),
    ("failed", sc.METRIC_EXPORTER_FAILED),
    ("exported", sc.METRIC_EXPORTER_EXPORTED),
)
# ClickHouseExporter.state() key -> metric
_CLICKHOUSE_KEYS = (
    ("pending_rows", sc.METRIC_CLICKHOUSE_PENDING_ROWS),
    ("backlog_rows", sc.METRIC_CLICKHOUSE_BACKLOG_ROWS),
    ("backlog_bytes", sc.METRIC_CLICKHOUSE_BACKLOG_BYTES),
    ("inserted_rows", sc.METRIC_CLICKHOUSE_INSERTED_ROWS),
    ("insert_failures", sc.METRIC_CLICKHOUSE_INSERT_FAILURES),
    ("spilled_rows", sc.METRIC_CLICKHOUSE_SPILLED_ROWS),
    ("replayed_rows", sc.METRIC_CLICKHOUSE_REPLAYED_ROWS),
    ("dropped_rows", sc.METRIC_CLICKHOUSE_DROPPED_ROWS),
    ("rejected_rows", sc.METRIC_CLICKHOUSE_REJECTED_ROWS),
)
CIRCUIT_STATES = ("closed", "open", "half_open")
# CircuitBreaker.snapshot() key -> metric
_CIRCUIT_KEYS = (
    ("consecutive_failures", sc.METRIC_UPSTREAM_CIRCUIT_FAILURES),
    ("opened", sc.METRIC_UPSTREAM_CIRCUIT_OPENED),
    ("rejected", sc.METRIC_UPSTREAM_CIRCUIT_REJECTED),
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _clickhouse_samples(name: str, st: Mapping[str, Any]) -> Iterator[StateSample]:
    labels = {sc.LABEL_EXPORTER: name}
    if "ready" in st:
        yield StateSample(sc.METRIC_CLICKHOUSE_UP, 1.0 if st["ready"] else 0.0, labels)
    for key, metric in _CLICKHOUSE_KEYS:
        value = _number(st.get(key))
        if value is not None:
            yield StateSample(metric, value, labels)


def export_pipeline_source(state: Callable[[], Mapping[str, Mapping[str, Any]]]) -> StateSource:
    """From ``ExportPipeline.state()``: queue depth, dropped, failed, exported per exporter.

    An exporter whose state carries ClickHouse's keys (``backlog_bytes`` ...) also
    yields the ``railwatch_clickhouse_*`` metrics, so one source covers both.
    """

    def source() -> Iterator[StateSample]:
        for name, st in state().items():
            labels = {sc.LABEL_EXPORTER: name}
            for key, metric in _PIPELINE_KEYS:
                value = _number(st.get(key))
                if value is not None:
                    yield StateSample(metric, value, labels)
            if "worker_alive" in st:
                yield StateSample(sc.METRIC_EXPORTER_UP, 1.0 if st["worker_alive"] else 0.0, labels)
            if "backlog_bytes" in st:
                yield from _clickhouse_samples(name, st)

    return source


def clickhouse_source(state: StateFn, exporter: str = "clickhouse") -> StateSource:
    """From ``ClickHouseExporter.state()`` directly (when it is not in an export pipeline)."""

    def source() -> Iterator[StateSample]:
        yield from _clickhouse_samples(exporter, state())

    return source


def proxy_source(state: StateFn) -> StateSource:
    """From ``Proxy.state()``: requests in flight."""

    def source() -> Iterator[StateSample]:
        value = _number(state().get("in_flight"))
        if value is not None:
            yield StateSample(sc.METRIC_IN_FLIGHT, value)

    return source


def detector_runner_source(state: StateFn) -> StateSource:
    """From ``DetectorRunner.state()``: info (kind, backend), up and queue depth per detector."""

    def source() -> Iterator[StateSample]:
        detectors = state().get("detectors") or {}
        for name, lane in detectors.items():
            inner = lane.get("state") or {}
            backend = inner.get("backend") if isinstance(inner, Mapping) else None
            yield StateSample(
                sc.METRIC_DETECTOR_INFO,
                1.0,
                {
                    sc.LABEL_DETECTOR: name,
                    sc.LABEL_KIND: str(lane.get("kind") or ""),
                    sc.LABEL_BACKEND: str(backend or ""),
                },
            )
            labels = {sc.LABEL_DETECTOR: name}
            up = bool(lane.get("started")) and not lane.get("closed") and not lane.get("start_error")
            yield StateSample(sc.METRIC_DETECTOR_UP, 1.0 if up else 0.0, labels)
            queued = _number(lane.get("queued"))
            if queued is not None:
                yield StateSample(sc.METRIC_DETECTOR_QUEUE, queued, labels)

    return source


def upstreams_source(state: Callable[[], Mapping[str, Mapping[str, Any]]]) -> StateSource:
    """From ``UpstreamSet.state()`` (``{name: {"url", "circuit": {"state",
    "consecutive_failures", "opened", "rejected"}}}``): each upstream's circuit breaker.

    Series are labelled by the upstream's configured name (``primary`` or a fallback's),
    never by its URL.
    """

    def source() -> Iterator[StateSample]:
        for name, st in state().items():
            circuit = st.get("circuit")
            if not isinstance(circuit, Mapping):
                continue
            labels = {sc.LABEL_UPSTREAM: name}
            now = circuit.get("state")
            if isinstance(now, str):
                for known in CIRCUIT_STATES:
                    yield StateSample(
                        sc.METRIC_UPSTREAM_CIRCUIT,
                        1.0 if now == known else 0.0,
                        {**labels, sc.LABEL_STATE: known},
                    )
            for key, metric in _CIRCUIT_KEYS:
                value = _number(circuit.get(key))
                if value is not None:
                    yield StateSample(metric, value, labels)

    return source


def upstream_probe_source(state: StateFn, upstream: str = "primary") -> StateSource:
    """From an upstream probe result (``{"state": "ok" | "unreachable" | ...}``, as
    ``UpstreamClient.probe`` caches it): ``railwatch_upstream_up{upstream}``. The
    callable must return the cached result, never probe on the scrape."""

    def source() -> Iterator[StateSample]:
        st = state()
        if "state" in st:
            yield StateSample(
                sc.METRIC_UPSTREAM_UP, 1.0 if st["state"] == "ok" else 0.0,
                {sc.LABEL_UPSTREAM: upstream},
            )

    return source


def rate_limit_source(state: StateFn) -> StateSource:
    """From ``RateLimiter.state()``: refusals per dimension and buckets tracked."""

    def source() -> Iterator[StateSample]:
        current = state()
        for dimension, count in (current.get("limited") or {}).items():
            yield StateSample(sc.METRIC_RATE_LIMITED, float(count), {sc.LABEL_DIMENSION: dimension})
        keys = _number(current.get("tracked_keys"))
        if keys is not None:
            yield StateSample(sc.METRIC_RATE_LIMIT_KEYS, keys)

    return source


def abuse_source(state: StateFn) -> StateSource:
    """From the review login throttle and feedback acceptance: refusals counted."""

    def source() -> Iterator[StateSample]:
        current = state()
        lockouts = _number(current.get("login_lockouts"))
        if lockouts is not None:
            yield StateSample(sc.METRIC_LOGIN_LOCKOUTS, lockouts)
        for reason, count in (current.get("feedback_rejected") or {}).items():
            yield StateSample(sc.METRIC_FEEDBACK_REJECTED, float(count), {sc.LABEL_REASON: reason})

    return source
