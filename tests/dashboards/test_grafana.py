"""The Grafana dashboards: rendered by the CLI with parameters, committed as rendered,
and well-formed (datasources, unique ids, grid inside 24 columns, every panel has a query)."""

from __future__ import annotations

import json
from pathlib import Path

from sidecar.cli import main
from sidecar.dashboard.grafana import CLICKHOUSE_TYPE, PROMETHEUS_TYPE, Params, render_all
from sidecar.dashboard.panels import BOARDS

ROOT = Path(__file__).resolve().parents[2]


def test_committed_json_is_the_default_render() -> None:
    for name, text in render_all(Params()).items():
        assert (ROOT / "dashboards" / "grafana" / name).read_text() == text, name


def test_cli_renders_with_parameters(tmp_path: Path, capsys: object) -> None:
    thresholds = tmp_path / "t.yaml"
    thresholds.write_text("block_ratio: 0.07\n")
    rc = main(["dashboards", "render", "--out", str(tmp_path / "out"), "--prometheus-uid", "prom-x",
               "--clickhouse-uid", "ch-y", "--database", "rw_prod", "--thresholds", str(thresholds)])
    assert rc == 0
    boards = {p.name: json.loads(p.read_text()) for p in (tmp_path / "out" / "grafana").glob("*.json")}
    assert set(boards) == set(render_all(Params()))
    assert {"overview.json", "guardrails.json", "traces.json", "feedback.json"} <= set(boards)
    for board in boards.values():
        current = {v["name"]: v["current"]["value"] for v in board["templating"]["list"]}
        assert current["prometheus"] == "prom-x" and current["clickhouse"] == "ch-y"
        for panel in board["panels"]:
            for target in panel["targets"]:
                if "rawSql" in target:
                    assert "{db}" not in target["rawSql"] and "rw_prod." in target["rawSql"]
    rules = (tmp_path / "out" / "prometheus" / "railwatch.rules.yml").read_text()
    assert "> 0.07" in rules
    assert main(["dashboards", "render", "--out", str(tmp_path / "x"), "--database", "a;b"]) == 2
    thresholds.write_text("no_such_threshold: 1\n")
    assert main(["dashboards", "render", "--out", str(tmp_path / "y"),
                 "--thresholds", str(thresholds)]) == 2


def test_boards_are_well_formed() -> None:
    for name, text in render_all(Params()).items():
        board = json.loads(text)
        assert board["uid"] and board["title"] and board["panels"], name
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24
            assert panel["datasource"]["type"] in (PROMETHEUS_TYPE, CLICKHOUSE_TYPE)
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["type"] == panel["datasource"]["type"]
                assert ("expr" in target) != ("rawSql" in target)
    kinds = {type(p).__name__ for b in BOARDS for p in b.panels}
    assert kinds == {"SqlPanel", "PromPanel"}  # live from Prometheus, history from ClickHouse
