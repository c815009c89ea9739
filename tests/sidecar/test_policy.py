"""Policy files: validation, route matching and precedence, and decisions from findings."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.base import Finding
from detectors.runner import DetectionOutcome
from sidecar.errors import ConfigError
from sidecar.policy import Decision, Policy, Rule, decide, load_policy, merge

POLICY = """
detectors:
  pii: {kind: pii}
  tox: {kind: toxicity}
routes:
  - name: tenant-a-gpt
    match: {paths: ["/v1/chat/*"], models: ["gpt-*"], tenants: ["a"]}
    input: [{detector: pii, action: block}]
  - name: gpt
    match: {models: ["gpt-*"]}
    input: [{detector: pii, action: mask}]
  - name: fallback
    input: [{detector: tox, action: flag}]
"""


def f(label: str, score: float, detector: str = "pii") -> Finding:
    return Finding(detector, label, score, 0, 1)


def out(detector: str, *findings: Finding) -> DetectionOutcome:
    return DetectionOutcome(detector, tuple(findings), 0.1)


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    p = tmp_path / "p.yaml"
    p.write_text(POLICY)
    return load_policy(p)


@pytest.mark.parametrize(
    ("path", "model", "tenant", "route"),
    [
        ("/v1/chat/completions", "gpt-4o", "a", "tenant-a-gpt"),  # most specific first in file
        ("/v1/chat/completions", "gpt-4o", "b", "gpt"),
        ("/v1/completions", "gpt-4o", "a", "gpt"),  # path glob excludes it from the first
        ("/v1/chat/completions", "llama-3", "a", "fallback"),
        ("/v1/embeddings", None, None, "fallback"),  # no model: only "*" matches
    ],
)
def test_first_matching_route_wins(policy: Policy, path: str, model: str | None, tenant: str | None, route: str) -> None:
    matched = policy.route_for(path, model, tenant)
    assert matched is not None and matched.name == route


def test_no_route_when_nothing_matches(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("detectors: {pii: {kind: pii}}\nroutes:\n  - name: only-gpt\n    match: {models: [gpt-*]}\n")
    assert load_policy(p).route_for("/v1/chat/completions", "llama", None) is None


@pytest.mark.parametrize(
    ("rule", "findings", "action", "reasons"),
    [
        (Rule(detector="pii", action="mask"), [f("EMAIL_ADDRESS", 0.9)], "mask", ("pii:EMAIL_ADDRESS",)),
        (Rule(detector="pii", action="mask"), [f("EMAIL_ADDRESS", 0.4)], "pass", ()),  # under 0.5
        (Rule(detector="pii", action="mask", threshold=0.3), [f("EMAIL_ADDRESS", 0.4)], "mask", ("pii:EMAIL_ADDRESS",)),
        (Rule(detector="pii", action="block", labels=["US_SSN"]), [f("EMAIL_ADDRESS", 1.0)], "pass", ()),
        (Rule(detector="pii", action="block", thresholds={"URL": 0.99}), [f("URL", 0.9), f("IP_ADDRESS", 0.9)], "block", ("pii:IP_ADDRESS",)),
        (Rule(detector="pii", action="flag"), [f("detector_error", 1.0)], "block", ("pii:detector_error",)),
    ],
)
def test_decide(rule: Rule, findings: list[Finding], action: str, reasons: tuple[str, ...]) -> None:
    d = decide([rule], {"pii": out("pii", *findings)})
    assert d.action == action and d.reasons == reasons
    assert len(d.triggered) == len(reasons)


def test_most_severe_action_wins_and_merge() -> None:
    rules = [Rule(detector="pii", action="mask"), Rule(detector="tox", action="block", threshold=0.8)]
    d = decide(rules, {"pii": out("pii", f("EMAIL_ADDRESS", 1.0)), "tox": out("tox", f("insult", 0.9, "tox"))})
    assert d.action == "block" and d.reasons == ("pii:EMAIL_ADDRESS", "tox:insult")
    assert [t.action for t in d.triggered] == ["mask", "block"]
    assert d.mask_findings == [f("EMAIL_ADDRESS", 1.0)]
    merged = merge([Decision("pass"), Decision("mask", ("a",)), Decision("retry", ("b", "a"))])
    assert merged.action == "retry" and merged.reasons == ("a", "b")
    assert merge([Decision("pass")]).action == "pass"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("routes: [{name: r, input: [{detector: nope}]}]", "unknown detector 'nope'"),
        ("detectors: {x: {kind: pii}}\nroutes: [{name: r, input: [{detector: x, action: explode}]}]", "routes.0.input.0.action"),
        ("detectors: {x: {kind: pii, colour: red}}", "detectors.x.colour"),
        ("detectors: {x: {kind: pii, run: {on_error: maybe}}}", "detectors.x.run.on_error"),
        ("routes: [{name: r, input: [{detector: x, threshold: 2}]}]\ndetectors: {x: {kind: pii}}", "threshold"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_bad_policies_name_the_key_and_file(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_policy(p)
    assert needle in str(info.value) and str(p) in str(info.value)


def test_shipped_default_policy_is_valid() -> None:
    policy = load_policy()
    route = policy.route_for("/v1/chat/completions", "any-model", None)
    assert route is not None
    assert {r.detector for r in route.input} == {"secrets", "pii", "toxicity"}
    assert any(r.detector == "toxicity" and r.action == "block" for r in route.output)


def test_unknown_detector_kind_fails_at_app_build(tmp_path: Path) -> None:
    from sidecar.app import build_guard

    p = tmp_path / "p.yaml"
    p.write_text("detectors: {x: {kind: no-such-kind}}\n")
    with pytest.raises(ConfigError, match="no-such-kind"):
        build_guard(load_policy(p))
    p.write_text("detectors: {x: {kind: pii, options: {entitties: [EMAIL_ADDRESS]}}}\n")
    with pytest.raises(ConfigError, match="entitties"):
        build_guard(load_policy(p))
