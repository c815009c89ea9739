"""``railwatch dashboards render``: Grafana JSON and Prometheus rules, written to files.

``--out DIR`` receives ``grafana/<board>.json``, ``prometheus/railwatch.rules.yml`` (plain
rule file) and ``prometheus/prometheusrule.yaml`` (Prometheus Operator). Datasource uids,
the ClickHouse database and the alert thresholds (a YAML file of
:class:`~sidecar.dashboard.rules.Thresholds` keys) are parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sidecar.dashboard.grafana import Params, write_all
from sidecar.dashboard.rules import Thresholds, prometheus_rule, rules_file
from sidecar.errors import ConfigError


def load_thresholds(path: str | None) -> Thresholds:
    """Thresholds from a YAML mapping (unknown keys refused); defaults without a file."""
    if path is None:
        return Thresholds()
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return Thresholds.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"thresholds file {path} cannot be read: {type(exc).__name__}") from None
    except ValidationError as exc:
        problems = "; ".join(f"'{'.'.join(str(p) for p in e['loc'])}': {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"invalid thresholds in {path}: {problems}") from None


def render(out: Path, params: Params, thresholds: Thresholds) -> list[Path]:
    """Write every file; returns the paths written."""
    written = write_all(out / "grafana", params)
    prom = out / "prometheus"
    prom.mkdir(parents=True, exist_ok=True)
    for name, text in (("railwatch.rules.yml", rules_file(thresholds)),
                       ("prometheusrule.yaml", prometheus_rule(thresholds))):
        (prom / name).write_text(text, encoding="utf-8")
        written.append(prom / name)
    return written


def _render(args: argparse.Namespace) -> int:
    try:
        params = Params(prometheus_uid=args.prometheus_uid, clickhouse_uid=args.clickhouse_uid,
                        database=args.database)
        from sidecar.dashboard.sql import with_database

        with_database("", params.database)
    except ValueError as exc:
        raise ConfigError(f"invalid --database: {exc}") from None
    for path in render(Path(args.out), params, load_thresholds(args.thresholds)):
        print(path)
    return 0


def add_parser(sub: Any) -> None:
    """Add ``dashboards`` to the ``railwatch`` command's subparsers."""
    dashboards = sub.add_parser("dashboards", help="render Grafana dashboards and alert rules",
                                description="Render Grafana dashboards and Prometheus rules.")
    dsub = dashboards.add_subparsers(dest="dashboards_command", metavar="ACTION")
    render_p = dsub.add_parser("render", help="write Grafana JSON and Prometheus rule files",
                               description="Write grafana/<board>.json, "
                               "prometheus/railwatch.rules.yml and prometheus/prometheusrule.yaml "
                               "(Prometheus Operator) into DIR.")
    render_p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    render_p.add_argument("--prometheus-uid", default="prometheus",
                          help="uid of the Prometheus datasource (default: prometheus)")
    render_p.add_argument("--clickhouse-uid", default="clickhouse",
                          help="uid of the ClickHouse datasource (default: clickhouse)")
    render_p.add_argument("--database", default="railwatch",
                          help="ClickHouse database of the traces (default: railwatch)")
    render_p.add_argument("--thresholds", metavar="FILE",
                          help="YAML file of alert thresholds (keys of Thresholds in sidecar/dashboard/rules.py)")
    render_p.set_defaults(func=_render)

    def show_help(_args: argparse.Namespace) -> int:
        dashboards.print_help()
        return 2

    dashboards.set_defaults(func=show_help)
