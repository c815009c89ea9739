"""Per-request state: the typed ``RequestContext`` that travels through the pipeline.

One context is created per request by the ingress stage, owned by that request's
task alone (never shared, never global) and turned into a frozen
:class:`~sidecar.record.TraceRecord` by the emit stage. Timings are taken with
``time.perf_counter()`` (seconds) and converted to milliseconds only in the record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from sidecar.policy import SEVERITY
from sidecar.privacy import CheckedText
from sidecar.record import AttemptRecord, DecisionRecord, DetectorRunRecord, FindingRecord


@dataclass(slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    source: str | None = None  # "upstream" | "counted"


@dataclass(slots=True)
class AnswerFacts:
    """What one upstream answer said, kept apart until its attempt is chosen.

    Each attempt of the attempt engine observes its answer into its own facts; the
    context :meth:`~RequestContext.adopt` s the facts of the attempt whose answer the
    client gets, so discarded attempts never leak into the trace.
    """

    model_served: str | None = None
    system_fingerprint: str | None = None
    response_id: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    first_token_at: float | None = None
    last_token_at: float | None = None
    output_parts: list[str] = field(default_factory=list)
    upstream_done_at: float | None = None

    def mark_token(self, now: float | None = None) -> None:
        """Record that output content arrived from the upstream (streams)."""
        now = time.perf_counter() if now is None else now
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now


@dataclass(slots=True)
class RequestContext:
    request_id: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    trace_flags: str
    method: str
    path: str
    route: str
    upstream: str
    t0: float = field(default_factory=time.perf_counter)  # perf_counter at arrival
    started_at: float = field(default_factory=time.time)  # epoch seconds at arrival

    # parsed request (None for passthrough / unparsed bodies)
    body: dict[str, Any] | None = None
    model_requested: str | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    n: int | None = None
    tenant: str | None = None
    user: str | None = None
    conversation_id: str | None = None

    # response facts
    status: int = 0
    error_type: str | None = None
    client_disconnected: bool = False
    model_served: str | None = None
    system_fingerprint: str | None = None
    response_id: str | None = None
    finish_reasons: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    upstream_attempts: int = 0

    # perf_counter timestamps (seconds); None until reached
    upstream_sent_at: float | None = None
    upstream_done_at: float | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    ended_at: float | None = None

    # text seen (raw); the emit stage applies the privacy setting
    prompt_text: str | None = None
    output_parts: list[str] = field(default_factory=list)

    # guardrails
    findings: list[FindingRecord] = field(default_factory=list)
    detector_runs: list[DetectorRunRecord] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)
    # the final action: read through ``decision``, written only by escalate/settle/override
    _decision: str = field(default="pass", init=False)
    _overridden: bool = field(default=False, init=False)  # override() decided: settle keeps it
    retries: int = 0
    attempts: list[AttemptRecord] = field(default_factory=list)
    handoff_id: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    # texts the guard checked with every privacy detector, and their findings: stored
    # text is masked from these instead of running the detectors again
    privacy_checked: list[CheckedText] = field(default_factory=list)

    # --- the final decision: one place writes it ----------------------------------------

    @property
    def decision(self) -> str:
        """The request's final action, a :data:`~sidecar.policy.SEVERITY` key (``pass``
        until a stage decides otherwise). Read-only: it changes only through
        :meth:`escalate`, :meth:`settle` and :meth:`override`."""
        return self._decision

    def escalate(self, action: str) -> None:
        """A guard stage decided ``action`` (input, an attempt's output, a stream window):
        the final decision rises to it when it is more severe (``SEVERITY``), never falls.
        Provisional: :meth:`settle` and :meth:`override` replace it. Raises ``KeyError``
        for an action the policy does not know."""
        if SEVERITY[action] > SEVERITY[self._decision]:
            self._decision = action

    def settle(self, *actions: str) -> None:
        """The chosen outcome is delivered: the most severe of ``actions`` (the input
        stage's and the delivered attempt's output verdicts: a unary answer's, or each
        window of a stream's) *replaces* what stages escalated, so the verdict of a
        discarded attempt (a retried answer) is not the request's. An :meth:`override`
        already made stays (a stream delivered in part, then cut, is ``block``).
        Raises ``KeyError`` for an unknown action, ``ValueError`` for none."""
        action = max(actions, key=SEVERITY.__getitem__)
        if not self._overridden:
            self._decision = action

    def override(self, action: Literal["block", "handoff"]) -> None:
        """The sidecar itself ended the request: ``block`` (a block response, a cut
        stream, a rewrite that could not be applied) or ``handoff`` (a person takes
        over). *Replaces* the decision whatever its severity: a hand-off taken after an
        input block is a hand-off. Raises ``ValueError`` for another action."""
        if action not in ("block", "handoff"):
            raise ValueError(f"not a final override: {action!r}")
        self._decision = action
        self._overridden = True

    def fail(self, status: int, error_type: str) -> None:
        self.status = status
        self.error_type = error_type

    def mark_token(self, now: float | None = None) -> None:
        """Record that output content was sent to the client (streams)."""
        now = time.perf_counter() if now is None else now
        if self.first_token_at is None:
            self.first_token_at = now
        self.last_token_at = now

    def adopt(self, facts: AnswerFacts) -> None:
        """Take the chosen attempt's answer facts. What the sidecar itself already set
        for the client (a release time, an appended ``content_filter``) is kept."""
        self.model_served = facts.model_served or self.model_served
        self.system_fingerprint = facts.system_fingerprint or self.system_fingerprint
        self.response_id = facts.response_id or self.response_id
        self.finish_reasons = [*facts.finish_reasons, *self.finish_reasons]
        self.usage = facts.usage
        if self.first_token_at is None and self.last_token_at is None:
            # the upstream's arrival times, only as a pair and only when the transport
            # marked no client-side times itself (never one of each: TPOT would mix clocks)
            self.first_token_at, self.last_token_at = facts.first_token_at, facts.last_token_at
        if facts.output_parts:
            self.output_parts = list(facts.output_parts)
        if facts.upstream_done_at is not None:
            self.upstream_done_at = facts.upstream_done_at

    @property
    def output_text(self) -> str | None:
        return "".join(self.output_parts) if self.output_parts else None
