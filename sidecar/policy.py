"""The policy: which detectors run where, and what their findings mean.

A policy file (YAML, validated at start-up) names detector instances and routes::

    detectors:                      # instances: name -> kind + options + run settings
      pii: {kind: pii, options: {ner: false}}
      toxicity: {kind: toxicity, run: {timeout_s: 2, on_error: fail_open}}
    routes:                         # first match wins, in file order
      - name: chat
        match: {paths: ["/v1/chat/*"], models: ["gpt-*"], tenants: ["*"]}
        input:
          - {detector: pii, action: mask}
        output:
          - {detector: toxicity, action: block, thresholds: {toxicity: 0.8, threat: 0.5}}
        block: {mode: error, message: "..."}

Detectors find; the policy decides (conventions: three layers). :func:`decide` turns
one stage's detection outcomes into a :class:`Decision`: a finding *triggers* a rule
when its label is selected by the rule (``labels``, default all) and its score is at
least the rule's threshold for that label (``thresholds[label]``, else
``threshold``). The stage's action is the most severe triggered action
(``block`` > ``handoff`` > ``fallback`` > ``retry`` > ``mask`` > ``flag`` > ``pass``).
A ``detector_error`` finding (a detector that failed under ``on_error:
fail_closed``) always triggers ``block``: failing closed means refusing.

``retry``, ``fallback`` and ``handoff`` are recorded as decisions; carrying them out
is the job of the actions stage (a later release), until then the request passes
with the decision on its trace.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from detectors.base import Finding
from detectors.runner import DETECTOR_ERROR_LABEL, DetectionOutcome, RunSettings
from sidecar.errors import ConfigError

Action = Literal["flag", "mask", "block", "retry", "fallback", "handoff"]
SEVERITY: Mapping[str, int] = {
    "pass": 0, "flag": 1, "mask": 2, "retry": 3, "fallback": 4, "handoff": 5, "block": 6,
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectorSpec(_Model):
    kind: str
    options: dict[str, Any] = Field(default_factory=dict)
    run: RunSettings = RunSettings()


class Rule(_Model):
    detector: str
    action: Action = "flag"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    thresholds: dict[str, float] = Field(default_factory=dict)
    labels: list[str] | None = None  # None: every label the detector emits

    def triggers(self, finding: Finding) -> bool:
        if finding.label == DETECTOR_ERROR_LABEL:
            return True
        if self.labels is not None and finding.label not in self.labels:
            return False
        return finding.score >= self.thresholds.get(finding.label, self.threshold)


class Match(_Model):
    paths: list[str] = Field(default_factory=lambda: ["*"])
    models: list[str] = Field(default_factory=lambda: ["*"])
    tenants: list[str] = Field(default_factory=lambda: ["*"])

    def holds(self, path: str, model: str | None, tenant: str | None) -> bool:
        return (
            _any_glob(self.paths, path)
            and _any_glob(self.models, model or "")
            and _any_glob(self.tenants, tenant or "")
        )


def _any_glob(patterns: Sequence[str], value: str) -> bool:
    return any(p == "*" or fnmatch.fnmatchcase(value, p) for p in patterns)


class BlockResponse(_Model):
    """How a block reaches the client: an OpenAI error, or a refusal answer."""

    mode: Literal["error", "refusal"] = "error"
    message: str = "The request was blocked by the content policy."
    status: int = Field(default=400, ge=400, le=599)


class RetrySpec(_Model):
    """Re-sending to the upstream: after a ``retry`` verdict, or an upstream error."""

    times: int = Field(default=1, ge=0, le=10)  # retry rounds after the first attempt
    parallel: int = Field(default=1, ge=1, le=8)  # attempts per round; the first passing wins
    corrective: bool = True  # format failures: tell the model what was invalid
    on_upstream_error: bool = True  # also retry connect errors, timeouts and 5xx


class FallbackTarget(_Model):
    """One step of the fallback chain: another upstream (by name), another model, or both."""

    upstream: str | None = None  # a name under ``fallback_upstreams`` in the settings
    model: str | None = None  # None: the model the client asked for


class StreamSpec(_Model):
    """How output detectors see streamed answers (see the stream guard's docstring).

    ``max_hold_ms``: the longest unchecked text waits before a check releases it
    (None: only sizes and boundaries decide). ``boundaries``: a sentence or clause
    end checks (and releases) sooner. ``early_headers``: send the response headers
    when the upstream's arrive instead of with the first window; a verdict before
    the first token can then only cut the stream (no retry, fallback, hand-off or
    error status).
    """

    mode: Literal["passthrough", "windowed", "buffered"] = "windowed"
    window_chars: int = Field(default=256, ge=16)
    window_tokens: int | None = Field(default=None, ge=1)
    overlap_chars: int = Field(default=64, ge=0)
    max_holdback_chars: int = Field(default=64, ge=0)
    max_hold_ms: float | None = Field(default=150.0, ge=0, le=60_000)
    boundaries: bool = True
    early_headers: bool = False


class Route(_Model):
    name: str
    match: Match = Match()
    input: list[Rule] = Field(default_factory=list)
    output: list[Rule] = Field(default_factory=list)
    block: BlockResponse = BlockResponse()
    retry: RetrySpec = RetrySpec()
    fallback: list[FallbackTarget] = Field(default_factory=list)
    then: Literal["handoff", "block", "pass"] = "block"  # once retries and fallbacks are spent
    # an answer the output detectors cannot read (not JSON): never passed silently
    unchecked: Literal["block", "handoff", "flag"] = "block"
    stream: StreamSpec = StreamSpec()

    def detectors(self, stage: str) -> list[str]:
        rules = self.input if stage == "input" else self.output
        return list(dict.fromkeys(r.detector for r in rules))


class Policy(_Model):
    version: Literal[1] = 1
    detectors: dict[str, DetectorSpec] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules_name_known_detectors(self) -> Policy:
        for i, route in enumerate(self.routes):
            for stage in ("input", "output"):
                for j, rule in enumerate(getattr(route, stage)):
                    if rule.detector not in self.detectors:
                        known = ", ".join(sorted(self.detectors)) or "none"
                        raise ValueError(
                            f"routes.{i}.{stage}.{j}.detector: unknown detector "
                            f"'{rule.detector}' (defined: {known})"
                        )
        return self

    def route_for(self, path: str, model: str | None, tenant: str | None) -> Route | None:
        for route in self.routes:
            if route.match.holds(path, model, tenant):
                return route
        return None


@dataclass(frozen=True, slots=True)
class Triggered:
    finding: Finding
    action: str


@dataclass(frozen=True, slots=True)
class Decision:
    """A stage's verdict: the action, why, and which findings triggered what."""

    action: str
    reasons: tuple[str, ...] = ()
    triggered: tuple[Triggered, ...] = ()

    @property
    def mask_findings(self) -> list[Finding]:
        return [t.finding for t in self.triggered if t.action == "mask"]


PASS = Decision("pass")


def decide(rules: Sequence[Rule], outcomes: Mapping[str, DetectionOutcome]) -> Decision:
    """One stage's decision from its rules and each detector's outcome for one text."""
    triggered: list[Triggered] = []
    action = "pass"
    reasons: dict[str, None] = {}
    for rule in rules:
        outcome = outcomes.get(rule.detector)
        if outcome is None:
            continue
        for finding in outcome.findings:
            if not rule.triggers(finding):
                continue
            act = "block" if finding.label == DETECTOR_ERROR_LABEL else rule.action
            triggered.append(Triggered(finding, act))
            reasons[f"{rule.detector}:{finding.label}"] = None
            if SEVERITY[act] > SEVERITY[action]:
                action = act
    if not triggered:
        return PASS
    return Decision(action, tuple(reasons), tuple(triggered))


def merge(decisions: Sequence[Decision]) -> Decision:
    """The decisions of several texts of one stage, as one."""
    live = [d for d in decisions if d.action != "pass"]
    if not live:
        return PASS
    action = max((d.action for d in live), key=SEVERITY.__getitem__)
    reasons = tuple(dict.fromkeys(r for d in live for r in d.reasons))
    return Decision(action, reasons, tuple(t for d in live for t in d.triggered))


def default_policy_path() -> Path:
    return Path(str(resources.files("sidecar").joinpath("policies/default.yaml")))


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and validate a policy file (the shipped default when ``path`` is None)."""
    source = Path(path) if path is not None else default_policy_path()
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"policy file {source} does not exist") from None
    except yaml.YAMLError as exc:
        from sidecar.settings import _yaml_problem

        raise ConfigError(f"policy file {source} is not valid YAML: {_yaml_problem(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy file {source} cannot be read: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"policy file {source} must hold a mapping at the top level")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            parts.append(f"invalid policy key '{key}' (in {source}): {msg}" if key
                         else f"invalid policy (in {source}): {msg}")
        raise ConfigError("; ".join(parts)) from None
