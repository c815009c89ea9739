"""Grafana dashboard JSON from the panel catalog (:mod:`.panels`).

Built as plain typed Python data, serialised with sorted keys so the committed JSON
diffs cleanly. Datasources are referenced by uid (``prometheus_uid``,
``clickhouse_uid``) and also exposed as dashboard variables of their types, so an
import can repoint them; the ClickHouse database is written into the SQL.

Live panels use the Prometheus datasource; history and drill-down the official
ClickHouse datasource (``grafana-clickhouse-datasource``, raw SQL editor, format 0 =
time series from long rows ``time, series, value``; format 1 = table).
Pure functions; :func:`write_all` is the only one that writes files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.dashboard.panels import BOARDS, Board, PromPanel, SqlPanel
from sidecar.dashboard.sql import with_database

CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
PROMETHEUS_TYPE = "prometheus"
SCHEMA_VERSION = 39
_WIDTH = {"timeseries": 12, "table": 24, "stat": 6}
_HEIGHT = {"timeseries": 8, "table": 9, "stat": 5}


@dataclass(frozen=True, slots=True)
class Params:
    """What an installation changes: datasource uids and the ClickHouse database."""

    prometheus_uid: str = "prometheus"
    clickhouse_uid: str = "clickhouse"
    database: str = "railwatch"


def _ds(kind: str) -> dict[str, str]:
    return {"type": kind, "uid": "${prometheus}" if kind == PROMETHEUS_TYPE else "${clickhouse}"}


def _targets(panel: SqlPanel | PromPanel, params: Params) -> list[dict[str, Any]]:
    if isinstance(panel, PromPanel):
        return [{"datasource": _ds(PROMETHEUS_TYPE), "expr": expr, "legendFormat": legend,
                 "refId": chr(ord("A") + i), "range": panel.kind != "table",
                 "instant": panel.kind == "table",
                 **({"format": "table"} if panel.kind == "table" else {})}
                for i, (legend, expr) in enumerate(panel.targets)]
    return [{"datasource": _ds(CLICKHOUSE_TYPE), "editorType": "sql",
             "format": 0 if panel.kind == "timeseries" else 1,
             "queryType": "timeseries" if panel.kind == "timeseries" else "table",
             "rawSql": with_database(panel.sql, params.database), "refId": "A"}]


def panel_json(panel: SqlPanel | PromPanel, params: Params, pid: int, x: int, y: int
               ) -> dict[str, Any]:
    """One Grafana panel at grid position (x, y)."""
    kind = panel.kind
    datasource = _ds(PROMETHEUS_TYPE if isinstance(panel, PromPanel) else CLICKHOUSE_TYPE)
    defaults: dict[str, Any] = {"unit": panel.unit}
    if isinstance(panel, SqlPanel) and kind == "timeseries":
        defaults["displayName"] = "${__field.labels.series}"
    out: dict[str, Any] = {
        "id": pid, "type": kind, "title": panel.title, "description": panel.description,
        "datasource": datasource,
        "gridPos": {"h": _HEIGHT[kind], "w": _WIDTH[kind], "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "targets": _targets(panel, params),
    }
    if kind == "timeseries":
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom",
                                     "showLegend": True},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                            "values": False}, "textMode": "value_and_name"}
    else:
        out["options"] = {"showHeader": True, "cellHeight": "sm"}
        if isinstance(panel, PromPanel):
            out["transformations"] = [{"id": "merge", "options": {}}]
    return out


def _variables(board: Board, params: Params) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"name": "prometheus", "label": "Prometheus", "type": "datasource",
         "query": PROMETHEUS_TYPE, "current": {"text": params.prometheus_uid,
                                               "value": params.prometheus_uid}},
        {"name": "clickhouse", "label": "ClickHouse", "type": "datasource",
         "query": CLICKHOUSE_TYPE, "current": {"text": params.clickhouse_uid,
                                               "value": params.clickhouse_uid}},
    ]
    if any("${search:sqlstring}" in p.sql for p in board.panels if isinstance(p, SqlPanel)):
        out.append({"name": "search", "label": "trace, request or hand-off id",
                    "type": "textbox", "query": "", "current": {"text": "", "value": ""}})
    return out


def dashboard_json(board: Board, params: Params) -> dict[str, Any]:
    """A complete dashboard (import-ready: ``id`` null, stable ``uid``)."""
    panels: list[dict[str, Any]] = []
    x = y = row_h = 0
    for i, panel in enumerate(board.panels, start=1):
        w, h = _WIDTH[panel.kind], _HEIGHT[panel.kind]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        panels.append(panel_json(panel, params, i, x, y))
        x, row_h = x + w, max(row_h, h)
    links = [{"title": b.title, "type": "link", "url": f"/d/{b.uid}", "targetBlank": False}
             for b in BOARDS if b.uid != board.uid]
    return {
        "id": None, "uid": board.uid, "title": board.title, "description": board.description,
        "tags": ["railwatch"], "timezone": "utc", "editable": True,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"}, "graphTooltip": 1,
        "templating": {"list": _variables(board, params)},
        "annotations": {"list": []}, "links": links, "panels": panels,
    }


def render_all(params: Params) -> dict[str, str]:
    """File name -> JSON text for every board (sorted keys, trailing newline)."""
    return {f"{b.uid.removeprefix('railwatch-')}.json":
            json.dumps(dashboard_json(b, params), indent=2, sort_keys=True) + "\n"
            for b in BOARDS}


def write_all(out_dir: Path, params: Params) -> list[Path]:
    """Write every board's JSON into ``out_dir`` (created); returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all(params).items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
