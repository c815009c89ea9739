"""Every PromQL expression (dashboard panels and rules) parses with promtool and names only
metrics that a running sidecar's /metrics really exposes after traffic with blocks,
masks, streams and a hand-off. The names come from the live exposition, not a list."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sidecar.dashboard import panels
from sidecar.dashboard.rules import rule_groups
from tests.dashboards.traffic import Traffic

_FUNCS_AND_WORDS = {
    "sum", "by", "rate", "increase", "histogram_quantile", "max", "min", "offset", "and", "or",
    "le", "without", "on", "ignoring", "bool", "nan", "inf",
}
_IDENT = re.compile(r"(?<![\w:\"'.$])([a-zA-Z_:][a-zA-Z0-9_:]*)")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
_DURATION = re.compile(r"\[[^\]]*\]")


def exposed_names(metrics_text: str) -> set[str]:
    """Every series name the exposition declares: samples, and families without samples
    yet (a counter gets ``_total``, a histogram its ``_bucket/_sum/_count``)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names |= {s.name for s in family.samples}
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (labels, functions, keywords left out)."""
    text = _STRINGS.sub('""', expr)
    text = _GROUPING.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _DURATION.sub("", text)
    text = text.replace("$__rate_interval", "")
    return {m for m in _IDENT.findall(text)
            if m not in _FUNCS_AND_WORDS and not re.fullmatch(r"\d.*", m)}


def _expressions() -> list[tuple[str, str]]:
    out = [(f"{b.uid}/{p.key}/{i}", expr) for b, p in panels.prom_panels()
           for i, (_, expr) in enumerate(p.targets)]
    out += [(r.get("alert") or r["record"], r["expr"]) for g in rule_groups() for r in g["rules"]]
    return out


def _recorded() -> set[str]:
    return {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.9, sum by (le, model) (rate(a_bucket{x="rate(b)"}[5m] '
            'offset 1d))) > 2 * on (job) c:rec and d')
    assert metric_names(expr) == {"a_bucket", "c:rec", "d"}


def test_every_expression_names_live_metrics(traffic: Traffic) -> None:
    live = exposed_names(traffic.metrics_text)
    assert "railwatch_requests_total" in live and "railwatch_handoffs_open" in live
    known = live | _recorded()
    missing = {(where, name) for where, expr in _expressions() for name in metric_names(expr)
               if name not in known}
    assert not missing, f"expressions name metrics /metrics does not expose: {sorted(missing)}"


def test_every_panel_expression_parses(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found (apt-get install -y prometheus; .ci/run installs it)")
    rules = [{"record": f"railwatch:dashboard_check_{i}",
              "expr": expr.replace("$__rate_interval", "5m")}
             for i, (_, expr) in enumerate(_expressions())]
    (tmp_path / "panels.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    out = subprocess.run([promtool, "check", "rules", str(tmp_path / "panels.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(
        {"groups": [{"name": "bad", "rules": [{"record": "x:y", "expr": "sum(rate(a[5m])"}]}]}))
    bad = subprocess.run([promtool, "check", "rules", str(tmp_path / "bad.yml")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0  # the check can fail


_SELECTOR = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\{([^}]*)\}")
_EQUALS = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"([^"]*)"')


def _code_strings() -> str:
    root = Path(__file__).resolve().parents[2]
    return "\n".join(p.read_text() for pkg in ("sidecar", "exporters", "detectors")
                     for p in (root / pkg).rglob("*.py"))


def test_equality_matchers_name_live_labels_and_values(traffic: Traffic) -> None:
    """``name{label="value"}``: the label exists on that metric, and the traffic produced
    the value (``le="2.5"`` is a real bucket, ``decision="block"`` a real decision) or,
    for outcomes the traffic cannot provoke (a failed drift run), the code spells it."""
    code = _code_strings()
    seen: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(traffic.metrics_text):
        for sample in family.samples:
            labels = seen.setdefault(sample.name, {})
            for key, value in sample.labels.items():
                labels.setdefault(key, set()).add(value)
    checked = 0
    for where, expr in _expressions():
        for name, body in _SELECTOR.findall(expr):
            if name not in seen:
                continue  # declared without samples yet (detector errors...)
            for label, value in _EQUALS.findall(body):
                assert label in seen[name], f"{where}: {name} has no label {label}"
                assert value in seen[name][label] or f'"{value}"' in code, (
                    f"{where}: {name}{{{label}={value!r}}} neither seen nor in the code")
                checked += 1
    assert checked >= 5
