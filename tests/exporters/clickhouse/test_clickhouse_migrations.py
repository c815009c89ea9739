"""Schema migrations: idempotent, recorded once, matching the writer's column contract."""

from __future__ import annotations

import pytest

from exporters.clickhouse.migrations import MIGRATIONS, SCHEMA_VERSION, Ddl, apply_ttl, migrate
from exporters.clickhouse.review import FEEDBACK_COLUMNS, HANDOFF_COLUMNS
from exporters.clickhouse.rows import (
    FINDING_COLUMNS,
    TRACE_COLUMNS,
    TRACE_SERVER_COLUMNS,
    build_rows,
)
from tests.exporters.clickhouse.ch_records import full_record


def _norm(type_name: str) -> str:
    return type_name.replace(" ", "")


def test_migrations_run_twice_record_each_version_once(backend, database):
    first = migrate(backend.admin, database)
    second = migrate(backend.admin, database)
    assert first == [m.version for m in MIGRATIONS]
    assert second == []
    rows = backend.admin.query(
        f"SELECT version, name, checksum FROM {database}.railwatch_migrations ORDER BY version"
    ).result_rows
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    assert {r[2] for r in rows} == {m.checksum() for m in MIGRATIONS}
    tables = {
        r[0]
        for r in backend.admin.query(
            "SELECT name FROM system.tables WHERE database = {d:String}", parameters={"d": database}
        ).result_rows
    }
    assert {"traces", "findings", "traces_1m", "traces_1m_mv", "findings_1m", "findings_1m_mv",
            "feedback", "handoffs", "detector_runs_1m", "detector_runs_1m_mv",
            "railwatch_migrations"} <= tables


@pytest.mark.parametrize(
    ("table", "columns"),
    [("traces", TRACE_COLUMNS + TRACE_SERVER_COLUMNS), ("findings", FINDING_COLUMNS), ("feedback", FEEDBACK_COLUMNS),
     ("handoffs", HANDOFF_COLUMNS)],
)
def test_insert_column_contract_matches_the_tables(backend, database, table, columns):
    migrate(backend.admin, database)
    described = backend.admin.query(
        "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = {t:String} "
        "ORDER BY position",
        parameters={"d": database, "t": table},
    ).result_rows
    assert [(n, _norm(t)) for n, t in described] == [(n, _norm(t)) for n, t in columns]


def test_engines_partitions_and_sort_keys(backend, database):
    migrate(backend.admin, database)
    rows = {
        r[0]: r[1:]
        for r in backend.admin.query(
            "SELECT name, engine, partition_key, sorting_key FROM system.tables "
            "WHERE database = {d:String}",
            parameters={"d": database},
        ).result_rows
    }
    assert rows["traces"] == (
        "ReplacingMergeTree", "toDate(started_at)",
        "route, model, toStartOfMinute(started_at), request_id",
    )
    assert rows["findings"][0] == "ReplacingMergeTree"
    assert "request_id" in rows["findings"][2]
    assert rows["traces_1m"][0] == "AggregatingMergeTree"
    assert rows["findings_1m"][0] == "AggregatingMergeTree"
    create = backend.admin.query(f"SHOW CREATE TABLE {database}.traces").result_rows[0][0]
    assert "non_replicated_deduplication_window = 1000" in create


def test_text_and_row_ttl_follow_the_config_idempotently(backend, database):
    client = backend.admin
    migrate(client, database)
    assert apply_ttl(client, database, ttl_text_days=None, ttl_days=None) == []
    ran = apply_ttl(client, database, ttl_text_days=7, ttl_days=90)
    assert len(ran) == 6 + 5  # six text columns, five tables with a row TTL
    assert apply_ttl(client, database, ttl_text_days=7, ttl_days=90) == []
    create = client.query(f"SHOW CREATE TABLE {database}.traces").result_rows[0][0]
    assert "`prompt_text` Nullable(String) CODEC(ZSTD(3)) TTL toDateTime(started_at) + toIntervalDay(7)" in create
    assert "`output_text` Nullable(String) CODEC(ZSTD(3)) TTL" in create
    assert "`total_ms` Float64," in create  # metrics columns carry no column TTL
    assert "TTL toDateTime(started_at) + toIntervalDay(90)" in create
    apply_ttl(client, database, ttl_text_days=None, ttl_days=None)
    create = client.query(f"SHOW CREATE TABLE {database}.traces").result_rows[0][0]
    assert "TTL" not in create


def test_on_cluster_ddl_renders_replicated_engines_that_parse(backend):
    d = Ddl(db="rwdb", cluster="prod_cluster")
    statements = [sql for m in MIGRATIONS for sql in m.render(d)]
    creates = [s for s in statements if s.startswith("CREATE TABLE")]
    assert all(" ON CLUSTER `prod_cluster`" in s for s in statements)
    assert all("ENGINE = Replicated" in s for s in creates)
    assert all("replicated_deduplication_window" in s for s in creates)
    for sql in statements:  # parse only: nothing is created
        backend.admin.query(f"EXPLAIN AST {sql}")


def _columns(client, database, table):
    return client.query(
        "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = {t:String} "
        "ORDER BY position",
        parameters={"d": database, "t": table},
    ).result_rows


def test_a_v3_database_upgrades_to_v4_keeping_its_rows(backend, database, make_exporter):
    client = backend.admin
    assert migrate(client, database, migrations=MIGRATIONS[:3]) == [1, 2, 3]
    # rows as a v3 writer sent them: without the columns v4 adds
    new_columns = {"upstream_offset_ms", "detector_runs", "attempts", "trace_flags"}
    keep = [i for i, (name, _) in enumerate(TRACE_COLUMNS) if name not in new_columns]
    old = [full_record(i) for i in range(3)]
    traces, _ = build_rows(old, version=1, store_text=True, prices={})
    client.insert(f"{database}.traces", [[row[i] for i in keep] for row in traces],
                  column_names=[TRACE_COLUMNS[i][0] for i in keep],
                  column_type_names=[TRACE_COLUMNS[i][1] for i in keep])

    assert migrate(client, database, migrations=MIGRATIONS[:4]) == [4]
    assert migrate(client, database, migrations=MIGRATIONS[:4]) == []
    described = _columns(client, database, "traces")
    assert [(n, _norm(t)) for n, t in described] == [
        (n, _norm(t)) for n, t in TRACE_COLUMNS + TRACE_SERVER_COLUMNS
    ]  # the same order as a fresh v4 database
    rows = client.query(
        f"SELECT request_id, upstream_offset_ms, detector_runs, attempts, total_ms "
        f"FROM {database}.traces ORDER BY request_id"
    ).result_rows
    assert rows == [(r.request_id, None, [], [], r.total_ms) for r in old]

    exporter = make_exporter()  # a v4 writer on the upgraded database
    new = [full_record(i) for i in range(3, 5)]
    exporter.export(new)
    assert exporter.force_flush(10)
    assert client.query(
        f"SELECT count(), countIf(upstream_offset_ms IS NULL), countIf(empty(detector_runs)), "
        f"countIf(empty(attempts)) FROM {database}.traces"
    ).result_rows == [(5, 3, 3, 3)]
    assert client.query(f"SELECT sum(requests) FROM {database}.traces_1m").result_rows == [(5,)]
    runs_1m = client.query(
        f"SELECT sum(runs), sum(errors), sum(timeouts), sum(findings) "
        f"FROM {database}.detector_runs_1m"
    ).result_rows
    assert runs_1m == [(6, 2, 2, 4)]  # only the new rows' runs: 3 each, 1 timeout, 2 findings


def test_a_half_applied_v4_converges(backend, database):
    """A migration that died after some statements (or a second sidecar racing it)
    leaves objects behind; running it again must succeed and record it once."""
    client = backend.admin
    migrate(client, database, migrations=MIGRATIONS[:3])
    v4 = MIGRATIONS[3]
    for sql in v4.render(Ddl(db=database))[:2]:
        client.command(sql)
    assert migrate(client, database, migrations=MIGRATIONS[:4]) == [4]
    assert migrate(client, database, migrations=MIGRATIONS[:4]) == []
    assert client.query(
        f"SELECT count() FROM {database}.railwatch_migrations WHERE version = 4"
    ).result_rows == [(1,)]
