"""Prometheus recording and alerting rules, with every threshold a parameter.

:func:`rule_groups` renders the groups for a :class:`Thresholds`; :func:`rules_file`
is the plain rule file (``promtool check rules``), :func:`prometheus_rule` the same
groups as a Prometheus Operator ``PrometheusRule``. Every alert carries ``severity``
(``critical`` pages, ``warning`` tickets) and the annotations ``summary``,
``description`` and ``runbook_url`` (``<runbook_base>#<alertname lowercased>``).

SLO alerts follow the multi-window, multi-burn-rate pattern of the SRE workbook:
page when the 1 h and 5 m (or 6 h and 30 m) burn rates exceed 14.4x (6x) the error
budget, ticket when 1 d and 2 h (3 d and 6 h) exceed 3x (1x). Availability counts a
5xx as bad; latency counts a request slower than ``latency_slo_seconds`` (a bucket
bound of ``railwatch_request_duration_seconds``) as bad. Pure functions.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from exporters.prometheus.exporter import LATENCY_BUCKETS
from sidecar import semconv as sc

WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# (severity, long window, short window, burn-rate factor)
BURNS = (("critical", "1h", "5m", 14.4), ("critical", "6h", "30m", 6.0),
         ("warning", "1d", "2h", 3.0), ("warning", "3d", "6h", 1.0))


class Thresholds(BaseModel):
    """Alert thresholds (units in the names: ``_s`` seconds, ``_ratio`` 0..1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    availability_slo: float = Field(default=0.995, gt=0, lt=1)
    latency_slo: float = Field(default=0.99, gt=0, lt=1)
    latency_slo_seconds: float = 2.5
    overhead_p99_s: float = Field(default=0.05, gt=0)
    regression_factor: float = Field(default=1.5, gt=1)  # p90 now vs the same 30 m a day ago
    ttft_floor_s: float = Field(default=0.25, ge=0)  # no TTFT regression alert below this p90
    tpot_floor_s: float = Field(default=0.02, ge=0)
    trigger_spike_factor: float = Field(default=3.0, gt=1)  # 10 m rate vs 1 d rate
    trigger_spike_min_per_s: float = Field(default=0.05, ge=0)
    block_ratio: float = Field(default=0.2, gt=0, le=1)
    handoff_backlog: int = Field(default=20, ge=1)
    handoff_age_s: float = Field(default=3600, gt=0)
    exporter_queue_records: int = Field(default=5000, ge=1)
    clickhouse_backlog_rows: int = Field(default=100_000, ge=1)
    detector_errors_per_s: float = Field(default=0.1, gt=0)
    degraded_backends: tuple[str, ...] = ("profanity",)  # a model detector on its fallback
    drift_event_window: str = Field(default="30m", pattern=r"^[0-9]+[smhd]$")
    runbook_base: str = "dashboards/RUNBOOK.md"

    @field_validator("latency_slo_seconds")
    @classmethod
    def _a_bucket(cls, value: float) -> float:
        if value not in LATENCY_BUCKETS:
            raise ValueError(f"must be a bucket bound of the request duration histogram "
                             f"({', '.join(str(b) for b in LATENCY_BUCKETS)})")
        return value


REQ = f"{sc.METRIC_REQUESTS}_total"
DUR = sc.METRIC_REQUEST_DURATION


def _recording(t: Thresholds) -> list[dict[str, Any]]:
    le = str(float(t.latency_slo_seconds))
    rules: list[dict[str, Any]] = []
    for w in WINDOWS:
        rules += [
            {"record": f"railwatch:request_errors:ratio_rate{w}",
             "expr": f'sum by (job) (rate({REQ}{{status=~"5.."}}[{w}])) / '
                     f"sum by (job) (rate({REQ}[{w}]))"},
            {"record": f"railwatch:request_slow:ratio_rate{w}",
             "expr": f'1 - sum by (job) (rate({DUR}_bucket{{le="{le}"}}[{w}])) / '
                     f"sum by (job) (rate({DUR}_count[{w}]))"},
        ]
    return rules


def _q(q: float, metric: str, window: str, by: str = "job") -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket[{window}])))"


def _alert(t: Thresholds, name: str, expr: str, severity: str, summary: str,
           description: str, for_: str = "0m") -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": for_,
            "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description,
                            "runbook_url": f"{t.runbook_base}#{name.lower()}"}}


def _burn_alerts(t: Thresholds, kind: str, slo: float, what: str) -> list[dict[str, Any]]:
    budget = round(1 - slo, 6)
    out = []
    for severity, speed in (("critical", "Fast"), ("warning", "Slow")):
        pairs = [(lw, sw, f) for s, lw, sw, f in BURNS if s == severity]
        expr = " or ".join(
            f"(railwatch:{kind}:ratio_rate{lw} > ({f} * {budget}) and "
            f"railwatch:{kind}:ratio_rate{sw} > ({f} * {budget}))" for lw, sw, f in pairs)
        name = f"Railwatch{'Error' if kind == 'request_errors' else 'Latency'}BudgetBurn{speed}"
        windows = ", ".join(f"{lw}/{sw} above {f}x" for lw, sw, f in pairs)
        out.append(_alert(
            t, name, expr, severity,
            f"{what} SLO error budget burning {'fast' if speed == 'Fast' else 'steadily'} "
            "({{ $labels.job }})",
            f"The {what} SLO ({slo:.2%}) of {{{{ $labels.job }}}} burns its budget at "
            f"{windows} the sustainable rate.",
            "2m" if speed == "Fast" else "15m"))
    return out


def _alerts(t: Thresholds) -> list[dict[str, Any]]:
    trig = f"{sc.METRIC_GUARDRAIL_TRIGGERS}_total"
    backends = "|".join(t.degraded_backends) or "^$"
    rules = _burn_alerts(t, "request_errors", t.availability_slo, "Availability")
    rules += _burn_alerts(t, "request_slow", t.latency_slo,
                          f"Latency (under {t.latency_slo_seconds}s)")
    rules += [
        _alert(t, "RailwatchOverheadHigh",
               f"{_q(0.99, sc.METRIC_OVERHEAD, '5m')} > {t.overhead_p99_s}", "warning",
               f"Sidecar overhead p99 above {t.overhead_p99_s} s ({{{{ $labels.job }}}})",
               "The time railwatch itself adds to requests (detectors, policy, recording) "
               f"has a p99 above {t.overhead_p99_s} s for 10 minutes.", "10m"),
    ]
    for name, metric, floor, what in (
            ("RailwatchTTFTRegression", sc.METRIC_TTFT, t.ttft_floor_s, "time to first token"),
            ("RailwatchTPOTRegression", sc.METRIC_TPOT, t.tpot_floor_s, "time per output token")):
        now = _q(0.9, metric, "30m", "job, model")
        before = now.replace("[30m]", "[30m] offset 1d")
        rules.append(_alert(
            t, name, f"({now} > {t.regression_factor} * {before}) and ({now} > {floor})",
            "warning", f"{what} p90 regressed for {{{{ $labels.model }}}}",
            f"The p90 {what} of model {{{{ $labels.model }}}} is more than "
            f"{t.regression_factor}x what it was at this time yesterday, and above {floor} s.",
            "15m"))
    rules += [
        _alert(t, "RailwatchGuardrailTriggerSpike",
               f"(sum by (job, detector) (rate({trig}[10m])) > {t.trigger_spike_factor} * "
               f"sum by (job, detector) (rate({trig}[1d]))) and "
               f"(sum by (job, detector) (rate({trig}[10m])) > {t.trigger_spike_min_per_s})",
               "warning", "Detector {{ $labels.detector }} triggers far more than usual",
               f"Guardrail triggers of {{{{ $labels.detector }}}} over 10 minutes run above "
               f"{t.trigger_spike_factor}x their one-day rate: an attack, a prompt change or "
               "a model change.", "10m"),
        _alert(t, "RailwatchBlockRateHigh",
               f'sum by (job) (rate({REQ}{{decision="block"}}[10m])) / '
               f"sum by (job) (rate({REQ}[10m])) > {t.block_ratio}", "warning",
               f"More than {t.block_ratio:.0%} of requests are blocked",
               f"Over 10 minutes more than {t.block_ratio:.0%} of the requests of "
               "{{ $labels.job }} were blocked by the policy.", "10m"),
        _alert(t, "RailwatchHandoffBacklog",
               f"max by (job) ({sc.METRIC_HANDOFFS_OPEN}) > {t.handoff_backlog}", "warning",
               f"Hand-off queue above {t.handoff_backlog} open items",
               f"More than {t.handoff_backlog} hand-offs wait for a reviewer at /review.",
               "15m"),
        _alert(t, "RailwatchHandoffStale",
               f"max by (job) ({sc.METRIC_HANDOFF_OLDEST_AGE}) > {t.handoff_age_s}", "warning",
               f"A hand-off has waited over {t.handoff_age_s:.0f} s",
               f"The oldest open hand-off has waited more than {t.handoff_age_s:.0f} s for a "
               "reviewer.", "5m"),
        _alert(t, "RailwatchExporterBacklog",
               f"max by (job, exporter) ({sc.METRIC_EXPORTER_QUEUE}) > {t.exporter_queue_records}",
               "warning", "Exporter {{ $labels.exporter }} falls behind",
               f"More than {t.exporter_queue_records} trace records wait in the queue of "
               "exporter {{ $labels.exporter }}; when it fills, records are dropped.", "10m"),
        _alert(t, "RailwatchClickHouseSpillBacklog",
               f"max by (job, exporter) ({sc.METRIC_CLICKHOUSE_BACKLOG_ROWS}) > "
               f"{t.clickhouse_backlog_rows}", "warning",
               "ClickHouse spill log holds a large backlog",
               f"More than {t.clickhouse_backlog_rows} rows wait in the spill log of "
               "{{ $labels.exporter }} to be replayed into ClickHouse.", "10m"),
        _alert(t, "RailwatchClickHouseSpilling",
               f"sum by (job, exporter) (increase({sc.METRIC_CLICKHOUSE_SPILLED_ROWS}_total[10m])) > 0",
               "warning", "Trace rows are spilling to disk",
               "ClickHouse refused inserts of {{ $labels.exporter }} in the last 10 minutes; "
               "rows go to the spill log and are replayed when it recovers.", "5m"),
        _alert(t, "RailwatchTraceRecordsDropped",
               f"(sum by (job) (increase({sc.METRIC_EXPORTER_DROPPED}_total[10m])) > 0) or "
               f"(sum by (job) (increase({sc.METRIC_CLICKHOUSE_DROPPED_ROWS}_total[10m])) > 0)",
               "critical", "Trace records are being lost",
               "Exporter queues overflowed or the ClickHouse spill log was off or full: "
               "trace records of {{ $labels.job }} were dropped in the last 10 minutes."),
        _alert(t, "RailwatchClickHouseDown",
               f"max by (job, exporter) ({sc.METRIC_CLICKHOUSE_UP}) == 0", "critical",
               "ClickHouse does not accept inserts",
               "Exporter {{ $labels.exporter }} of {{ $labels.job }} cannot insert into "
               "ClickHouse; rows spill to disk until it returns.", "5m"),
        _alert(t, "RailwatchUpstreamCircuitOpen",
               f'max by (job, upstream) ({sc.METRIC_UPSTREAM_CIRCUIT}{{state="open"}}) == 1',
               "critical", "Circuit to upstream {{ $labels.upstream }} is open",
               "The circuit breaker of upstream {{ $labels.upstream }} is open: requests fail "
               "fast or go to a fallback.", "1m"),
        _alert(t, "RailwatchDetectorDown",
               f"min by (job, detector) ({sc.METRIC_DETECTOR_UP}) == 0", "critical",
               "Detector {{ $labels.detector }} is not serving",
               "Detector {{ $labels.detector }} did not start or has stopped; its rules fail "
               "open or closed as the policy says.", "5m"),
        _alert(t, "RailwatchDetectorBackendDegraded",
               f'max by (job, detector, backend) ({sc.METRIC_DETECTOR_INFO}{{backend=~"{backends}"}}) == 1',
               "warning", "Detector {{ $labels.detector }} runs on its fallback backend",
               "Detector {{ $labels.detector }} runs on backend {{ $labels.backend }} (e.g. "
               "the toxicity model folder is missing): detection quality is lower.", "15m"),
        _alert(t, "RailwatchDetectorErrors",
               f"sum by (job, detector) (rate({sc.METRIC_DETECTOR_ERRORS}_total[10m])) > "
               f"{t.detector_errors_per_s}", "warning",
               "Detector {{ $labels.detector }} fails",
               f"Detector {{{{ $labels.detector }}}} errs or times out more than "
               f"{t.detector_errors_per_s} times per second.", "10m"),
    ]
    return rules + _drift_alerts(t)


def _drift_alerts(t: Thresholds) -> list[dict[str, Any]]:
    """Drift (sidecar/drift): a window statistic over its threshold, model or fingerprint
    changes and canary answers that moved (events counted by each sidecar)."""
    events = f"{sc.METRIC_DRIFT_EVENTS}_total"
    w = t.drift_event_window
    return [
        _alert(t, "RailwatchDriftDetected",
               f"max by (job, model, route, metric, statistic) ({sc.METRIC_DRIFT_DRIFTED}) == 1",
               "warning", "{{ $labels.metric }} drifted for model {{ $labels.model }}",
               "The {{ $labels.statistic }} test of {{ $labels.metric }} on route "
               "{{ $labels.route }} crossed its threshold in the last drift window."),
        _alert(t, "RailwatchModelChanged",
               f'sum by (job, kind) (increase({events}{{kind=~"'
               f'{sc.DRIFT_EVENT_MODEL}|{sc.DRIFT_EVENT_FINGERPRINT}"}}[{w}])) > 0',
               "warning", "The model behind the upstream changed ({{ $labels.kind }})",
               f"A new served model or system_fingerprint was seen in the last {w}: the "
               "upstream was redeployed or swapped."),
        _alert(t, "RailwatchCanaryChanged",
               f'sum by (job) (increase({events}{{kind="{sc.DRIFT_EVENT_CANARY}"}}[{w}])) > 0',
               "warning", "A canary answer moved away from its baseline",
               f"A fixed canary prompt got a different answer in the last {w} (temperature 0, "
               "fixed seed): the model behind the API changed silently."),
        _alert(t, "RailwatchDriftJobFailing",
               f'sum by (job) (increase({sc.METRIC_DRIFT_RUNS}_total{{outcome="error"}}[1h])) > 0',
               "warning", "The drift job fails",
               "A drift window job failed in the last hour; drift goes unmeasured until it "
               "runs again."),
    ]


def rule_groups(t: Thresholds | None = None) -> list[dict[str, Any]]:
    t = t or Thresholds()
    return [{"name": "railwatch.recording", "interval": "30s", "rules": _recording(t)},
            {"name": "railwatch.alerts", "rules": _alerts(t)}]


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=100, allow_unicode=True)


def rules_file(t: Thresholds | None = None) -> str:
    header = "# Generated by `railwatch dashboards render`; edit sidecar/dashboard/rules.py.\n"
    return header + _dump({"groups": rule_groups(t)})


def prometheus_rule(t: Thresholds | None = None, *, name: str = "railwatch",
                    labels: dict[str, str] | None = None) -> str:
    """The groups as a ``monitoring.coreos.com/v1`` ``PrometheusRule``."""
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": name, "labels": labels or {"app.kubernetes.io/name": "railwatch"}},
           "spec": {"groups": rule_groups(t)}}
    return "# Generated by `railwatch dashboards render`; edit sidecar/dashboard/rules.py.\n" + _dump(doc)


def alert_names(t: Thresholds | None = None) -> list[str]:
    return [r["alert"] for g in rule_groups(t) for r in g["rules"] if "alert" in r]
