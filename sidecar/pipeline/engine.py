"""The attempt engine: one place that decides primary, retries, fallbacks, circuits and ``then``.

The engine is transport-neutral. A *strategy* performs one attempt (send the
request to an upstream and judge the answer with the output guard) and returns an
:class:`Outcome`; the engine decides which attempts run, in what order, how many at
once, when the circuit breakers allow them, and what the final verdict is. The
proxy's unary and streaming flows and the SDK each supply a strategy.

Rounds, for one request:

1. the primary upstream with the model the client asked for;
2. up to ``retry.times`` retry rounds on the primary, each of ``retry.parallel``
   concurrent attempts (when the strategy can run attempts concurrently; streams
   cannot) of which the first acceptable answer wins and the others are cancelled.
   A round runs after an output verdict ``retry`` or, with
   ``retry.on_upstream_error``, after the upstream's own failure. After a format
   failure, ``retry.corrective`` adds a user message naming the rule and JSON path
   that failed (never the answer's content);
3. the ``fallback`` chain, one attempt per target, after a ``fallback`` verdict, an
   open circuit, or spent retries.

An outcome is *final* when its answer is acceptable (pass, flag, mask), blocked or
handed off by the policy, a 4xx (the client's fault), or already committed (a stream
whose bytes reached the client). When every round is spent, the route's ``then``
decides: ``block``, ``pass`` (the last answer, flagged as exhausted) or ``handoff``.

The engine never raises for upstream failures: the :class:`Verdict` says what to do
and carries the deciding outcome. Cancellation propagates (the client left).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from sidecar.errors import RequestError, UpstreamError
from sidecar.pipeline.circuit import BreakerSet, CircuitBreaker
from sidecar.policy import PASS, Decision, Route
from sidecar.record import AttemptRecord

T = TypeVar("T")

ACCEPTABLE = frozenset({"pass", "flag", "mask"})
UNCHECKED_REASON = "railwatch:unparseable_answer"


def unchecked_decision(route: Route) -> Decision:
    """The verdict on an answer the output detectors cannot read (the route's ``unchecked``)."""
    return Decision(route.unchecked, (UNCHECKED_REASON,))


def as_delivered(decision: Decision) -> Decision:
    """``decision`` on an answer the client gets: a ``retry`` or ``fallback`` verdict
    with nothing left to try (``then: pass``) is delivered flagged; others are kept."""
    if decision.action in ("retry", "fallback"):
        return Decision("flag", decision.reasons, decision.triggered)
    return decision


CIRCUIT_OPEN = "circuit_open"


@dataclass(frozen=True, slots=True)
class AttemptSpec:
    """What one attempt sends: to which upstream, with which model and extra messages."""

    kind: str  # "primary" | "retry" | "fallback"
    upstream: str  # a configured upstream name ("primary" or a fallback's)
    model: str | None = None  # override; None: as the client asked
    extra_messages: tuple[Mapping[str, Any], ...] = ()
    last_chance: bool = False  # no attempt can follow and ``then: pass``: deliver what comes


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """What one attempt produced, as the strategy judged it.

    ``status`` is the upstream's HTTP status (0 when none came), ``decision`` the
    output guard's verdict (``PASS`` when nothing was checked), ``error`` the
    upstream's failure (connect error, timeout, broken or error body), ``committed``
    that bytes already reached the client (nothing else can be tried), and
    ``result`` the transport's own payload (a response, a parsed answer).
    """

    status: int = 0
    decision: Decision = PASS
    error: RequestError | None = None
    committed: bool = False
    result: T | None = None

    @property
    def upstream_failed(self) -> bool:
        """The upstream's own failure: what circuit breakers count and retries may repeat."""
        if self.committed:
            return False
        if self.error is not None:
            return self.error.code != CIRCUIT_OPEN
        return self.status >= 500

    @property
    def answered(self) -> bool:
        return self.error is None and 0 < self.status < 500

    @property
    def final(self) -> bool:
        if self.committed:
            return True
        if self.error is not None or self.status >= 500 or self.status == 0:
            return False
        if self.status != 200:
            return True  # a 4xx: the client's fault, retrying cannot help
        return self.decision.action not in ("retry", "fallback")


class Strategy(Protocol[T]):
    """One transport's way to run an attempt. ``attempt`` may raise only on cancellation
    (the caller's); upstream failures come back as ``Outcome(error=...)``."""

    parallel: bool  # may attempts of one round run concurrently?

    async def attempt(self, spec: AttemptSpec) -> Outcome[T]: ...


class UpstreamCircuits(Protocol):
    def breakers(self, upstream: str) -> BreakerSet: ...


@dataclass(frozen=True, slots=True)
class Verdict(Generic[T]):
    """The engine's answer: ``deliver`` the outcome's result, ``block``, ``handoff``, or
    ``fail`` (no answer came; ``outcome.error`` or its 5xx is the client's answer)."""

    action: str  # "deliver" | "block" | "handoff" | "fail"
    outcome: Outcome[T]
    decision: Decision
    exhausted: bool = False  # rounds were spent and the route's ``then`` decided
    reason: str = "policy"  # why a hand-off: "policy" | "upstream_failure"


@dataclass(slots=True)
class AttemptLog:
    """What the engine did, for the trace: one record per attempt, and the retry count."""

    t0: float
    model: str | None
    records: list[AttemptRecord] = field(default_factory=list)
    retries: int = 0


def corrective_message(decision: Decision) -> dict[str, Any] | None:
    """A user message naming what a format check rejected (paths and rules, no content)."""
    problems = []
    for t in decision.triggered:
        if t.action != "retry":
            continue
        meta = t.finding.metadata
        where = meta.get("path") if isinstance(meta.get("path"), str) else None
        reason = meta.get("reason") if isinstance(meta.get("reason"), str) else None
        problem = t.finding.label.replace("_", " ")
        if where:
            problem += f" at {where}"
        if reason:
            problem += f": {reason}"
        problems.append(problem)
    if not problems:
        return None
    listed = "; ".join(dict.fromkeys(problems))
    return {
        "role": "user",
        "content": "Your previous answer was rejected by an automatic check (" + listed
        + "). Answer again, following the requested format exactly.",
    }


class Engine(Generic[T]):
    """Runs the attempts of one request for ``route`` through ``strategy``.

    ``endpoint`` scopes the circuit breakers (the canonical path); ``corrective``
    says whether the operation takes messages (chat), so a corrective instruction
    can be added; ``log`` receives the attempt records.
    """

    def __init__(
        self,
        route: Route,
        strategy: Strategy[T],
        circuits: UpstreamCircuits,
        endpoint: str,
        log: AttemptLog,
        *,
        corrective: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.route = route
        self.strategy = strategy
        self.circuits = circuits
        self.endpoint = endpoint
        self.log = log
        self.corrective = corrective and route.retry.corrective
        self.clock = clock

    async def run(self) -> Verdict[T]:
        route = self.route
        spec = route.retry
        fallbacks = [AttemptSpec("fallback", t.upstream or "primary", t.model)
                     for t in route.fallback]
        then_pass = route.then == "pass"
        outcome = await self._round(
            [AttemptSpec("primary", "primary",
                         last_chance=then_pass and not fallbacks and spec.times == 0)]
        )
        rounds_left = spec.times
        while not outcome.final and rounds_left > 0 and self._wants_retry(outcome):
            rounds_left -= 1
            extra: tuple[Mapping[str, Any], ...] = ()
            if self.corrective and outcome.decision.action == "retry":
                message = corrective_message(outcome.decision)
                extra = (message,) if message is not None else ()
            last = then_pass and not fallbacks and rounds_left == 0
            width = spec.parallel if self.strategy.parallel else 1
            outcome = await self._round(
                [AttemptSpec("retry", "primary", None, extra, last) for _ in range(width)]
            )
        for index, target in enumerate(fallbacks):
            if outcome.final:
                break
            last = then_pass and index == len(fallbacks) - 1
            outcome = await self._round([replace(target, last_chance=last)])
        return self._verdict(outcome)

    def _wants_retry(self, outcome: Outcome[T]) -> bool:
        if outcome.error is not None and outcome.error.code == CIRCUIT_OPEN:
            return False
        if outcome.upstream_failed or not outcome.answered:
            return self.route.retry.on_upstream_error
        return outcome.decision.action == "retry"

    def _verdict(self, outcome: Outcome[T]) -> Verdict[T]:
        route = self.route
        if outcome.committed or (outcome.answered and outcome.status != 200):
            return Verdict("deliver", outcome, outcome.decision)
        if not outcome.answered:  # no answer at all: the upstream failed every time
            if route.then == "handoff":
                return Verdict("handoff", outcome, outcome.decision, True, "upstream_failure")
            return Verdict("fail", outcome, outcome.decision)
        action = outcome.decision.action
        if action in ACCEPTABLE:
            return Verdict("deliver", outcome, outcome.decision)
        if action in ("block", "handoff"):
            return Verdict(action, outcome, outcome.decision)
        # retry/fallback verdicts with nothing left to try: ``then`` decides
        if route.then == "pass":
            return Verdict("deliver", outcome, as_delivered(outcome.decision), True)
        return Verdict(route.then, outcome, outcome.decision, True)

    async def _round(self, specs: Sequence[AttemptSpec]) -> Outcome[T]:
        if len(specs) == 1:
            return await self._one(specs[0])
        tasks = [asyncio.ensure_future(self._one(s)) for s in specs]
        best: Outcome[T] | None = None
        try:
            for next_done in asyncio.as_completed(tasks):
                done = await next_done
                if done.final and (done.decision.action in ACCEPTABLE or done.status != 200):
                    return done
                if best is None or (best.upstream_failed and not done.upstream_failed):
                    best = done
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert best is not None
        return best

    async def _one(self, spec: AttemptSpec) -> Outcome[T]:
        breaker = self.circuits.breakers(spec.upstream).get(self.endpoint)
        started = self.clock()
        outcome: Outcome[T] | None = None
        try:
            if not breaker.allow():
                outcome = Outcome(error=UpstreamError("the upstream's circuit is open",
                                                      code=CIRCUIT_OPEN))
            else:
                outcome = await self._judged(spec, breaker)
            return outcome
        finally:
            self._record(spec, started, outcome)

    async def _judged(self, spec: AttemptSpec, breaker: CircuitBreaker) -> Outcome[T]:
        try:
            outcome = await self.strategy.attempt(spec)
        except BaseException:  # cancelled (client gone, a sibling won): no verdict
            breaker.abandon()
            raise
        if outcome.upstream_failed:
            breaker.failure()
        else:
            breaker.success()
        return outcome

    def _record(self, spec: AttemptSpec, started: float, outcome: Outcome[T] | None) -> None:
        error: str | None
        if outcome is None:
            error, status, decision = "cancelled", 0, "pass"
        else:
            error = outcome.error.code if outcome.error is not None else None
            status, decision = outcome.status, outcome.decision.action
        self.log.records.append(
            AttemptRecord(
                kind=spec.kind,
                upstream=spec.upstream,
                model=spec.model or self.log.model,
                offset_ms=round((started - self.log.t0) * 1000, 4),
                duration_ms=round((self.clock() - started) * 1000, 4),
                status=status,
                error=error,
                decision=decision,
            )
        )
        if spec.kind == "retry":
            self.log.retries += 1
