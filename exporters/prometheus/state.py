"""Scrape-time metrics: small typed callables the application registers.

A *state source* is a function taking nothing and returning
:class:`StateSample` values; the exporter calls every source on each scrape (in the
thread that renders ``/metrics``), so a source must be cheap, must not block and
should not do I/O: read counters the component already keeps. A source that raises
is skipped for that scrape and counted in ``railwatch_metrics_source_errors_total``
(label ``source``); it never breaks the scrape.

Every sample names a metric declared in :data:`FAMILIES` (gauge or counter, help
text, label names, all names from :mod:`sidecar.semconv`); samples of undeclared
metrics are dropped and counted as source errors, so a typo cannot invent a series.
Counter samples carry the running total the component counts (the ``_total`` suffix
is added on exposition). Missing labels are exposed as ``""``, extra ones ignored;
when two samples carry the same labels the later one wins.

Ready-made sources for the sidecar's components are in
:mod:`exporters.prometheus.sources`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar import semconv as sc

logger = logging.getLogger(__name__)

_NO_LABELS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class StateSample:
    """One value of a declared scrape-time metric: ``StateSample(METRIC_IN_FLIGHT, 3)``."""

    metric: str  # a name in FAMILIES (sidecar.semconv.METRIC_*)
    value: float
    labels: Mapping[str, str] = field(default_factory=lambda: _NO_LABELS)


StateSource = Callable[[], Iterable[StateSample]]


@dataclass(frozen=True, slots=True)
class FamilySpec:
    kind: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...] = ()


_E = (sc.LABEL_EXPORTER,)
_DRIFT = (sc.LABEL_MODEL, sc.LABEL_ROUTE, sc.LABEL_METRIC, sc.LABEL_STATISTIC)
FAMILIES: Mapping[str, FamilySpec] = MappingProxyType({
    sc.METRIC_IN_FLIGHT: FamilySpec("gauge", "Requests the sidecar is serving now."),
    sc.METRIC_EXPORTER_QUEUE: FamilySpec("gauge", "Trace records waiting in an exporter's queue.", _E),
    sc.METRIC_EXPORTER_DROPPED: FamilySpec(
        "counter", "Trace records dropped because an exporter's queue was full.", _E),
    sc.METRIC_EXPORTER_FAILED: FamilySpec(
        "counter", "Trace records lost because an exporter could neither deliver nor keep "
        "them (for ClickHouse: the spill log was full or off).", _E),
    sc.METRIC_EXPORTER_EXPORTED: FamilySpec(
        "counter", "Trace records an exporter accepted.", _E),
    sc.METRIC_EXPORTER_UP: FamilySpec("gauge", "1 while an exporter's worker thread runs.", _E),
    sc.METRIC_CLICKHOUSE_UP: FamilySpec("gauge", "1 while ClickHouse accepts inserts.", _E),
    sc.METRIC_CLICKHOUSE_BACKLOG_ROWS: FamilySpec(
        "gauge", "Rows in the spill log waiting to be replayed into ClickHouse.", _E),
    sc.METRIC_CLICKHOUSE_BACKLOG_BYTES: FamilySpec(
        "gauge", "Bytes in the spill log waiting to be replayed into ClickHouse.", _E),
    sc.METRIC_CLICKHOUSE_INSERTED_ROWS: FamilySpec("counter", "Rows inserted into ClickHouse.", _E),
    sc.METRIC_CLICKHOUSE_INSERT_FAILURES: FamilySpec("counter", "Failed ClickHouse inserts.", _E),
    sc.METRIC_CLICKHOUSE_SPILLED_ROWS: FamilySpec(
        "counter", "Rows written to the spill log during a ClickHouse outage.", _E),
    sc.METRIC_CLICKHOUSE_REPLAYED_ROWS: FamilySpec(
        "counter", "Rows replayed from the spill log into ClickHouse.", _E),
    sc.METRIC_CLICKHOUSE_DROPPED_ROWS: FamilySpec(
        "counter", "Rows lost (spill off or full while ClickHouse was down).", _E),
    sc.METRIC_CLICKHOUSE_REJECTED_ROWS: FamilySpec(
        "counter", "Rows ClickHouse rejected as invalid.", _E),
    sc.METRIC_JOURNAL_BACKLOG: FamilySpec(
        "gauge", "Trace records in the crash journal that not every exporter finished yet."),
    sc.METRIC_JOURNAL_UNJOURNALED: FamilySpec(
        "counter", "Trace records the crash journal refused (full or failing): not crash-safe."),
    sc.METRIC_INTAKE_DROPPED: FamilySpec(
        "counter", "Trace records dropped because the record intake's queue was full."),
    sc.METRIC_INTAKE_FINISH_ERRORS: FamilySpec(
        "counter", "Trace records whose masking failed; they were stored without text."),
    sc.METRIC_DETECTOR_INFO: FamilySpec(
        "gauge", "1 per configured detector, with its kind and backend.",
        (sc.LABEL_DETECTOR, sc.LABEL_KIND, sc.LABEL_BACKEND)),
    sc.METRIC_DETECTOR_UP: FamilySpec(
        "gauge", "1 when a detector started and is serving.", (sc.LABEL_DETECTOR,)),
    sc.METRIC_DETECTOR_QUEUE: FamilySpec(
        "gauge", "Texts waiting for a detector's next batch.", (sc.LABEL_DETECTOR,)),
    sc.METRIC_UPSTREAM_UP: FamilySpec(
        "gauge", "1 when the upstream answered its last probe.", (sc.LABEL_UPSTREAM,)),
    sc.METRIC_UPSTREAM_CIRCUIT: FamilySpec(
        "gauge", "1 for each upstream's circuit breaker state now, 0 for its other states.",
        (sc.LABEL_UPSTREAM, sc.LABEL_STATE)),
    sc.METRIC_UPSTREAM_CIRCUIT_FAILURES: FamilySpec(
        "gauge", "Consecutive failures counted by an upstream's circuit breaker.",
        (sc.LABEL_UPSTREAM,)),
    sc.METRIC_UPSTREAM_CIRCUIT_OPENED: FamilySpec(
        "counter", "Times an upstream's circuit breaker opened.", (sc.LABEL_UPSTREAM,)),
    sc.METRIC_UPSTREAM_CIRCUIT_REJECTED: FamilySpec(
        "counter", "Calls an open circuit breaker refused.", (sc.LABEL_UPSTREAM,)),
    # abuse (issue 9): rate limits, review login lockouts, refused feedback
    sc.METRIC_RATE_LIMITED: FamilySpec(
        "counter", "Requests refused with 429 by a rate limit, by dimension.", (sc.LABEL_DIMENSION,)),
    sc.METRIC_RATE_LIMIT_KEYS: FamilySpec("gauge", "Rate-limit buckets tracked (bounded)."),
    sc.METRIC_LOGIN_LOCKOUTS: FamilySpec(
        "counter", "Review sign-ins refused while an address or user was locked out."),
    sc.METRIC_FEEDBACK_REJECTED: FamilySpec(
        "counter", "Feedback refused, by reason (unknown_trace, rate_limited).", (sc.LABEL_REASON,)),
    **{  # --- drift (issue 12)
        sc.METRIC_DRIFT_STATISTIC: FamilySpec(
            "gauge", "Effect size of the latest drift window test (KS D, JS distance, MMD^2).",
            _DRIFT),
        sc.METRIC_DRIFT_P_VALUE: FamilySpec(
            "gauge", "p-value of the latest drift window test.", _DRIFT),
        sc.METRIC_DRIFT_DRIFTED: FamilySpec(
            "gauge", "1 when the latest drift window test crossed its threshold.", _DRIFT),
        sc.METRIC_DRIFT_EVENTS: FamilySpec(
            "counter", "Drift events seen by this sidecar.", (sc.LABEL_KIND,)),
        sc.METRIC_DRIFT_SAMPLED: FamilySpec(
            "counter", "Requests whose drift features this sidecar stored."),
        sc.METRIC_DRIFT_EMBEDDED: FamilySpec(
            "counter", "Prompts this sidecar embedded for drift."),
        sc.METRIC_DRIFT_SKIPPED: FamilySpec(
            "counter", "Drift rows or embeddings skipped (budget, store failure).",
            (sc.LABEL_REASON,)),
        sc.METRIC_DRIFT_RUNS: FamilySpec(
            "counter", "Drift window runs by outcome (ok, error, no_lease).", (sc.LABEL_OUTCOME,)),
        sc.METRIC_DRIFT_LAST_RUN: FamilySpec(
            "gauge", "Unix time of this sidecar's last successful drift run."),
        sc.METRIC_DRIFT_CANARY_SIMILARITY: FamilySpec(
            "gauge", "Cosine similarity of the latest canary answer to its baseline.",
            (sc.LABEL_UPSTREAM, sc.LABEL_PROMPT)),
        sc.METRIC_DRIFT_CANARY_PROBES: FamilySpec(
            "counter", "Canary probes by upstream and outcome (same, changed, error).",
            (sc.LABEL_UPSTREAM, sc.LABEL_OUTCOME)),
    },
})


class StateCollector(Collector):
    """A prometheus-client collector that turns state sources into metric families."""

    def __init__(self, families: Mapping[str, FamilySpec] = FAMILIES) -> None:
        self.families = families
        self._sources: dict[str, StateSource] = {}
        self._errors: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str, fn: StateSource) -> None:
        with self._lock:
            self._sources[name] = fn
            self._errors.setdefault(name, 0)

    def remove(self, name: str) -> None:
        with self._lock:
            self._sources.pop(name, None)

    @property
    def errors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._errors)

    def describe(self) -> Iterable[Metric]:
        for name, spec in self.families.items():
            yield self._family(name, spec)
        yield self._errors_family()

    def _family(self, name: str, spec: FamilySpec) -> Metric:
        if spec.kind == "counter":
            return CounterMetricFamily(name, spec.help, labels=spec.labels)
        return GaugeMetricFamily(name, spec.help, labels=spec.labels)

    def _errors_family(self) -> CounterMetricFamily:
        return CounterMetricFamily(
            sc.METRIC_STATE_SOURCE_ERRORS,
            "State sources that raised or returned undeclared metrics during a scrape.",
            labels=(sc.LABEL_SOURCE,),
        )

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            sources = list(self._sources.items())
        values: dict[str, dict[tuple[str, ...], float]] = {}
        for source, fn in sources:
            try:
                got = []
                for sample in fn():
                    spec = self.families.get(sample.metric)
                    if spec is None:
                        raise KeyError(sample.metric)
                    key = tuple(str(sample.labels.get(label, "")) for label in spec.labels)
                    got.append((sample.metric, key, float(sample.value)))
                for metric, key, value in got:  # all or nothing per source
                    values.setdefault(metric, {})[key] = value
            except Exception as exc:  # noqa: BLE001 - a broken source must not break /metrics
                with self._lock:
                    self._errors[source] = self._errors.get(source, 0) + 1
                logger.warning("metrics state source %s failed: %s", source, type(exc).__name__)
        for name, series in values.items():
            family = self._family(name, self.families[name])
            for key, value in series.items():
                family.add_metric(list(key), value)  # type: ignore[attr-defined]
            yield family
        errors = self._errors_family()
        for source, count in self.errors.items():
            errors.add_metric([source], count)
        yield errors
