"""The built-in page's "now" section: current gauges from this sidecar's own Prometheus
registry (what the Grafana boards' live panels show, for this one process).

:func:`live_tables` collects the registry once (blocking CPU work: call it in a thread)
and returns small tables: detectors (kind, backend, up), upstream circuits, exporters
(queue, ClickHouse up and spill backlog) and a few single values. Only gauges already
on ``/metrics`` are read; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from sidecar import semconv as sc


@dataclass(frozen=True, slots=True)
class LiveTable:
    title: str
    columns: tuple[str, ...]
    rows: list[list[str]]


def _samples(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.1f}"


def live_tables(registry: CollectorRegistry) -> list[LiveTable]:
    """Tables of the current gauges in ``registry`` (a prometheus-client registry)."""
    got = _samples(registry)
    up = {labels.get(sc.LABEL_DETECTOR, ""): v for labels, v in got.get(sc.METRIC_DETECTOR_UP, [])}
    detectors = [[labels.get(sc.LABEL_DETECTOR, ""), labels.get(sc.LABEL_KIND, ""),
                  labels.get(sc.LABEL_BACKEND, ""),
                  "up" if up.get(labels.get(sc.LABEL_DETECTOR, "")) else "down"]
                 for labels, _ in got.get(sc.METRIC_DETECTOR_INFO, [])]
    circuits = [[labels.get(sc.LABEL_UPSTREAM, ""), labels.get(sc.LABEL_STATE, "")]
                for labels, v in got.get(sc.METRIC_UPSTREAM_CIRCUIT, []) if v == 1]
    queue = {labels.get(sc.LABEL_EXPORTER, ""): v
             for labels, v in got.get(sc.METRIC_EXPORTER_QUEUE, [])}
    ch_up = {labels.get(sc.LABEL_EXPORTER, ""): v
             for labels, v in got.get(sc.METRIC_CLICKHOUSE_UP, [])}
    backlog = {labels.get(sc.LABEL_EXPORTER, ""): v
               for labels, v in got.get(sc.METRIC_CLICKHOUSE_BACKLOG_ROWS, [])}
    exporters = [[name, _num(depth),
                  "" if name not in ch_up else ("up" if ch_up[name] else "down"),
                  "" if name not in backlog else _num(backlog[name])]
                 for name, depth in sorted(queue.items())]

    def single(metric: str) -> str:
        values = [v for _, v in got.get(metric, [])]
        return _num(sum(values)) if values else "-"

    values = [["requests in flight", single(sc.METRIC_IN_FLIGHT)],
              ["open hand-offs", single(sc.METRIC_HANDOFFS_OPEN)],
              ["oldest open hand-off (s)", single(sc.METRIC_HANDOFF_OLDEST_AGE)]]
    return [
        LiveTable("Now", ("gauge", "value"), values),
        LiveTable("Detectors", ("detector", "kind", "backend", "state"), sorted(detectors)),
        LiveTable("Upstream circuits", ("upstream", "state"), sorted(circuits)),
        LiveTable("Exporters", ("exporter", "queue", "clickhouse", "spill backlog rows"),
                  exporters),
    ]
