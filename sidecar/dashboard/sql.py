"""The SQL of ClickHouse panels: Grafana macros, and their expansion for the built-in page.

Panel SQL is written once, for the official Grafana ClickHouse datasource
(``grafana-clickhouse-datasource``), with these macros only:

- ``{db}``: the database name, filled in at render time (``railwatch dashboards
  render --database``, or the sidecar's own database for ``/dashboard``);
- ``$__timeFilter(col)``: ``col`` within the dashboard's time range;
- ``$__timeInterval(col)``: ``col`` rounded down to the panel's interval;
- ``${search:sqlstring}``: the traces dashboard's search box, as a quoted string.

:func:`expand` replaces the macros exactly as the datasource does, so the built-in
page and the tests run the very text Grafana runs. Pure functions; nothing here
does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MACROS = ("$__timeFilter", "$__timeInterval", "${search:sqlstring}")
_COLUMN = r"([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)"
_TIME_FILTER = re.compile(r"\$__timeFilter\(" + _COLUMN + r"\)")
_TIME_INTERVAL = re.compile(r"\$__timeInterval\(" + _COLUMN + r"\)")
_LEFT = re.compile(r"\$\{?[A-Za-z_]")


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A query's time range: epoch seconds, and the bucket width in seconds."""

    start_s: float
    end_s: float
    interval_s: int = 60


def quote(value: str) -> str:
    """A ClickHouse string literal (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def with_database(sql: str, database: str) -> str:
    """``sql`` with ``{db}`` filled in; ``database`` must be a plain identifier."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise ValueError(f"invalid database name {database!r}")
    return sql.replace("{db}", database)


def expand(sql: str, window: TimeRange, search: str = "") -> str:
    """Grafana's macros replaced for ``window``. Raises ``ValueError`` when a macro
    this module does not know is left over (the built-in page could not run it)."""
    start, end = f"{window.start_s:.3f}", f"{window.end_s:.3f}"
    out = _TIME_FILTER.sub(
        lambda m: (f"{m.group(1)} >= toDateTime64({start}, 3) AND "
                   f"{m.group(1)} <= toDateTime64({end}, 3)"),
        sql,
    )
    out = _TIME_INTERVAL.sub(
        lambda m: f"toStartOfInterval(toDateTime({m.group(1)}), "
                  f"INTERVAL {max(1, int(window.interval_s))} second)",
        out,
    )
    out = out.replace("${search:sqlstring}", quote(search))
    if _LEFT.search(out):
        raise ValueError("unexpanded macro in panel SQL")
    return out
