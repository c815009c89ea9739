"""One guarded call in-process: input guard, the attempt engine, output guard, a trace.

The same pieces as the proxy (:class:`~sidecar.pipeline.guard.Guard`'s stages, the
attempt engine, the emitter) with a function call where the proxy has an upstream
request. A :class:`Shape` says where the text is: :class:`OpenAIShape` reads and
rewrites the ``openai`` client's arguments and results, :class:`TextShape` the
arguments and return value of any function.

Checks run on the SDK's loop (:mod:`sidecar.sdk._loop`); the user's function runs
where it was called (sync functions in the caller's thread, coroutines on the
caller's loop). Violations raise :class:`~sidecar.errors.GuardrailViolation`,
which never carries text.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sidecar import semconv
from sidecar.context import AnswerFacts, RequestContext
from sidecar.errors import GuardrailViolation, RailwatchError, UpstreamError
from sidecar.masking import Masker
from sidecar.pipeline.circuit import BreakerSet
from sidecar.pipeline.engine import AttemptLog, AttemptSpec, Engine, Outcome, Verdict
from sidecar.pipeline.observe import observe_answer
from sidecar.policy import Decision, FallbackTarget, Route
from sidecar.sdk import tracing
from sidecar.sdk.runtime import SdkRuntime
from sidecar.sdk.shapes import Shape


@dataclass(slots=True)
class CallAnswer:
    result: Any
    facts: AnswerFacts
    changed: bool = False
    doc: dict[str, Any] | None = None
    exception: BaseException | None = None  # what the function raised


class CallCircuits:
    """Breakers per guarded function (``upstream`` names are function names here)."""

    def __init__(self, runtime: SdkRuntime) -> None:
        self.runtime = runtime
        self.sets: dict[str, BreakerSet] = {}

    def breakers(self, upstream: str) -> BreakerSet:
        found = self.sets.get(upstream)
        if found is None:
            assert self.runtime.settings is not None
            found = self.sets[upstream] = BreakerSet(upstream, self.runtime.settings.circuit)
        return found


@dataclass(slots=True)
class GuardedFunction:
    """What ``@guard`` or ``wrap_openai`` knows about a function, built once."""

    name: str
    fn: Callable[..., Any]
    shape: Shape
    route_name: str | None = None
    path: str = "/v1/chat/completions"
    fallbacks: Sequence[Callable[..., Any]] = ()
    circuits: dict[int, CallCircuits] = field(default_factory=dict)  # per runtime

    def route(self, rt: SdkRuntime, model: str | None) -> Route:
        route = rt.route(self.route_name, self.path, model)
        targets = [t for t in route.fallback if t.upstream in (None, "primary")]
        targets += [FallbackTarget(upstream=f"fallback:{i}") for i in range(len(self.fallbacks))]
        return route.model_copy(update={"fallback": targets})

    def target(self, spec: AttemptSpec) -> Callable[..., Any]:
        if spec.upstream.startswith("fallback:"):
            return self.fallbacks[int(spec.upstream.split(":", 1)[1])]
        return self.fn

    def circuits_for(self, rt: SdkRuntime) -> CallCircuits:
        found = self.circuits.get(id(rt))
        if found is None:
            self.circuits.clear()  # one runtime at a time; a new one starts afresh
            found = self.circuits[id(rt)] = CallCircuits(rt)
        return found


class CallStrategy:
    """The engine's strategy for a function call: call it, judge the answer."""

    parallel = False  # a function may not be safe to call concurrently with itself

    def __init__(self, gf: GuardedFunction, rt: SdkRuntime, ctx: RequestContext, route: Route,
                 args: tuple[Any, ...], kwargs: dict[str, Any], body: dict[str, Any],
                 masker: Masker) -> None:
        self.gf, self.rt, self.ctx, self.route = gf, rt, ctx, route
        self.args, self.kwargs, self.body, self.masker = args, kwargs, body, masker
        self.restore = masker.snapshot()[0] if len(masker) else None

    async def attempt(self, spec: AttemptSpec) -> Outcome[CallAnswer]:
        body = self.body
        if spec.model is not None or spec.extra_messages:
            body = copy.deepcopy(body)
            if spec.model is not None:
                body["model"] = spec.model
            if spec.extra_messages and isinstance(body.get("messages"), list):
                body["messages"] = [*body["messages"], *map(dict, spec.extra_messages)]
        args, kwargs = self.gf.shape.with_body(self.args, self.kwargs, body)
        ctx = self.ctx
        ctx.upstream_attempts += 1
        if ctx.upstream_sent_at is None:
            ctx.upstream_sent_at = time.perf_counter()
        try:
            result = self.gf.target(spec)(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # noqa: BLE001 - the function's failure is an upstream failure
            answer = CallAnswer(None, AnswerFacts(upstream_done_at=time.perf_counter()), exception=exc)
            error = UpstreamError("the guarded call raised", code="call_failed")
            return Outcome(error=error, result=answer)
        answer = CallAnswer(result, AnswerFacts(upstream_done_at=time.perf_counter()))
        doc = self.gf.shape.answer_doc(result)
        if doc is None:
            return Outcome(status=200, result=answer)
        observe_answer(answer.facts, doc)
        check = self.rt.guard
        assert check is not None
        decision, answer.changed = await self.rt.loop.call(
            check.check_output(ctx, self.route, doc, self.masker, self.restore))
        answer.doc = doc
        return Outcome(status=200, decision=decision, result=answer)


async def run_guarded(gf: GuardedFunction, rt: SdkRuntime, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
    """Run one guarded call; returns the (rewritten) result or raises."""
    shape = gf.shape
    body = shape.request_body(args, kwargs)
    model = body.get("model") if isinstance(body.get("model"), str) else None
    route = gf.route(rt, model)
    ctx = tracing.new_context(gf.name, shape.op, body)
    try:
        with tracing.activate(ctx):
            return await _run(gf, rt, ctx, route, args, kwargs, body)
    except GuardrailViolation as exc:
        exc.trace_id = ctx.trace_id
        raise
    finally:
        ctx.ended_at = time.perf_counter()
        assert rt.emitter is not None
        rt.emitter.emit(ctx)


async def input_stage(gf: GuardedFunction, rt: SdkRuntime, ctx: RequestContext, route: Route,
                      args: tuple[Any, ...], kwargs: dict[str, Any], body: dict[str, Any]
                      ) -> tuple[Masker, str]:
    """Check (and mask in place) the call's input; (masker, decision) or a violation."""
    guard = rt.guard
    assert guard is not None
    ctx.attributes[semconv.ATTR_POLICY_ROUTE] = route.name
    masker = Masker()
    if not route.input:
        return masker, "pass"
    decision, _changed = await rt.loop.call(guard.check_input(ctx, route, body, masker))
    if decision.action in ("block", "handoff"):
        ctx.fail(400, "content_blocked")
        ctx.override("handoff" if decision.action == "handoff" else "block")
        raise _violation(decision, "input")
    try:
        gf.shape.with_body(args, kwargs, body)
    except TypeError:  # the masked text has nowhere to go: never call with the raw one
        ctx.fail(400, "content_blocked")
        ctx.override("block")
        raise GuardrailViolation("block", "input", ("railwatch:mask_not_applicable",)) from None
    return masker, decision.action


async def _run(gf: GuardedFunction, rt: SdkRuntime, ctx: RequestContext, route: Route,
               args: tuple[Any, ...], kwargs: dict[str, Any], body: dict[str, Any]) -> Any:
    masker, input_decision = await input_stage(gf, rt, ctx, route, args, kwargs, body)
    strategy = CallStrategy(gf, rt, ctx, route, args, kwargs, body, masker)
    log = AttemptLog(ctx.t0, ctx.model_requested)
    engine = Engine(route, strategy, gf.circuits_for(rt), gf.path, log,
                    corrective=gf.shape.op == semconv.OP_CHAT)
    try:
        verdict = await engine.run()
    finally:
        ctx.attempts.extend(log.records)
        ctx.retries += log.retries
    return _settle(gf, ctx, verdict, input_decision)


def _settle(gf: GuardedFunction, ctx: RequestContext, verdict: Verdict[CallAnswer],
            input_decision: str) -> Any:
    answer = verdict.outcome.result
    if verdict.action == "fail":
        ctx.fail(502, verdict.outcome.error.code if verdict.outcome.error else "call_failed")
        if answer is not None and answer.exception is not None:
            raise answer.exception
        raise GuardrailViolation("fail", "output", ("railwatch:call_failed",))
    assert answer is not None
    ctx.adopt(answer.facts)
    if verdict.exhausted:
        ctx.attributes[semconv.ATTR_EXHAUSTED] = "1"
    if verdict.action != "deliver":
        ctx.fail(400, "content_blocked")
        ctx.override("handoff" if verdict.action == "handoff" else "block")
        raise _violation(verdict.decision, "output", action=ctx.decision)
    ctx.status = 200
    ctx.settle(input_decision, verdict.decision.action)
    if not answer.changed or answer.doc is None:
        return answer.result
    try:
        return gf.shape.with_answer(answer.result, answer.doc)
    except TypeError:
        # a rewrite was due (a mask, a restore) but the result cannot take it: an answer
        # that would leak what the policy masks is never returned
        ctx.fail(400, "content_blocked")
        ctx.override("block")
        raise GuardrailViolation("block", "output", ("railwatch:mask_not_applicable",)) from None


def _violation(decision: Decision, stage: str, action: str | None = None) -> GuardrailViolation:
    findings = tuple(
        {"detector": t.finding.detector, "label": t.finding.label,
         "score": round(float(t.finding.score), 6), "start": t.finding.start,
         "end": t.finding.end, "action": t.action}
        for t in decision.triggered
    )
    return GuardrailViolation(action or decision.action, stage, decision.reasons, findings)


__all__ = ["CallAnswer", "GuardedFunction", "RailwatchError", "Shape", "run_guarded"]
