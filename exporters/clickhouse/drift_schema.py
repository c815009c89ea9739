"""Migration 5: the drift tables (issue 12). See :mod:`exporters.clickhouse.drift_store`.

- ``drift_requests``: one row per *sampled* request, written by every sidecar (pod):
  scalar features (``num``: name -> Float64, ``cat``: name -> String), system prompt
  hash and length, served model and ``system_fingerprint``, the prompt's embedding
  (``Array(Float32)``, empty when not computed) and, only where text may be stored, a
  short example of the prompt. Window statistics read every pod's rows from here, so
  they survive restarts and cover the whole fleet.
- ``drift_windows``: one row per (window, model, route, metric, statistic): value,
  threshold, p-value, drifted flag, explanation. ``ReplacingMergeTree(version)`` keyed
  by the window, so a run repeated (two pods racing for the lease) leaves one row.
- ``drift_events``: fingerprint/model changes, new system prompts, canary changes,
  window alarms; keyed by a content id, so N pods seeing one change store one event.
- ``drift_canaries``: canary probe answers per upstream, model and prompt.
- ``drift_baselines``: pinned reference windows; ``drift_leases``: the job lease.
"""

from __future__ import annotations

from typing import Protocol


class _Ddl(Protocol):  # exporters.clickhouse.migrations.Ddl (no import cycle)
    @property
    def db(self) -> str: ...

    @property
    def on_cluster(self) -> str: ...

    def engine(self, table: str, kind: str, *args: str) -> str: ...

    @property
    def settings(self) -> str: ...


def drift_tables(d: _Ddl) -> list[str]:
    t = "DateTime64(3, 'UTC')"
    return [
        f"""CREATE TABLE IF NOT EXISTS {d.db}.drift_requests{d.on_cluster} (
    ts {t},
    request_id String,
    pod LowCardinality(String),
    upstream LowCardinality(String),
    route LowCardinality(String),
    model LowCardinality(String),
    model_requested LowCardinality(String),
    system_fingerprint LowCardinality(String),
    system_prompt_hash String,
    system_prompt_chars UInt32,
    prompt_hash String,
    prompt_chars UInt32,
    num Map(LowCardinality(String), Float64),
    cat Map(LowCardinality(String), String),
    embedding Array(Float32) CODEC(ZSTD(1)),
    example Nullable(String) CODEC(ZSTD(3))
) ENGINE = {d.engine("drift_requests", "ReplacingMergeTree")}
PARTITION BY toDate(ts)
ORDER BY (model, route, ts, request_id)
{d.settings}""",
        f"""CREATE TABLE IF NOT EXISTS {d.db}.drift_windows{d.on_cluster} (
    window_start {t},
    window_end {t},
    reference_start {t},
    reference_end {t},
    model LowCardinality(String),
    route LowCardinality(String),
    metric LowCardinality(String),
    statistic LowCardinality(String),
    value Float64,
    threshold Float64,
    p_value Nullable(Float64),
    n_reference UInt32,
    n_current UInt32,
    drifted Bool,
    explanation String,
    computed_at {t},
    version UInt64
) ENGINE = {d.engine("drift_windows", "ReplacingMergeTree", "version")}
PARTITION BY toDate(window_end)
ORDER BY (model, route, metric, statistic, window_end)
{d.settings}""",
        f"""CREATE TABLE IF NOT EXISTS {d.db}.drift_events{d.on_cluster} (
    event_id String,
    ts {t},
    kind LowCardinality(String),
    model LowCardinality(String),
    route LowCardinality(String),
    upstream LowCardinality(String),
    subject String,
    old_value String,
    new_value String,
    detail String,
    pod LowCardinality(String)
) ENGINE = {d.engine("drift_events", "ReplacingMergeTree")}
PARTITION BY toDate(ts)
ORDER BY (event_id)
{d.settings}""",
        f"""CREATE TABLE IF NOT EXISTS {d.db}.drift_canaries{d.on_cluster} (
    ts {t},
    upstream LowCardinality(String),
    model LowCardinality(String),
    prompt_id LowCardinality(String),
    answer String CODEC(ZSTD(3)),
    answer_hash String,
    embedding Array(Float32) CODEC(ZSTD(1)),
    system_fingerprint LowCardinality(String),
    similarity Nullable(Float64),
    exact Nullable(Bool),
    is_baseline Bool,
    pod LowCardinality(String)
) ENGINE = {d.engine("drift_canaries", "MergeTree")}
PARTITION BY toDate(ts)
ORDER BY (upstream, model, prompt_id, ts)
{d.settings}""",
        f"""CREATE TABLE IF NOT EXISTS {d.db}.drift_baselines{d.on_cluster} (
    name String,
    model String,
    ref_from {t},
    ref_to {t},
    created_at {t},
    version UInt64
) ENGINE = {d.engine("drift_baselines", "ReplacingMergeTree", "version")}
ORDER BY (name, model)
{d.settings}""",
        f"""CREATE TABLE IF NOT EXISTS {d.db}.drift_leases{d.on_cluster} (
    name String,
    holder String,
    expires_at {t},
    version UInt64
) ENGINE = {d.engine("drift_leases", "ReplacingMergeTree", "version")}
ORDER BY name
{d.settings}""",
    ]
