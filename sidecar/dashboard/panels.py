"""Every dashboard panel, once: ClickHouse SQL for history and drill-down, PromQL for
live views. Grafana JSON (:mod:`.grafana`) and the built-in page (:mod:`.page`) are
both rendered from :data:`BOARDS`.

Contracts the renderers and tests rely on:

- a ``timeseries`` SQL panel returns the columns ``time, series, value`` (long
  format: one row per bucket and series);
- a ``table`` or ``stat`` SQL panel returns exactly its ``columns``, in order;
- PromQL uses ``$__rate_interval`` for rate windows and names only metrics the
  sidecar exposes (``railwatch_*`` from :mod:`sidecar.semconv`; the tests compare
  them with a live ``/metrics``).

Tables come from :mod:`exporters.clickhouse.migrations` (``traces``, ``findings``,
``traces_1m``, ``findings_1m``, ``detector_runs_1m``, ``feedback``, ``handoffs``).
Units are Grafana's unit ids (``ms``, ``s``, ``percentunit``, ``short``, ``currencyUSD``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sidecar import semconv as sc

Kind = Literal["timeseries", "table", "stat"]
TS_COLUMNS = ("time", "series", "value")


@dataclass(frozen=True, slots=True)
class SqlPanel:
    key: str
    title: str
    kind: Kind
    sql: str
    columns: tuple[str, ...] = TS_COLUMNS
    unit: str = "short"
    description: str = ""
    builtin: bool = True  # also drawn on the built-in /dashboard page


@dataclass(frozen=True, slots=True)
class PromPanel:
    key: str
    title: str
    kind: Kind
    targets: tuple[tuple[str, str], ...]  # (legend format, PromQL)
    unit: str = "short"
    description: str = ""


Panel = SqlPanel | PromPanel


@dataclass(frozen=True, slots=True)
class Board:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]


def _quantiles_sql(column: str) -> str:
    """p50/p90/p99 per bucket from a ``traces_1m`` t-digest state column."""
    return f"""SELECT time, series, value FROM (
    SELECT $__timeInterval(minute) AS time,
           quantilesTDigestMerge(0.5, 0.9, 0.99)({column}) AS q
    FROM {{db}}.traces_1m
    WHERE $__timeFilter(minute)
    GROUP BY time
)
ARRAY JOIN arrayMap(x -> ifNull(x, nan), q) AS value, ['p50', 'p90', 'p99'] AS series
WHERE NOT isNaN(value)
ORDER BY time, series"""


_R = "[$__rate_interval]"
REQ, DUR = f"{sc.METRIC_REQUESTS}_total", sc.METRIC_REQUEST_DURATION


def _hq(q: float, metric: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{_R})))"


OVERVIEW = Board("railwatch-overview", "railwatch / overview",
                 "Traffic, errors, latency, sidecar overhead, TTFT, TPOT, tokens and cost.", (
    PromPanel("live_rps", "Requests/s by route (live)", "timeseries",
              (("{{route}}", f"sum by (route) (rate({REQ}{_R}))"),), "reqps"),
    PromPanel("live_errors", "Server error ratio (live)", "timeseries",
              (("5xx", f'sum(rate({REQ}{{status=~"5.."}}{_R})) / sum(rate({REQ}{_R}))'),),
              "percentunit"),
    PromPanel("live_latency", "Request latency (live)", "timeseries",
              (("p50", _hq(0.5, DUR)), ("p99", _hq(0.99, DUR))), "s"),
    PromPanel("live_overhead", "Sidecar overhead (live)", "timeseries",
              (("p50", _hq(0.5, sc.METRIC_OVERHEAD)), ("p99", _hq(0.99, sc.METRIC_OVERHEAD))), "s"),
    PromPanel("live_ttft", "Time to first token by model (live)", "timeseries",
              (("p90 {{model}}", _hq(0.9, sc.METRIC_TTFT, "model")),), "s"),
    PromPanel("live_tpot", "Time per output token by model (live)", "timeseries",
              (("p90 {{model}}", _hq(0.9, sc.METRIC_TPOT, "model")),), "s"),
    PromPanel("live_tokens", "Tokens/s by model and type (live)", "timeseries",
              (("{{model}} {{type}}",
                f"sum by (model, type) (rate({sc.METRIC_TOKENS}_total{_R}))"),), "short"),
    PromPanel("live_in_flight", "Requests in flight", "stat",
              (("in flight", f"sum({sc.METRIC_IN_FLIGHT})"),), "short"),
    SqlPanel("requests", "Requests by route", "timeseries", """SELECT $__timeInterval(minute) AS time, route AS series, sum(requests) AS value
FROM {db}.traces_1m
WHERE $__timeFilter(minute)
GROUP BY time, series
ORDER BY time, series"""),
    SqlPanel("error_ratio", "Error ratio", "timeseries", """SELECT $__timeInterval(minute) AS time, 'errors' AS series, sum(errors) / sum(requests) AS value
FROM {db}.traces_1m
WHERE $__timeFilter(minute)
GROUP BY time
ORDER BY time""", unit="percentunit"),
    SqlPanel("latency", "Request latency (ms)", "timeseries", _quantiles_sql("total_ms_q"), unit="ms"),
    SqlPanel("overhead", "Sidecar overhead (ms)", "timeseries", _quantiles_sql("overhead_ms_q"),
             unit="ms"),
    SqlPanel("ttft", "Time to first token (ms)", "timeseries", _quantiles_sql("ttft_ms_q"), unit="ms"),
    SqlPanel("tpot", "Time per output token (ms)", "timeseries", _quantiles_sql("tpot_ms_q"),
             unit="ms"),
    SqlPanel("tokens_cost", "Tokens and cost by model and route", "table", """SELECT model, route, sum(requests) AS requests, sum(prompt_tokens) AS prompt_tokens,
       sum(completion_tokens) AS completion_tokens, round(sum(cost_usd), 6) AS cost_usd
FROM {db}.traces_1m
WHERE $__timeFilter(minute)
GROUP BY model, route
ORDER BY requests DESC
LIMIT 50""", ("model", "route", "requests", "prompt_tokens", "completion_tokens", "cost_usd")),
))

_TRIG = f"{sc.METRIC_GUARDRAIL_TRIGGERS}_total"
GUARDRAILS = Board("railwatch-guardrails", "railwatch / guardrails",
                   "Trigger rates by detector, label and action; decisions; PII types; JSON "
                   "validity; detector latency and backends.", (
    PromPanel("live_triggers", "Guardrail triggers/s by detector and action (live)", "timeseries",
              (("{{detector}} {{action}}",
                f"sum by (detector, action) (rate({_TRIG}{_R}))"),), "short"),
    PromPanel("live_labels", "Guardrail triggers/s by label (live)", "timeseries",
              (("{{detector}}/{{label}}",
                f"sum by (detector, label) (rate({_TRIG}{_R}))"),), "short"),
    PromPanel("live_decisions", "Requests/s by decision (live)", "timeseries",
              (("{{decision}}", f"sum by (decision) (rate({REQ}{_R}))"),
               ("retries", f"sum(rate({sc.METRIC_RETRIES}_total{_R}))")), "reqps"),
    PromPanel("live_detector_latency", "Detector latency p99 (live)", "timeseries",
              (("{{detector}} {{stage}}", _hq(0.99, sc.METRIC_DETECTOR_DURATION,
                                              "detector, stage")),), "s"),
    PromPanel("live_abuse", "Rate-limited requests and sign-in lockouts (live)", "timeseries",
              (("limited by {{dimension}}",
                f"sum by (dimension) (rate({sc.METRIC_RATE_LIMITED}_total{_R}))"),
               ("login lockouts", f"sum(rate({sc.METRIC_LOGIN_LOCKOUTS}_total{_R}))"),
               ("feedback rejected {{reason}}",
                f"sum by (reason) (rate({sc.METRIC_FEEDBACK_REJECTED}_total{_R}))")), "reqps"),
    PromPanel("detector_backends", "Detectors: kind, backend, up", "table",
              (("", f"max by (detector, kind, backend) ({sc.METRIC_DETECTOR_INFO})"),
               ("", f"min by (detector) ({sc.METRIC_DETECTOR_UP})")), "short",
              "A toxicity detector on backend 'profanity' is the fallback (no model folder)."),
    SqlPanel("decisions", "Requests by decision", "timeseries", """SELECT $__timeInterval(minute) AS time, decision AS series, sum(requests) AS value
FROM {db}.traces_1m
WHERE $__timeFilter(minute)
GROUP BY time, series
ORDER BY time, series"""),
    SqlPanel("triggers", "Findings by detector and action", "timeseries", """SELECT $__timeInterval(minute) AS time, concat(detector, ' ', action) AS series, sum(findings) AS value
FROM {db}.findings_1m
WHERE $__timeFilter(minute)
GROUP BY time, series
ORDER BY time, series"""),
    SqlPanel("top_labels", "Top labels (PII types and others)", "table", """SELECT detector, label, action, sum(findings) AS findings, uniqMerge(requests) AS requests,
       round(max(score_max), 3) AS max_score
FROM {db}.findings_1m
WHERE $__timeFilter(minute)
GROUP BY detector, label, action
ORDER BY findings DESC
LIMIT 50""", ("detector", "label", "action", "findings", "requests", "max_score")),
    SqlPanel("json_validity", "JSON validity (answers the format detector checked)", "timeseries",
             """SELECT $__timeInterval(started_at) AS time, 'valid' AS series,
       countIf(NOT arrayExists(r -> tupleElement(r, 'detector') LIKE '%format%'
                                    AND tupleElement(r, 'findings') > 0, detector_runs)) / count() AS value
FROM {db}.traces
WHERE $__timeFilter(started_at)
  AND arrayExists(r -> tupleElement(r, 'detector') LIKE '%format%', detector_runs)
GROUP BY time
ORDER BY time""", unit="percentunit"),
    SqlPanel("detector_latency", "Detector runs, errors and latency", "table", """SELECT detector, stage, sum(runs) AS runs, sum(errors) AS errors, sum(timeouts) AS timeouts,
       round(quantilesTDigestMerge(0.5, 0.9, 0.99)(latency_ms_q)[1], 3) AS p50_ms,
       round(quantilesTDigestMerge(0.5, 0.9, 0.99)(latency_ms_q)[3], 3) AS p99_ms
FROM {db}.detector_runs_1m
WHERE $__timeFilter(minute)
GROUP BY detector, stage
ORDER BY detector, stage""", ("detector", "stage", "runs", "errors", "timeouts", "p50_ms", "p99_ms")),
))

_TRACE_COLS = ("started_at", "trace_id", "route", "model", "status", "decision", "total_ms",
               "detectors")
_TRACE_SELECT = """SELECT started_at, trace_id, route, model, status, decision,
       round(total_ms, 2) AS total_ms, arrayStringConcat(detectors, ',') AS detectors"""
_SEARCH = """  AND (${search:sqlstring} = '' OR trace_id = ${search:sqlstring}
       OR request_id = ${search:sqlstring} OR ifNull(handoff_id, '') = ${search:sqlstring})"""
TRACES = Board("railwatch-traces", "railwatch / traces",
               "Searchable request tables from ClickHouse: slowest, blocked, handed off.", (
    SqlPanel("slowest", "Slowest requests", "table", f"""{_TRACE_SELECT}
FROM {{db}}.traces
WHERE $__timeFilter(started_at)
{_SEARCH}
ORDER BY total_ms DESC
LIMIT 100""", _TRACE_COLS),
    SqlPanel("blocked", "Blocked requests", "table", f"""{_TRACE_SELECT}
FROM {{db}}.traces
WHERE $__timeFilter(started_at) AND decision = 'block'
{_SEARCH}
ORDER BY started_at DESC
LIMIT 100""", _TRACE_COLS),
    SqlPanel("handed_off", "Handed-off requests", "table", """SELECT t.started_at AS started_at, t.trace_id AS trace_id, t.route AS route, t.model AS model,
       ifNull(t.handoff_id, '') AS handoff_id, ifNull(h.status, 'unknown') AS handoff_status
FROM {db}.traces AS t
LEFT JOIN (SELECT id, status FROM {db}.handoffs FINAL) AS h ON h.id = ifNull(t.handoff_id, '')
WHERE $__timeFilter(t.started_at) AND t.handoff_id IS NOT NULL
  AND (${search:sqlstring} = '' OR t.trace_id = ${search:sqlstring}
       OR ifNull(t.handoff_id, '') = ${search:sqlstring})
ORDER BY t.started_at DESC
LIMIT 100""", ("started_at", "trace_id", "route", "model", "handoff_id", "handoff_status")),
))

FEEDBACK = Board("railwatch-feedback", "railwatch / feedback and hand-off",
                 "Thumbs ratio, scores, hand-off backlog, age and resolution time.", (
    PromPanel("live_handoff_backlog", "Open hand-offs and oldest age (live)", "timeseries",
              (("open", f"max({sc.METRIC_HANDOFFS_OPEN})"),
               ("oldest age (s)", f"max({sc.METRIC_HANDOFF_OLDEST_AGE})")), "short"),
    SqlPanel("thumbs", "Thumbs-up ratio", "timeseries", """SELECT $__timeInterval(created_at) AS time, 'thumbs up' AS series, avg(value > 0) AS value
FROM {db}.feedback
WHERE $__timeFilter(created_at) AND kind = 'thumbs'
GROUP BY time
ORDER BY time""", unit="percentunit"),
    SqlPanel("scores", "Feedback by kind", "table", """SELECT kind, count() AS count, round(avg(value), 3) AS mean_value, countIf(known_trace) AS known_traces
FROM {db}.feedback
WHERE $__timeFilter(created_at)
GROUP BY kind
ORDER BY kind""", ("kind", "count", "mean_value", "known_traces")),
    SqlPanel("handoff_backlog", "Hand-off backlog", "stat", """SELECT countIf(status = 'pending') AS open,
       if(open = 0, 0, dateDiff('second', minIf(created_at, status = 'pending'), now64(3))) AS oldest_age_s
FROM {db}.handoffs FINAL""", ("open", "oldest_age_s")),
    SqlPanel("handoff_flow", "Hand-offs created and resolved", "timeseries", """SELECT time, series, value FROM (
    SELECT $__timeInterval(created_at) AS time, 'created' AS series, toFloat64(count()) AS value
    FROM {db}.handoffs FINAL WHERE $__timeFilter(created_at) GROUP BY time
    UNION ALL
    SELECT $__timeInterval(resolved_at) AS time, 'resolved' AS series, toFloat64(count()) AS value
    FROM {db}.handoffs FINAL WHERE resolved_at IS NOT NULL AND $__timeFilter(resolved_at) GROUP BY time
)
ORDER BY time, series"""),
    SqlPanel("handoff_resolution", "Hand-off resolution time", "table", """SELECT status, count() AS handoffs,
       round(quantileIf(0.5)(dateDiff('millisecond', created_at, resolved_at) / 1000, resolved_at IS NOT NULL), 3) AS p50_s,
       round(quantileIf(0.9)(dateDiff('millisecond', created_at, resolved_at) / 1000, resolved_at IS NOT NULL), 3) AS p90_s
FROM {db}.handoffs FINAL
WHERE $__timeFilter(created_at)
GROUP BY status
ORDER BY status""", ("status", "handoffs", "p50_s", "p90_s")),
))

DRIFT = Board("railwatch-drift", "railwatch / drift",
              "Drift statistics with their thresholds, model, fingerprint and system prompt "
              "changes, canary results (tables of sidecar/drift).", (
    PromPanel("live_drifted", "Statistics drifted in the last window (live)", "table",
              (("", f"max by (model, route, metric, statistic) ({sc.METRIC_DRIFT_DRIFTED}) == 1"),)),
    PromPanel("live_canary", "Canary similarity to baseline (live)", "timeseries",
              (("{{upstream}} {{prompt}}",
                f"min by (upstream, prompt) ({sc.METRIC_DRIFT_CANARY_SIMILARITY})"),), "percentunit"),
    PromPanel("live_drift_events", "Drift events by kind (live)", "timeseries",
              (("{{kind}}", f"sum by (kind) (increase({sc.METRIC_DRIFT_EVENTS}_total{_R}))"),)),
    SqlPanel("drift_scores", "Drift statistics relative to their thresholds (1 = threshold)",
             "timeseries", """SELECT time, series, ratio AS value FROM (
    SELECT window_end AS time, concat(metric, ' ', statistic) AS series,
           if(threshold > 0, value / threshold, 0) AS ratio
    FROM {db}.drift_windows FINAL
    WHERE $__timeFilter(window_end)
)
ORDER BY time, series"""),
    SqlPanel("drift_windows", "Latest windows", "table", """SELECT window_end, model, route, metric, statistic, round(value, 4) AS statistic_value,
       round(threshold, 4) AS threshold, drifted, explanation
FROM {db}.drift_windows FINAL
WHERE $__timeFilter(window_end)
ORDER BY window_end DESC, drifted DESC, metric
LIMIT 100""", ("window_end", "model", "route", "metric", "statistic", "statistic_value",
               "threshold", "drifted", "explanation")),
    SqlPanel("drift_events", "Model, fingerprint, system prompt and canary changes", "table",
             """SELECT ts, kind, model, route, subject, old_value, new_value
FROM {db}.drift_events FINAL
WHERE $__timeFilter(ts)
ORDER BY ts DESC
LIMIT 100""", ("ts", "kind", "model", "route", "subject", "old_value", "new_value")),
    SqlPanel("canaries", "Canary probes", "table", """SELECT ts, upstream, model, prompt_id, similarity, exact, is_baseline, system_fingerprint
FROM {db}.drift_canaries
WHERE $__timeFilter(ts)
ORDER BY ts DESC
LIMIT 100""", ("ts", "upstream", "model", "prompt_id", "similarity", "exact", "is_baseline",
               "system_fingerprint")),
))

BOARDS: tuple[Board, ...] = (OVERVIEW, GUARDRAILS, TRACES, FEEDBACK, DRIFT)


def sql_panels() -> list[tuple[Board, SqlPanel]]:
    return [(b, p) for b in BOARDS for p in b.panels if isinstance(p, SqlPanel)]


def prom_panels() -> list[tuple[Board, PromPanel]]:
    return [(b, p) for b in BOARDS for p in b.panels if isinstance(p, PromPanel)]
