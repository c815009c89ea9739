"""Every ClickHouse panel's SQL, exactly as Grafana would run it, against chDB filled by
real traffic through the sidecar: it runs, returns rows, and returns the panel's columns."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from sidecar.dashboard import panels
from sidecar.dashboard.sql import TimeRange, expand, with_database
from tests.dashboards.traffic import Traffic

if TYPE_CHECKING:
    from tests.conftest import Backend

SQL_PANELS = panels.sql_panels()


def _window() -> TimeRange:
    now = time.time()
    return TimeRange(now - 3600, now + 60, 60)


@pytest.mark.parametrize(("board", "panel"), SQL_PANELS, ids=[p.key for _, p in SQL_PANELS])
def test_panel_sql_returns_rows_with_its_columns(
    traffic: Traffic, backend: Backend, board: panels.Board, panel: panels.SqlPanel
) -> None:
    sql = expand(with_database(panel.sql, traffic.database), _window())
    result = backend.admin.query(sql)
    assert tuple(result.column_names) == panel.columns
    assert result.result_rows, f"{board.uid}/{panel.key} returned no rows after the traffic"
    if panel.kind == "timeseries":
        assert all(isinstance(v, (int, float)) for _, _, v in result.result_rows)


def test_search_narrows_the_traces_tables(traffic: Traffic, backend: Backend) -> None:
    trace_id = backend.admin.query(
        f"SELECT trace_id FROM {traffic.database}.traces WHERE decision = 'block' LIMIT 1"
    ).result_rows[0][0]
    for key in ("slowest", "blocked"):
        panel = next(p for _, p in SQL_PANELS if p.key == key)
        sql = expand(with_database(panel.sql, traffic.database), _window(), search=trace_id)
        rows = backend.admin.query(sql).result_rows
        assert [r[1] for r in rows] == [trace_id]
    hostile = "x' OR 1=1 --"
    panel = next(p for _, p in SQL_PANELS if p.key == "slowest")
    sql = expand(with_database(panel.sql, traffic.database), _window(), search=hostile)
    assert backend.admin.query(sql).result_rows == []


def test_panels_read_only_known_tables() -> None:
    from exporters.clickhouse.migrations import MIGRATIONS, Ddl

    ddl = "\n".join(s for m in MIGRATIONS for s in m.render(Ddl(db="db")))
    import re

    for _, panel in SQL_PANELS:
        for table in re.findall(r"\{db\}\.([A-Za-z_0-9]+)", panel.sql):
            assert f"db.{table}" in ddl, f"{panel.key} reads unknown table {table}"


def test_unknown_macro_is_refused() -> None:
    with pytest.raises(ValueError):
        expand("SELECT $__unknown(x)", _window())
    with pytest.raises(ValueError):
        with_database("SELECT 1 FROM {db}.t", "x; DROP")
