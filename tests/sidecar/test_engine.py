"""The attempt engine with an injected strategy and clock: every decision, no network."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from detectors.base import Finding
from sidecar.errors import UpstreamUnavailableError
from sidecar.pipeline.circuit import OPEN, BreakerSet, CircuitSettings
from sidecar.pipeline.engine import (
    AttemptLog,
    AttemptSpec,
    Engine,
    Outcome,
    corrective_message,
)
from sidecar.policy import PASS, Decision, Route, Triggered


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Circuits:
    def __init__(self, clock: Clock, **settings: Any) -> None:
        self.sets: dict[str, BreakerSet] = {}
        self.settings = CircuitSettings.model_validate(settings)
        self.clock = clock

    def breakers(self, upstream: str) -> BreakerSet:
        return self.sets.setdefault(upstream, BreakerSet(upstream, self.settings, self.clock))


Script = Callable[[AttemptSpec, int], Any]


class Scripted:
    """A strategy whose n-th attempt returns what ``script(spec, n)`` says (an Outcome,
    or a coroutine producing one)."""

    def __init__(self, script: Script, parallel: bool = True) -> None:
        self.script = script
        self.parallel = parallel
        self.specs: list[AttemptSpec] = []

    async def attempt(self, spec: AttemptSpec) -> Outcome[str]:
        self.specs.append(spec)
        result = self.script(spec, len(self.specs) - 1)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, Outcome)
        return result


OK = Outcome(status=200, decision=PASS, result="answer")
DOWN: Outcome[str] = Outcome(error=UpstreamUnavailableError("down"))


def _format_retry() -> Decision:
    finding = Finding("format", "json_schema_violation", 1.0, 0, 1,
                      {"path": "$.age", "reason": "expected integer"})
    return Decision("retry", ("format:json_schema_violation",), (Triggered(finding, "retry"),))


def _route(**kw: Any) -> Route:
    return Route.model_validate({"name": "r", **kw})


def _run(route: Route, strategy: Scripted, circuits: Circuits | None = None,
         endpoint: str = "/v1/chat/completions") -> tuple[Any, AttemptLog]:
    clock = Clock()
    log = AttemptLog(clock.now, "m")
    engine = Engine(route, strategy, circuits or Circuits(clock), endpoint, log,
                    corrective=True, clock=clock)
    return asyncio.run(engine.run()), log


def test_a_passing_primary_is_delivered() -> None:
    verdict, log = _run(_route(), Scripted(lambda s, n: OK))
    assert verdict.action == "deliver" and verdict.outcome.result == "answer"
    assert [(r.kind, r.upstream, r.status) for r in log.records] == [("primary", "primary", 200)]


def test_a_format_retry_carries_the_corrective_instruction() -> None:
    strategy = Scripted(lambda s, n: Outcome(200, _format_retry()) if n == 0 else OK)
    verdict, log = _run(_route(retry={"times": 2}), strategy)
    assert verdict.action == "deliver" and log.retries == 1
    extra = strategy.specs[1].extra_messages
    assert len(extra) == 1 and "json schema violation at $.age: expected integer" in extra[0]["content"]
    assert corrective_message(PASS) is None


def test_parallel_retries_take_the_first_passing_answer_and_cancel_the_rest() -> None:
    async def slow() -> Outcome[str]:
        await asyncio.sleep(30)
        return OK

    def script(spec: AttemptSpec, n: int) -> Any:
        if n == 0:
            return Outcome(200, _format_retry())
        return OK if n == 2 else slow()

    verdict, log = _run(_route(retry={"times": 1, "parallel": 3}), Scripted(script))
    assert verdict.action == "deliver"
    assert sorted(r.error or "-" for r in log.records if r.kind == "retry") == ["-", "cancelled", "cancelled"]


def test_streams_never_run_attempts_in_parallel() -> None:
    strategy = Scripted(lambda s, n: Outcome(200, _format_retry()) if n == 0 else OK, parallel=False)
    _run(_route(retry={"times": 1, "parallel": 4}), strategy)
    assert len(strategy.specs) == 2


@pytest.mark.parametrize(("on_error", "kinds"), [
    (True, ["primary", "retry", "fallback"]),
    (False, ["primary", "fallback"]),
])
def test_upstream_failures_are_retried_only_when_the_route_says(on_error: bool, kinds: list[str]) -> None:
    strategy = Scripted(lambda s, n: OK if s.kind == "fallback" else DOWN)
    route = _route(retry={"times": 1, "on_upstream_error": on_error},
                   fallback=[{"upstream": "backup", "model": "small"}])
    verdict, log = _run(route, strategy)
    assert verdict.action == "deliver"
    assert [s.kind for s in strategy.specs] == kinds
    assert (strategy.specs[-1].upstream, strategy.specs[-1].model) == ("backup", "small")


def test_a_client_error_is_final() -> None:
    strategy = Scripted(lambda s, n: Outcome(400, result="bad request"))
    verdict, _ = _run(_route(retry={"times": 3}), strategy)
    assert verdict.action == "deliver" and verdict.outcome.status == 400 and len(strategy.specs) == 1


@pytest.mark.parametrize(("then", "action", "decided"), [
    ("block", "block", "retry"), ("pass", "deliver", "flag"), ("handoff", "handoff", "retry"),
])
def test_spent_rounds_apply_then(then: str, action: str, decided: str) -> None:
    strategy = Scripted(lambda s, n: Outcome(200, _format_retry()))
    verdict, _ = _run(_route(retry={"times": 1}, then=then), strategy)
    assert (verdict.action, verdict.decision.action, verdict.exhausted) == (action, decided, True)


def test_no_answer_at_all_fails_or_hands_off() -> None:
    verdict, _ = _run(_route(retry={"times": 1}), Scripted(lambda s, n: DOWN))
    assert verdict.action == "fail" and verdict.outcome.error is not None
    verdict, _ = _run(_route(retry={"times": 1}, then="handoff"), Scripted(lambda s, n: DOWN))
    assert (verdict.action, verdict.reason) == ("handoff", "upstream_failure")


def test_block_and_handoff_verdicts_are_final() -> None:
    for action in ("block", "handoff"):
        strategy = Scripted(lambda s, n, a=action: Outcome(200, Decision(a, ("x:y",))))
        verdict, _ = _run(_route(retry={"times": 2}), strategy)
        assert verdict.action == action and len(strategy.specs) == 1


def test_last_chance_is_set_only_when_nothing_can_follow() -> None:
    strategy = Scripted(lambda s, n: Outcome(200, _format_retry()))
    _run(_route(retry={"times": 1}, then="pass"), strategy)
    assert [s.last_chance for s in strategy.specs] == [False, True]
    strategy = Scripted(lambda s, n: DOWN)
    _run(_route(retry={"times": 0}, then="pass", fallback=[{"model": "b"}]), strategy)
    assert [s.last_chance for s in strategy.specs] == [False, True]


def test_an_open_circuit_skips_the_upstream_and_retries() -> None:
    clock = Clock()
    circuits = Circuits(clock, failure_threshold=1, open_s=30)
    route = _route(retry={"times": 2}, fallback=[{"upstream": "backup"}])
    strategy = Scripted(lambda s, n: OK if s.upstream == "backup" else DOWN)
    _run(route, strategy, circuits)
    assert circuits.breakers("primary").get("/v1/chat/completions").state == OPEN
    strategy = Scripted(lambda s, n: OK if s.upstream == "backup" else DOWN)
    verdict, log = _run(route, strategy, circuits)
    assert [s.upstream for s in strategy.specs] == ["backup"]  # primary never called
    assert [r.error for r in log.records] == ["circuit_open", None]
    # another endpoint of the same upstream is unaffected
    strategy = Scripted(lambda s, n: OK)
    _run(route, strategy, circuits, endpoint="/v1/embeddings")
    assert [s.upstream for s in strategy.specs] == ["primary"]


def test_policy_rejections_are_not_upstream_failures() -> None:
    clock = Clock()
    circuits = Circuits(clock, failure_threshold=1)
    strategy = Scripted(lambda s, n: Outcome(200, Decision("block", ("toxicity:insult",))))
    for _ in range(5):
        _run(_route(), strategy, circuits)
    assert circuits.breakers("primary").get("/v1/chat/completions").allow()


def test_a_cancelled_probe_is_given_back() -> None:
    clock = Clock()
    circuits = Circuits(clock, failure_threshold=1, open_s=1)
    breaker = circuits.breakers("primary").get("/v1/chat/completions")
    breaker.failure()
    clock.now += 2  # half-open: one probe allowed

    async def hang() -> Outcome[str]:
        await asyncio.sleep(30)
        return OK

    async def go() -> None:
        log = AttemptLog(clock.now, None)
        engine = Engine(_route(), Scripted(lambda s, n: hang()), circuits,
                        "/v1/chat/completions", log, clock=clock)
        task = asyncio.ensure_future(engine.run())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log.records[0].error == "cancelled"

    asyncio.run(go())
    assert breaker.allow()  # the probe came back
