"""Ready-made state sources for the sidecar's components.

Each function wraps a component's existing ``state()`` callable (the dicts
``/readyz`` already serves) into a :data:`~exporters.prometheus.state.StateSource`.
The application registers them once at start-up, for example::

    prom.add_state_source("exports", export_pipeline_source(runtime.exports.snapshots))
    prom.add_state_source("clickhouse", clickhouse_source(clickhouse_exporter.snapshot))
    prom.add_state_source("proxy", proxy_source(runtime.proxy.state))
    prom.add_state_source("detectors", detector_runner_source(runtime.guard.runner.state))
    prom.add_state_source("upstreams", upstreams_source(runtime.upstreams.state))

The export pipeline and ClickHouse sources read typed snapshots
(:class:`~exporters.batch.ProcessorSnapshot`,
:class:`~exporters.clickhouse.exporter.ClickHouseSnapshot`): a renamed field fails
type checking and the scrape (counted as a source error), never silently drops a
series. The other components' dicts skip missing keys. Wrapped callables are called
on every scrape; they must be cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from exporters.prometheus.state import StateSample, StateSource
from exporters.batch import ProcessorSnapshot
from sidecar import semconv as sc

if TYPE_CHECKING:
    from exporters.clickhouse.exporter import ClickHouseSnapshot
    from exporters.journal import RecordIntake

StateFn = Callable[[], Mapping[str, Any]]

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


def export_pipeline_source(snapshots: Callable[[], Sequence[ProcessorSnapshot]]) -> StateSource:
    """From ``ExportPipeline.snapshots()``: queue depth, dropped, failed, exported, up."""

    def source() -> Iterator[StateSample]:
        for snap in snapshots():
            labels = {sc.LABEL_EXPORTER: snap.name}
            yield StateSample(sc.METRIC_EXPORTER_QUEUE, snap.queue_depth, labels)
            yield StateSample(sc.METRIC_EXPORTER_DROPPED, snap.dropped, labels)
            yield StateSample(sc.METRIC_EXPORTER_FAILED, snap.failed, labels)
            yield StateSample(sc.METRIC_EXPORTER_EXPORTED, snap.exported, labels)
            yield StateSample(sc.METRIC_EXPORTER_UP, 1.0 if snap.worker_alive else 0.0, labels)

    return source


def clickhouse_source(
    snapshot: Callable[[], ClickHouseSnapshot], exporter: str = "clickhouse"
) -> StateSource:
    """From ``ClickHouseExporter.snapshot()``: the ``railwatch_clickhouse_*`` metrics."""

    def source() -> Iterator[StateSample]:
        snap = snapshot()
        labels = {sc.LABEL_EXPORTER: exporter}
        yield StateSample(sc.METRIC_CLICKHOUSE_UP, 1.0 if snap.ready else 0.0, labels)
        for metric, value in (
            (sc.METRIC_CLICKHOUSE_BACKLOG_ROWS, snap.backlog_rows),
            (sc.METRIC_CLICKHOUSE_BACKLOG_BYTES, snap.backlog_bytes),
            (sc.METRIC_CLICKHOUSE_INSERTED_ROWS, snap.inserted_rows),
            (sc.METRIC_CLICKHOUSE_INSERT_FAILURES, snap.insert_failures),
            (sc.METRIC_CLICKHOUSE_SPILLED_ROWS, snap.spilled_rows),
            (sc.METRIC_CLICKHOUSE_REPLAYED_ROWS, snap.replayed_rows),
            (sc.METRIC_CLICKHOUSE_DROPPED_ROWS, snap.dropped_rows),
            (sc.METRIC_CLICKHOUSE_REJECTED_ROWS, snap.rejected_rows),
        ):
            yield StateSample(metric, value, labels)

    return source


def intake_source(intake: RecordIntake) -> StateSource:
    """From the record intake: journal backlog, refused records, masking failures."""

    def source() -> Iterator[StateSample]:
        stats = intake.stats
        yield StateSample(sc.METRIC_JOURNAL_BACKLOG, intake.journal_backlog)
        yield StateSample(sc.METRIC_JOURNAL_UNJOURNALED, stats.unjournaled)
        yield StateSample(sc.METRIC_INTAKE_FINISH_ERRORS, stats.finish_errors)
        yield StateSample(sc.METRIC_INTAKE_DROPPED, stats.dropped)

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
