"""The ClickHouse schema as versioned migrations, applied at start-up.

:func:`migrate` creates the database and the bookkeeping table
``railwatch_migrations`` (version, name, checksum, applied_at), then applies, in
order, every migration whose version is not recorded there, and records it. Each
statement is idempotent (``IF NOT EXISTS``), so a run that died half-way, or two
sidecars migrating one server at the same moment, converge on the same schema.
Released migrations are never edited: a change is a new version. A recorded
checksum that no longer matches is logged as a warning.

With ``cluster`` every statement runs ``ON CLUSTER`` and the MergeTree family
becomes its Replicated counterpart (replica path
``/clickhouse/tables/{shard}/<db>/<table>``, replica ``{replica}``, the server's
macros). Reads and writes then go to the local replicated tables of the node the
DSN names; a Distributed table over the shards is left to the operator.

Tables (all timestamps UTC, partitioned by day, see :mod:`.rows` for columns):

- ``traces``: one row per request, ``ReplacingMergeTree(version)`` ordered by
  ``(route, model, toStartOfMinute(started_at), request_id)``.
- ``findings``: one row per finding, ordered by
  ``(detector, label, toStartOfMinute(started_at), request_id, idx)``.
- ``traces_1m`` / ``findings_1m``: ``AggregatingMergeTree`` per-minute aggregates
  filled by materialized views (counts, token and cost sums, t-digest quantile
  states of the latencies, per-detector/action trigger counts).
- ``feedback`` and ``handoffs``: written by the review API (:mod:`.review`).
- ``detector_runs_1m`` (v4): per-minute runs, errors, timeouts, findings and a
  t-digest latency state per detector and stage (route, model, tenant), filled by a
  view that ``ARRAY JOIN``s ``traces.detector_runs``. Latency is the caller's wait,
  failed runs included (a timeout counts at the time it cost).
- ``drift_*`` (v5): drift features, windows, events, canaries, baselines and the job
  lease; see :mod:`.drift_schema`.

Duplicates: every MergeTree table keeps a deduplication window of recent insert
blocks (``non_replicated_deduplication_window``, or the replicated one), and the
writer sends an ``insert_deduplication_token`` per batch, so a batch replayed
after a partial failure is dropped by the server, in the aggregate tables too
(``deduplicate_blocks_in_dependent_materialized_views``). ``ReplacingMergeTree``
is the backstop for a replay older than the window: merges then collapse rows
with the same key.

Text expiry (:func:`apply_ttl`) is applied after the migrations because it is
configuration, not schema: a column TTL on the text columns
(``ttl_text_days``) and a row TTL on the trace, finding and aggregate tables
(``ttl_days``); changing either only alters the tables.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from exporters.clickhouse.connection import UNBOUNDED
from exporters.clickhouse.drift_schema import drift_tables
from exporters.errors import MigrationError

logger = logging.getLogger(__name__)

QUANTILES = (0.5, 0.9, 0.99)
_Q = ", ".join(str(q) for q in QUANTILES)
_QSTATE = f"quantilesTDigestState({_Q})"
_QTYPE = f"quantilesTDigest({_Q})"

# table -> (timestamp column, text columns) for the TTL clauses
TEXT_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "traces": ("started_at", ("prompt_text", "output_text")),
    "feedback": ("created_at", ("comment", "corrected_answer")),
    "handoffs": ("created_at", ("content", "resolution")),
}
ROW_TTL_TABLES: dict[str, str] = {
    "traces": "started_at",
    "findings": "started_at",
    "traces_1m": "minute",
    "findings_1m": "minute",
    "detector_runs_1m": "minute",
}


@dataclass(frozen=True, slots=True)
class Ddl:
    """What a migration needs to render its statements."""

    db: str
    cluster: str | None = None
    dedup_window: int = 1000

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER `{self.cluster}`" if self.cluster else ""

    def engine(self, table: str, kind: str, *args: str) -> str:
        """``kind`` ("MergeTree", "ReplacingMergeTree", ...) or its Replicated form."""
        if not self.cluster:
            return f"{kind}({', '.join(args)})"
        path = f"'/clickhouse/tables/{{shard}}/{self.db}/{table}'"
        params = ", ".join([path, "'{replica}'", *args])
        return f"Replicated{kind}({params})"

    @property
    def settings(self) -> str:
        key = "replicated" if self.cluster else "non_replicated"
        return f"SETTINGS {key}_deduplication_window = {self.dedup_window}"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    render: Callable[[Ddl], list[str]]

    def checksum(self) -> str:
        canonical = "\n".join(self.render(Ddl(db="db")))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _v1_traces_findings(d: Ddl) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {d.db}.traces{d.on_cluster} (
    request_id String,
    trace_id String,
    span_id String,
    parent_span_id Nullable(String),
    started_at DateTime64(6, 'UTC'),
    ended_at DateTime64(6, 'UTC'),
    method LowCardinality(String),
    path String,
    route LowCardinality(String),
    upstream LowCardinality(String),
    tenant LowCardinality(Nullable(String)),
    `user` Nullable(String),
    conversation_id Nullable(String),
    model LowCardinality(String),
    model_requested LowCardinality(Nullable(String)),
    model_served LowCardinality(Nullable(String)),
    system_fingerprint LowCardinality(Nullable(String)),
    response_id Nullable(String),
    finish_reasons Array(LowCardinality(String)),
    temperature Nullable(Float64),
    top_p Nullable(Float64),
    max_tokens Nullable(Int64),
    n Nullable(Int64),
    stream Bool,
    status UInt16,
    error_type LowCardinality(Nullable(String)),
    client_disconnected Bool,
    upstream_attempts UInt16,
    total_ms Float64,
    upstream_ms Nullable(Float64),
    overhead_ms Nullable(Float64),
    ttft_ms Nullable(Float64),
    tpot_ms Nullable(Float64),
    prompt_tokens Nullable(UInt32),
    completion_tokens Nullable(UInt32),
    total_tokens Nullable(UInt32),
    usage_source LowCardinality(Nullable(String)),
    cost_usd Nullable(Float64),
    prompt_text Nullable(String) CODEC(ZSTD(3)),
    output_text Nullable(String) CODEC(ZSTD(3)),
    text_masked Bool,
    finding_count UInt16,
    detectors Array(LowCardinality(String)),
    decisions Array(Tuple(stage LowCardinality(String), action LowCardinality(String), reasons Array(String))),
    decision LowCardinality(String),
    retries UInt16,
    handoff_id Nullable(String),
    attributes Map(LowCardinality(String), String),
    version UInt64,
    inserted_at DateTime64(6, 'UTC') DEFAULT now64(6)
) ENGINE = {d.engine("traces", "ReplacingMergeTree", "version")}
PARTITION BY toDate(started_at)
ORDER BY (route, model, toStartOfMinute(started_at), request_id)
{d.settings}""",
        f"""CREATE TABLE IF NOT EXISTS {d.db}.findings{d.on_cluster} (
    request_id String,
    trace_id String,
    started_at DateTime64(6, 'UTC'),
    route LowCardinality(String),
    model LowCardinality(String),
    tenant LowCardinality(Nullable(String)),
    idx UInt16,
    stage LowCardinality(String),
    detector LowCardinality(String),
    label LowCardinality(String),
    score Float64,
    `start` UInt32,
    `end` UInt32,
    action LowCardinality(String),
    latency_ms Float64,
    version UInt64
) ENGINE = {d.engine("findings", "ReplacingMergeTree", "version")}
PARTITION BY toDate(started_at)
ORDER BY (detector, label, toStartOfMinute(started_at), request_id, idx)
{d.settings}""",
    ]


def _v2_minute_aggregates(d: Ddl) -> list[str]:
    lat = ("total", "upstream", "overhead", "ttft", "tpot")
    lat_cols = ",\n    ".join(
        f"{n}_ms_q AggregateFunction({_QTYPE}, {'Float64' if n == 'total' else 'Nullable(Float64)'})"
        for n in lat
    )
    lat_sel = ",\n    ".join(f"{_QSTATE}({n}_ms) AS {n}_ms_q" for n in lat)
    return [
        f"""CREATE TABLE IF NOT EXISTS {d.db}.traces_1m{d.on_cluster} (
    minute DateTime('UTC'),
    route LowCardinality(String),
    model LowCardinality(String),
    tenant LowCardinality(String),
    decision LowCardinality(String),
    requests SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    streams SimpleAggregateFunction(sum, UInt64),
    with_findings SimpleAggregateFunction(sum, UInt64),
    retries SimpleAggregateFunction(sum, UInt64),
    prompt_tokens SimpleAggregateFunction(sum, UInt64),
    completion_tokens SimpleAggregateFunction(sum, UInt64),
    cost_usd SimpleAggregateFunction(sum, Float64),
    {lat_cols}
) ENGINE = {d.engine("traces_1m", "AggregatingMergeTree")}
PARTITION BY toDate(minute)
ORDER BY (route, model, tenant, decision, minute)
{d.settings}""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {d.db}.traces_1m_mv{d.on_cluster}
TO {d.db}.traces_1m AS
SELECT
    toStartOfMinute(started_at) AS minute,
    route,
    model,
    ifNull(tenant, '') AS tenant,
    decision,
    count() AS requests,
    countIf(status >= 400 OR error_type IS NOT NULL) AS errors,
    countIf(stream) AS streams,
    countIf(finding_count > 0) AS with_findings,
    sum(toUInt64(retries)) AS retries,
    sum(toUInt64(ifNull(prompt_tokens, 0))) AS prompt_tokens,
    sum(toUInt64(ifNull(completion_tokens, 0))) AS completion_tokens,
    sum(ifNull(cost_usd, 0)) AS cost_usd,
    {lat_sel}
FROM {d.db}.traces
GROUP BY minute, route, model, tenant, decision""",
        f"""CREATE TABLE IF NOT EXISTS {d.db}.findings_1m{d.on_cluster} (
    minute DateTime('UTC'),
    route LowCardinality(String),
    model LowCardinality(String),
    tenant LowCardinality(String),
    stage LowCardinality(String),
    detector LowCardinality(String),
    label LowCardinality(String),
    action LowCardinality(String),
    findings SimpleAggregateFunction(sum, UInt64),
    requests AggregateFunction(uniq, String),
    score_max SimpleAggregateFunction(max, Float64),
    latency_ms_q AggregateFunction({_QTYPE}, Float64)
) ENGINE = {d.engine("findings_1m", "AggregatingMergeTree")}
PARTITION BY toDate(minute)
ORDER BY (detector, label, action, stage, route, model, tenant, minute)
{d.settings}""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {d.db}.findings_1m_mv{d.on_cluster}
TO {d.db}.findings_1m AS
SELECT
    toStartOfMinute(started_at) AS minute,
    route,
    model,
    ifNull(tenant, '') AS tenant,
    stage,
    detector,
    label,
    action,
    count() AS findings,
    uniqState(request_id) AS requests,
    max(score) AS score_max,
    {_QSTATE}(latency_ms) AS latency_ms_q
FROM {d.db}.findings
GROUP BY minute, route, model, tenant, stage, detector, label, action""",
    ]


def _v3_feedback_handoffs(d: Ddl) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {d.db}.feedback{d.on_cluster} (
    id String,
    trace_id String,
    request_id Nullable(String),
    created_at DateTime64(3, 'UTC'),
    kind LowCardinality(String),
    value Float64,
    comment Nullable(String) CODEC(ZSTD(3)),
    corrected_answer Nullable(String) CODEC(ZSTD(3)),
    known_trace Bool,
    `user` Nullable(String),
    version UInt64
) ENGINE = {d.engine("feedback", "ReplacingMergeTree", "version")}
PARTITION BY toDate(created_at)
ORDER BY (trace_id, id)
{d.settings}""",
        f"""CREATE TABLE IF NOT EXISTS {d.db}.handoffs{d.on_cluster} (
    id String,
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC'),
    request_id Nullable(String),
    trace_id Nullable(String),
    conversation_id Nullable(String),
    tenant LowCardinality(Nullable(String)),
    route LowCardinality(String),
    model LowCardinality(String),
    content Nullable(String) CODEC(ZSTD(3)),
    findings_json String,
    reason String,
    status LowCardinality(String),
    assignee Nullable(String),
    resolution Nullable(String) CODEC(ZSTD(3)),
    resolved_at Nullable(DateTime64(3, 'UTC')),
    version UInt64
) ENGINE = {d.engine("handoffs", "ReplacingMergeTree", "version")}
PARTITION BY toDate(created_at)
ORDER BY id
{d.settings}""",
    ]


DETECTOR_RUN_TYPE = (
    "Tuple(stage LowCardinality(String), detector LowCardinality(String), offset_ms Float64, "
    "latency_ms Float64, findings UInt16, error LowCardinality(Nullable(String)), "
    "batch_size UInt16)"
)
ATTEMPT_TYPE = (
    "Tuple(kind LowCardinality(String), upstream LowCardinality(String), "
    "model LowCardinality(Nullable(String)), offset_ms Float64, duration_ms Float64, "
    "status UInt16, error LowCardinality(Nullable(String)), decision LowCardinality(String))"
)


def _v4_detector_runs(d: Ddl) -> list[str]:
    """``traces.upstream_offset_ms``, ``.detector_runs``, ``.attempts``, ``.trace_flags``;
    a runs aggregate.

    Added columns take their defaults in rows written before (``NULL``, ``[]``); the
    view only sees rows inserted after it exists, and older rows have no runs anyway.
    The view ``ARRAY JOIN``s the runs, so a request without runs adds no row.
    """
    return [
        f"""ALTER TABLE {d.db}.traces{d.on_cluster}
    ADD COLUMN IF NOT EXISTS upstream_offset_ms Nullable(Float64) AFTER total_ms,
    ADD COLUMN IF NOT EXISTS detector_runs Array({DETECTOR_RUN_TYPE}) AFTER detectors,
    ADD COLUMN IF NOT EXISTS attempts Array({ATTEMPT_TYPE}) AFTER retries,
    ADD COLUMN IF NOT EXISTS trace_flags LowCardinality(String) DEFAULT '01' AFTER upstream""",
        f"""CREATE TABLE IF NOT EXISTS {d.db}.detector_runs_1m{d.on_cluster} (
    minute DateTime('UTC'),
    route LowCardinality(String),
    model LowCardinality(String),
    tenant LowCardinality(String),
    stage LowCardinality(String),
    detector LowCardinality(String),
    runs SimpleAggregateFunction(sum, UInt64),
    errors SimpleAggregateFunction(sum, UInt64),
    timeouts SimpleAggregateFunction(sum, UInt64),
    findings SimpleAggregateFunction(sum, UInt64),
    latency_ms_q AggregateFunction({_QTYPE}, Float64)
) ENGINE = {d.engine("detector_runs_1m", "AggregatingMergeTree")}
PARTITION BY toDate(minute)
ORDER BY (detector, stage, route, model, tenant, minute)
{d.settings}""",
        f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {d.db}.detector_runs_1m_mv{d.on_cluster}
TO {d.db}.detector_runs_1m AS
SELECT
    toStartOfMinute(started_at) AS minute,
    route,
    model,
    ifNull(tenant, '') AS tenant,
    tupleElement(run, 'stage') AS stage,
    tupleElement(run, 'detector') AS detector,
    count() AS runs,
    countIf(tupleElement(run, 'error') IS NOT NULL) AS errors,
    countIf(tupleElement(run, 'error') = 'timeout') AS timeouts,
    sum(toUInt64(tupleElement(run, 'findings'))) AS findings,
    {_QSTATE}(tupleElement(run, 'latency_ms')) AS latency_ms_q
FROM {d.db}.traces
ARRAY JOIN detector_runs AS run
GROUP BY minute, route, model, tenant, stage, detector""",
    ]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "traces and findings", _v1_traces_findings),
    Migration(2, "per-minute aggregates", _v2_minute_aggregates),
    Migration(3, "feedback and handoffs", _v3_feedback_handoffs),
    Migration(4, "detector runs, upstream attempts and offset", _v4_detector_runs),
    Migration(5, "drift requests, windows, events, canaries, baselines, leases", drift_tables),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def _bootstrap(d: Ddl) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS {d.db}{d.on_cluster}",
        f"""CREATE TABLE IF NOT EXISTS {d.db}.railwatch_migrations{d.on_cluster} (
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime64(3, 'UTC')
) ENGINE = {d.engine("railwatch_migrations", "ReplacingMergeTree", "applied_at")}
ORDER BY version""",
    ]


def applied_versions(client: Client, database: str) -> dict[int, str]:
    """Recorded migrations: version -> checksum (may raise the driver's errors)."""
    result = client.query(
        f"SELECT version, any(checksum) FROM {database}.railwatch_migrations GROUP BY version"
    )
    return {int(v): str(c) for v, c in result.result_rows}


def migrate(
    client: Client,
    database: str,
    *,
    cluster: str | None = None,
    dedup_window: int = 1000,
    migrations: Sequence[Migration] = MIGRATIONS,
) -> list[int]:
    """Create the database and apply missing migrations; returns the versions applied now.

    Blocks (DDL). Raises :class:`MigrationError` naming the migration; the message
    holds the server's error (DDL carries no request data).
    """
    d = Ddl(db=database, cluster=cluster, dedup_window=dedup_window)
    _run(client, _bootstrap(d), "bootstrap")
    try:
        done = applied_versions(client, database)
    except ClickHouseError as exc:
        raise MigrationError(f"cannot read {database}.railwatch_migrations: {exc}") from exc
    applied: list[int] = []
    for m in sorted(migrations, key=lambda m: m.version):
        if m.version in done:
            if done[m.version] != m.checksum():
                logger.warning(
                    "migration %d (%s) in %s was recorded with another checksum; released "
                    "migrations must not change", m.version, m.name, database,
                )
            continue
        _run(client, m.render(d), f"migration {m.version} ({m.name})")
        try:
            client.insert(
                f"{database}.railwatch_migrations",
                [[m.version, m.name, m.checksum(), int(time.time() * 1000)]],
                column_names=["version", "name", "checksum", "applied_at"],
                column_type_names=["UInt32", "String", "String", "DateTime64(3, 'UTC')"],
                settings=UNBOUNDED,
            )
        except ClickHouseError as exc:
            raise MigrationError(f"cannot record migration {m.version} in {database}: {exc}") from exc
        logger.info("applied migration %d (%s) to %s", m.version, m.name, database)
        applied.append(m.version)
    return applied


def _run(client: Client, statements: Sequence[str], what: str) -> None:
    for sql in statements:
        try:
            client.command(sql, settings=UNBOUNDED)
        except ClickHouseError as exc:
            raise MigrationError(f"{what} failed: {exc}") from exc


def _create_query(client: Client, database: str, table: str) -> str:
    rows = client.query(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} "
        "AND name = {t:String}",
        parameters={"db": database, "t": table},
    ).result_rows
    return str(rows[0][0]) if rows else ""


def _column_ttl_days(create: str, column: str) -> int | None:
    """Days in ``column``'s TTL clause in a ``SHOW CREATE`` text, ``None`` without one."""
    match = re.search(rf"`{column}` [^`]*?TTL [^`]*?toIntervalDay\((\d+)\)", create)
    return int(match.group(1)) if match else None


def _table_ttl_days(create: str) -> int | None:
    match = re.search(r"\)\s*ENGINE = .*?\bTTL [^`]*?toIntervalDay\((\d+)\)", create, re.DOTALL)
    return int(match.group(1)) if match else None


def apply_ttl(
    client: Client,
    database: str,
    *,
    ttl_text_days: int | None,
    ttl_days: int | None,
    cluster: str | None = None,
) -> list[str]:
    """Make the text-column and row TTLs match the config; returns the statements run.

    Idempotent: tables already matching are left alone. Existing parts are not
    rewritten at once (``materialize_ttl_after_modify = 0``): the TTL applies as
    parts merge. Raises :class:`MigrationError`.
    """
    oc = f" ON CLUSTER `{cluster}`" if cluster else ""
    run: list[str] = []
    try:
        for table, (ts, columns) in TEXT_COLUMNS.items():
            create = _create_query(client, database, table)
            for column in columns:
                if _column_ttl_days(create, column) == ttl_text_days:
                    continue
                action = (
                    f"MODIFY COLUMN {column} TTL toDateTime({ts}) + INTERVAL {ttl_text_days} DAY"
                    if ttl_text_days
                    else f"MODIFY COLUMN {column} REMOVE TTL"
                )
                run.append(f"ALTER TABLE {database}.{table}{oc} {action}")
        for table, ts in ROW_TTL_TABLES.items():
            create = _create_query(client, database, table)
            if _table_ttl_days(create) == ttl_days:
                continue
            action = (
                f"MODIFY TTL toDateTime({ts}) + INTERVAL {ttl_days} DAY" if ttl_days else "REMOVE TTL"
            )
            run.append(f"ALTER TABLE {database}.{table}{oc} {action}")
        for sql in run:
            client.command(sql, settings={"materialize_ttl_after_modify": 0, **UNBOUNDED})
    except ClickHouseError as exc:
        raise MigrationError(f"applying the TTL settings to {database} failed: {exc}") from exc
    return run
