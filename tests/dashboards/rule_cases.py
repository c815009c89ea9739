"""promtool unit tests of every alert, firing and quiet, as data.

Each :class:`Case` gives input series (promtool's expanding notation), an evaluation
time and the labels of the alert it must raise, or ``None`` when it must stay quiet.
:func:`test_file` turns them into a ``promtool test rules`` file; the expected
annotations are the rule's own with ``{{ $labels.x }}`` filled in, so a changed
summary or description is caught too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from sidecar.dashboard.rules import Thresholds, rule_groups

J = 'job="rw"'


@dataclass(frozen=True)
class Case:
    alert: str
    series: dict[str, str]
    eval_time: str
    fires: dict[str, str] | None  # labels besides severity; None: must not fire
    interval: str = "1m"


def _req(bad: int, good: int = 100, n: int = 240) -> dict[str, str]:
    return {f'railwatch_requests_total{{{J},status="500"}}': f"0+{bad}x{n}",
            f'railwatch_requests_total{{{J},status="200"}}': f"0+{good}x{n}"}


def _lat(fast: int, n: int = 240) -> dict[str, str]:
    return {f'railwatch_request_duration_seconds_bucket{{{J},le="2.5"}}': f"0+{fast}x{n}",
            f"railwatch_request_duration_seconds_count{{{J}}}": f"0+100x{n}"}


def _hist(metric: str, low: str, high: str, extra: str = "", today_high: bool = True
          ) -> dict[str, str]:
    """A day of observations under ``low``, then two hours under ``high`` (or ``low``)."""
    day, rest = "0+10x288", "2880+10x24"
    return {f"{metric}_bucket{{{J},{extra}le=\"{low}\"}}": f"{day} {'2880+0x24' if today_high else rest}",
            f"{metric}_bucket{{{J},{extra}le=\"{high}\"}}": f"{day} {rest}",
            f"{metric}_bucket{{{J},{extra}le=\"+Inf\"}}": f"{day} {rest}"}


def _overhead(le: str) -> dict[str, str]:
    m = "railwatch_overhead_seconds_bucket"
    other = "0.1" if le == "0.05" else "0.05"
    return {f'{m}{{{J},route="chat",le="{le}"}}': "0+10x30",
            f'{m}{{{J},route="chat",le="{other}"}}': "0+10x30" if other == "0.1" else "0+0x30",
            f'{m}{{{J},route="chat",le="+Inf"}}': "0+10x30"}


TRIG = 'railwatch_guardrail_triggers_total{job="rw",detector="pii",label="EMAIL_ADDRESS",stage="input",action="mask"}'
INFO = 'railwatch_detector_info{job="rw",detector="toxicity",kind="toxicity",backend="%s"}'
E = {"exporter": "clickhouse"}
DRIFTED = ('railwatch_drift_drifted{job="rw",model="m",route="chat",metric="output_chars",'
           'statistic="ks"}')
EVENTS = 'railwatch_drift_events_total{job="rw",kind="%s"}'

CASES: tuple[Case, ...] = (
    Case("RailwatchErrorBudgetBurnFast", _req(10), "70m", {}),
    Case("RailwatchErrorBudgetBurnFast", _req(2), "180m", None),  # slow burn only
    Case("RailwatchErrorBudgetBurnFast", _req(0), "70m", None),
    Case("RailwatchErrorBudgetBurnSlow", _req(2), "180m", {}),
    Case("RailwatchErrorBudgetBurnSlow", _req(0), "180m", None),
    Case("RailwatchLatencyBudgetBurnFast", _lat(80), "70m", {}),
    Case("RailwatchLatencyBudgetBurnFast", _lat(96), "180m", None),
    Case("RailwatchLatencyBudgetBurnSlow", _lat(96), "180m", {}),
    Case("RailwatchLatencyBudgetBurnSlow", _lat(100), "180m", None),
    Case("RailwatchOverheadHigh", _overhead("0.1"), "25m", {}),
    Case("RailwatchOverheadHigh", _overhead("0.05"), "25m", None),
    Case("RailwatchTTFTRegression",
         _hist("railwatch_time_to_first_token_seconds", "0.5", "2.5", 'model="m",'),
         "1500m", {"model": "m"}, "5m"),
    Case("RailwatchTTFTRegression",
         _hist("railwatch_time_to_first_token_seconds", "0.5", "2.5", 'model="m",', False),
         "1500m", None, "5m"),
    Case("RailwatchTPOTRegression",
         _hist("railwatch_time_per_output_token_seconds", "0.05", "0.25", 'model="m",'),
         "1500m", {"model": "m"}, "5m"),
    Case("RailwatchTPOTRegression",
         _hist("railwatch_time_per_output_token_seconds", "0.05", "0.25", 'model="m",', False),
         "1500m", None, "5m"),
    Case("RailwatchGuardrailTriggerSpike", {TRIG: "0+1x150 150+60x30"}, "180m",
         {"detector": "pii"}),
    Case("RailwatchGuardrailTriggerSpike", {TRIG: "0+1x180"}, "180m", None),
    Case("RailwatchBlockRateHigh", {
        f'railwatch_requests_total{{{J},decision="block"}}': "0+30x30",
        f'railwatch_requests_total{{{J},decision="pass"}}': "0+70x30"}, "25m", {}),
    Case("RailwatchBlockRateHigh", {
        f'railwatch_requests_total{{{J},decision="block"}}': "0+10x30",
        f'railwatch_requests_total{{{J},decision="pass"}}': "0+90x30"}, "25m", None),
    Case("RailwatchHandoffBacklog", {f"railwatch_handoffs_open{{{J}}}": "25x30"}, "20m", {}),
    Case("RailwatchHandoffBacklog", {f"railwatch_handoffs_open{{{J}}}": "5x30"}, "20m", None),
    Case("RailwatchHandoffStale",
         {f"railwatch_handoff_oldest_open_age_seconds{{{J}}}": "4000x10"}, "6m", {}),
    Case("RailwatchHandoffStale",
         {f"railwatch_handoff_oldest_open_age_seconds{{{J}}}": "100x10"}, "6m", None),
    Case("RailwatchExporterBacklog",
         {f'railwatch_exporter_queue_depth{{{J},exporter="clickhouse"}}': "6000x20"}, "15m", E),
    Case("RailwatchExporterBacklog",
         {f'railwatch_exporter_queue_depth{{{J},exporter="clickhouse"}}': "10x20"}, "15m", None),
    Case("RailwatchClickHouseSpillBacklog",
         {f'railwatch_clickhouse_backlog_rows{{{J},exporter="clickhouse"}}': "200000x20"},
         "15m", E),
    Case("RailwatchClickHouseSpillBacklog",
         {f'railwatch_clickhouse_backlog_rows{{{J},exporter="clickhouse"}}': "0x20"}, "15m", None),
    Case("RailwatchClickHouseSpilling",
         {f'railwatch_clickhouse_spilled_rows_total{{{J},exporter="clickhouse"}}': "0+100x20"},
         "10m", E),
    Case("RailwatchClickHouseSpilling",
         {f'railwatch_clickhouse_spilled_rows_total{{{J},exporter="clickhouse"}}': "0x20"},
         "10m", None),
    Case("RailwatchTraceRecordsDropped",
         {f'railwatch_exporter_dropped_records_total{{{J},exporter="jsonl"}}': "0+1x20"},
         "10m", {}),
    Case("RailwatchTraceRecordsDropped",
         {f'railwatch_exporter_dropped_records_total{{{J},exporter="jsonl"}}': "0x20",
          f'railwatch_clickhouse_dropped_rows_total{{{J},exporter="clickhouse"}}': "0x20"},
         "10m", None),
    Case("RailwatchClickHouseDown",
         {f'railwatch_clickhouse_up{{{J},exporter="clickhouse"}}': "0x10"}, "6m", E),
    Case("RailwatchClickHouseDown",
         {f'railwatch_clickhouse_up{{{J},exporter="clickhouse"}}': "1x10"}, "6m", None),
    Case("RailwatchUpstreamCircuitOpen", {
        f'railwatch_upstream_circuit_state{{{J},upstream="primary",state="open"}}': "1x5"},
         "3m", {"upstream": "primary"}),
    Case("RailwatchUpstreamCircuitOpen", {
        f'railwatch_upstream_circuit_state{{{J},upstream="primary",state="open"}}': "0x5"},
         "3m", None),
    Case("RailwatchDetectorDown",
         {f'railwatch_detector_up{{{J},detector="toxicity"}}': "0x10"}, "6m",
         {"detector": "toxicity"}),
    Case("RailwatchDetectorDown",
         {f'railwatch_detector_up{{{J},detector="toxicity"}}': "1x10"}, "6m", None),
    Case("RailwatchDetectorBackendDegraded", {INFO % "profanity": "1x20"}, "16m",
         {"detector": "toxicity", "backend": "profanity"}),
    Case("RailwatchDetectorBackendDegraded", {INFO % "detoxify": "1x20"}, "16m", None),
    Case("RailwatchDetectorErrors", {
        f'railwatch_detector_errors_total{{{J},detector="toxicity",error="timeout"}}': "0+12x20"},
         "20m", {"detector": "toxicity"}),
    Case("RailwatchDetectorErrors", {
        f'railwatch_detector_errors_total{{{J},detector="toxicity",error="timeout"}}': "0+1x20"},
         "20m", None),
    Case("RailwatchDriftDetected", {DRIFTED: "1x10"}, "5m",
         {"model": "m", "route": "chat", "metric": "output_chars", "statistic": "ks"}),
    Case("RailwatchDriftDetected", {DRIFTED: "0x10"}, "5m", None),
    Case("RailwatchModelChanged", {EVENTS % "fingerprint_changed": "0 0 0 1 1 1 1 1 1 1"}, "6m",
         {"kind": "fingerprint_changed"}),
    Case("RailwatchModelChanged", {EVENTS % "fingerprint_changed": "0x10",
                                   EVENTS % "system_prompt_new": "0+1x10"}, "6m", None),
    Case("RailwatchCanaryChanged", {EVENTS % "canary_changed": "0 0 1 1 1 1 1 1"}, "5m", {}),
    Case("RailwatchCanaryChanged", {EVENTS % "canary_changed": "2x8"}, "5m", None),
    Case("RailwatchDriftJobFailing",
         {f'railwatch_drift_runs_total{{{J},outcome="error"}}': "0 0 1 1 1 1"}, "4m", {}),
    Case("RailwatchDriftJobFailing",
         {f'railwatch_drift_runs_total{{{J},outcome="ok"}}': "0+1x6",
          f'railwatch_drift_runs_total{{{J},outcome="error"}}': "0x6"}, "4m", None),
)


INTERVALS = ("1m", "5m")


def _fill(text: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)


def promtool_tests(rule_file: str, t: Thresholds | None = None, interval: str = "1m") -> str:
    """A ``promtool test rules`` file over ``rule_file`` for the cases sampled every
    ``interval`` (also the evaluation interval: day-long cases evaluate every 5 m, which
    keeps promtool's run short)."""
    alerts = {r["alert"]: r for g in rule_groups(t) for r in g["rules"] if "alert" in r}
    tests: list[dict[str, Any]] = []
    for case in (c for c in CASES if c.interval == interval):
        rule = alerts[case.alert]
        expected: list[dict[str, Any]] = []
        if case.fires is not None:
            labels = {"job": "rw", **case.fires}
            expected.append({
                "exp_labels": {**labels, **rule["labels"]},
                "exp_annotations": {k: _fill(v, labels) for k, v in rule["annotations"].items()},
            })
        tests.append({
            "name": f"{case.alert} {'fires' if case.fires is not None else 'stays quiet'}",
            "interval": case.interval,
            "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
            "alert_rule_test": [{"eval_time": case.eval_time, "alertname": case.alert,
                                 "exp_alerts": expected}],
        })
    doc = {"rule_files": [rule_file], "evaluation_interval": interval, "tests": tests}
    return ("# Generated from tests/dashboards/rule_cases.py (RAILWATCH_UPDATE_RULE_TESTS=1).\n"
            + yaml.safe_dump(doc, sort_keys=False, width=120))
