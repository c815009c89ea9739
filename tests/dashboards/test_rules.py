"""The Prometheus rules: promtool checks them and runs a firing and a quiet unit test of
every alert; the committed files are exactly what the renderer writes; every alert has
severity, summary, description, runbook_url and a runbook section."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sidecar.dashboard.rules import Thresholds, alert_names, prometheus_rule, rule_groups, rules_file
from tests.dashboards.rule_cases import CASES, INTERVALS, promtool_tests

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "dashboards" / "prometheus"
TESTS = {i: PROM / "tests" / f"railwatch-{i}.test.yml" for i in INTERVALS}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found (apt-get install -y prometheus; .ci/run installs it)")
    return path


def test_committed_rules_are_rendered_from_the_code() -> None:
    assert (PROM / "railwatch.rules.yml").read_text() == rules_file()
    assert (PROM / "prometheusrule.yaml").read_text() == prometheus_rule()
    for interval, path in TESTS.items():
        expected = promtool_tests("../railwatch.rules.yml", interval=interval)
        if os.environ.get("RAILWATCH_UPDATE_RULE_TESTS"):
            path.parent.mkdir(exist_ok=True)
            path.write_text(expected)
        assert path.read_text() == expected


def test_promtool_checks_the_rules() -> None:
    out = subprocess.run([_promtool(), "check", "rules", str(PROM / "railwatch.rules.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass() -> None:
    out = subprocess.run([_promtool(), "test", "rules", *map(str, TESTS.values())],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]


def test_promtool_catches_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: a quiet case expected to fire is reported."""
    shutil.copy(PROM / "railwatch.rules.yml", tmp_path / "railwatch.rules.yml")
    doc = yaml.safe_load(promtool_tests("railwatch.rules.yml"))
    quiet = next(t for t in doc["tests"] if t["name"].endswith("stays quiet"))
    quiet["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"severity": "critical"}}]
    doc["tests"] = [quiet]
    (tmp_path / "t.yml").write_text(yaml.safe_dump(doc))
    out = subprocess.run([_promtool(), "test", "rules", str(tmp_path / "t.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0


def test_every_alert_is_tested_firing_and_quiet() -> None:
    fires = {c.alert for c in CASES if c.fires is not None}
    quiet = {c.alert for c in CASES if c.fires is None}
    assert fires == quiet == set(alert_names())


def test_every_alert_is_complete_and_has_a_runbook_section() -> None:
    runbook = (ROOT / "dashboards" / "RUNBOOK.md").read_text()
    anchors = set(re.findall(r"^## (\w+)", runbook, re.M))
    for group in rule_groups():
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            assert rule["labels"]["severity"] in ("critical", "warning")
            assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
            assert rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())
            assert rule["alert"] in anchors, f"no runbook section for {rule['alert']}"


def test_thresholds_are_parameters() -> None:
    strict = Thresholds(block_ratio=0.05, handoff_backlog=3, overhead_p99_s=0.01)
    text = rules_file(strict)
    assert "> 0.05" in text and "> 3" in text and "> 0.01" in text
    assert text != rules_file()
    with pytest.raises(ValueError):
        Thresholds(latency_slo_seconds=2.0)  # not a bucket bound: the SLI could not be computed
