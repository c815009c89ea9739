"""Input and output guard stages: run the route's detectors, apply the policy's decision.

The input guard checks every text of the request (each message's content, content
parts and tool results included; each prompt; each embedding input) with the
route's input detectors. PII the policy masks is replaced in the forwarded body by
stable placeholders (``<EMAIL_ADDRESS_1>``); the mapping lives only in this request's
:class:`~sidecar.masking.Masker`. A ``block`` ends the request with the route's
block response before anything reaches the upstream.

The output guard checks each choice of a non-streaming answer (its content, and
tool-call arguments for the format detector) on the answer *as the upstream sent
it*, so the user's own masked data is not mistaken for a leak. Output PII the
policy masks gets new placeholders; then the input placeholders, and only those,
are restored. Streams get the input guard and placeholder restoration; windowed
output checks on streams come with the stream guard.

Findings that triggered a rule go into the trace with the action they caused;
each stage's decision is recorded too. Nothing here logs or raises request text.

Fail closed: when a detector whose input rule masks or blocks did not finish (timed
out, crashed, not started), the request is refused with
:class:`~sidecar.errors.GuardrailIncompleteError` (``guardrail_incomplete``: 413 for a
timeout, 503 otherwise) instead of being forwarded with what it was asked to hide,
whatever the detector's ``on_error``.

Off the loop: deciding and masking cost time in proportion to the text and its
findings (about 14 us per finding), so for texts over :data:`OFFLOAD_CHARS` both run in
a worker thread; the event loop only ever waits for them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from detectors.base import Detector, Finding, TextContext
from detectors.runner import TIMEOUT, DetectionOutcome, DetectorRunner
from sidecar import semconv
from sidecar.context import RequestContext
from sidecar.errors import GuardrailIncompleteError
from sidecar.masking import Masker
from sidecar.pipeline.inflight import InFlight
from sidecar.privacy import PRIVACY_KINDS, CheckedText
from sidecar.policy import PASS, Decision, Policy, Route, decide, merge
from sidecar.record import DecisionRecord, DetectorRunRecord, FindingRecord

# A place in a JSON body that holds text: keys and indexes from the root.
Path = tuple[str | int, ...]
T = TypeVar("T")

OFFLOAD_CHARS = 4_096
"""Texts (summed over a stage) longer than this are decided and masked in a worker
thread: at about 0.3 ms per KB of dense PII, a 4 KB text stays under the 1 ms a step
on the event loop may take."""
MAX_RECORDED_FINDINGS = 256
"""Triggered findings a stage puts on the trace; a 3 MB prompt can hold 100,000."""
RECORD_OFFLOAD_FINDINGS = 64
"""A stage with more triggered findings than this is put on the trace in a worker
thread: each finding record costs about 2.5 us, and 256 of them (a 32 KB prompt of
dense PII) took 0.6-1 ms of one event-loop step."""
PROTECTIVE = frozenset({"mask", "block"})  # rules whose detector must finish
INCOMPLETE_LABEL = "guardrail_incomplete"  # the reason label of an output blocked that way


async def off_loop(chars: int, fn: Callable[[], T]) -> T:
    """``fn()``, in a worker thread when ``chars`` exceeds :data:`OFFLOAD_CHARS`."""
    if chars > OFFLOAD_CHARS:
        return await asyncio.to_thread(fn)
    return fn()


@dataclass(slots=True)
class Segment:
    path: Path
    text: str
    context: TextContext


@dataclass(slots=True)
class StageResult:
    decision: Decision
    started: float = 0.0  # perf_counter when the stage's detectors were called
    outcomes: list[dict[str, DetectionOutcome]] = field(default_factory=list)  # per segment
    decisions: list[Decision] = field(default_factory=list)  # per segment
    segments: Sequence[Segment] = ()  # what was checked, in ``outcomes`` order
    privacy: frozenset[str] = frozenset()  # the policy's PII and secrets detectors


def _get(doc: Any, path: Path) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _set(doc: Any, path: Path, value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def input_segments(route: str, body: Mapping[str, Any]) -> list[Segment]:
    """Every text of an OpenAI request body, with where it lives."""
    ctx_in = TextContext(stage="input")
    out: list[Segment] = []
    if route == "chat":
        for i, message in enumerate(body.get("messages") or ()):
            content = message.get("content")
            if isinstance(content, str) and content:
                out.append(Segment(("messages", i, "content"), content, ctx_in))
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]:
                        out.append(Segment(("messages", i, "content", j, "text"), part["text"], ctx_in))
    else:
        key = "prompt" if route == "text_completion" else "input"
        value = body.get(key)
        if isinstance(value, str) and value:
            out.append(Segment((key,), value, ctx_in))
        elif isinstance(value, list):
            for k, item in enumerate(value):
                if isinstance(item, str) and item:
                    out.append(Segment((key, k), item, ctx_in))
    return out


def output_segments(
    route: str, doc: Mapping[str, Any], request: Mapping[str, Any] | None
) -> list[Segment]:
    """Every text of a non-streaming answer; chat choices carry their tool calls."""
    out: list[Segment] = []
    request = request or {}
    response_format = request.get("response_format")
    tools = request.get("tools")
    for i, choice in enumerate(doc.get("choices") or ()):
        if not isinstance(choice, dict):
            continue
        if route == "chat":
            message = choice.get("message")
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            calls = [
                {"name": (c.get("function") or {}).get("name"),
                 "arguments": (c.get("function") or {}).get("arguments")}
                for c in (message.get("tool_calls") or ())
                if isinstance(c, dict)
            ]
            context = TextContext(
                stage="output",
                response_format=response_format if isinstance(response_format, dict) else None,
                tools=tools if isinstance(tools, list) else None,
                tool_calls=calls or None,
            )
            text = content if isinstance(content, str) else ""
            if text or calls:
                out.append(Segment(("choices", i, "message", "content"), text, context))
        else:
            completion = choice.get("text")
            if isinstance(completion, str):
                out.append(
                    Segment(("choices", i, "text"), completion, TextContext(stage="output"))
                )
    return out


class Guard:
    """Runs a policy's detectors for the pipeline, the check API and the CLI."""

    def __init__(
        self,
        policy: Policy,
        runner: DetectorRunner,
        detectors: Mapping[str, Detector],
        *,
        in_flight: InFlight | None = None,
    ) -> None:
        self.policy = policy
        self.runner = runner
        # the proxy's request count: alone, queued detectors run without waiting for a
        # batch (see :mod:`sidecar.pipeline.inflight`); None (SDK, CLI): always queued
        self.in_flight = in_flight
        self.detectors = dict(detectors)  # name -> instance, as added to the runner
        self._routes: dict[tuple[str, str | None, str | None], Route | None] = {}
        self.privacy = frozenset(
            name for name, spec in policy.detectors.items() if spec.kind in PRIVACY_KINDS
        )

    def route_for(self, path: str, model: str | None, tenant: str | None) -> Route | None:
        key = (path, model, tenant)
        try:
            return self._routes[key]
        except KeyError:
            route = self.policy.route_for(path, model, tenant)
            if len(self._routes) < 4096:  # bounded: model and tenant come from clients
                self._routes[key] = route
            return route

    def route_named(self, name: str) -> Route | None:
        return next((r for r in self.policy.routes if r.name == name), None)

    async def run_stage(
        self, route: Route, stage: str, segments: Sequence[Segment], *, solo: bool | None = None
    ) -> StageResult:
        """Run the stage's detectors on ``segments`` and decide. ``solo`` (default: from
        the proxy's request count) lets an idle queued detector run without its queue."""
        rules = route.input if stage == "input" else route.output
        names = route.detectors(stage)
        if not names or not segments:
            return StageResult(PASS)
        started = time.perf_counter()
        if solo is None:
            solo = self.in_flight is not None and self.in_flight.alone
        results = await self.runner.run_segments(
            names, [(s.text, s.context) for s in segments], solo=solo
        )
        stage_result = StageResult(PASS, started, segments=segments, privacy=self.privacy)

        def decide_all() -> StageResult:
            for outcomes in results:
                by_name = {o.detector: o for o in outcomes}
                stage_result.outcomes.append(by_name)
                stage_result.decisions.append(decide(rules, by_name))
            stage_result.decision = merge(stage_result.decisions)
            return stage_result

        return await off_loop(sum(len(s.text) for s in segments), decide_all)

    @staticmethod
    def incomplete(route: Route, result: StageResult, stage: str = "input") -> list[tuple[str, str]]:
        """(detector, error code) of each detector that must finish and did not, for any
        segment; empty when every one finished. On input: rules that mask or block. On
        output: rules that mask (a mask never lets the raw value through; a block rule's
        ``on_error`` still decides, since an output block under ``fail_open`` is the
        operator's explicit choice)."""
        rules, actions = (route.input, PROTECTIVE) if stage == "input" else (route.output, {"mask"})
        protective = {rule.detector for rule in rules if rule.action in actions}
        failed: dict[str, str] = {}
        for outcomes in result.outcomes:
            for name in protective:
                outcome = outcomes.get(name)
                if outcome is not None and outcome.error is not None:
                    failed.setdefault(name, outcome.error)
        return sorted(failed.items())

    @staticmethod
    def record(ctx: RequestContext, stage: str, result: StageResult) -> None:
        """Put the stage's triggered findings (the first :data:`MAX_RECORDED_FINDINGS`;
        the rest are counted in ``railwatch.findings.unrecorded``) and its decision on
        the trace."""
        _apply_records(ctx, stage, result, _stage_records(ctx.t0, stage, result))

    @classmethod
    async def record_off_loop(cls, ctx: RequestContext, stage: str, result: StageResult) -> None:
        """:meth:`record`, with the records built in a worker thread when the stage
        triggered many findings. The thread touches nothing shared: ``ctx`` is changed
        on the loop, so concurrent attempts (parallel retries) never race on it."""
        if sum(len(d.triggered) for d in result.decisions) <= RECORD_OFFLOAD_FINDINGS:
            cls.record(ctx, stage, result)
            return
        done = asyncio.ensure_future(asyncio.to_thread(_stage_records, ctx.t0, stage, result))
        try:
            built = await asyncio.shield(done)
        except asyncio.CancelledError:  # the client left: the trace still gets the stage
            await asyncio.wait({done})
            if not done.cancelled() and done.exception() is None:
                _apply_records(ctx, stage, result, done.result())
            raise
        _apply_records(ctx, stage, result, built)

    # --- the pipeline's two stages -----------------------------------------------------

    async def check_input(
        self, ctx: RequestContext, route: Route, body: dict[str, Any], masker: Masker
    ) -> tuple[Decision, bool]:
        """Check and (when the policy masks) rewrite ``body`` in place; (decision, changed)."""
        segments = input_segments(ctx.route, body)
        result = await self.run_stage(route, "input", segments)
        await self.record_off_loop(ctx, "input", result)
        failed = self.incomplete(route, result) if result.decision.action != "block" else []
        if failed:
            refuse_incomplete(ctx, failed)
        if result.decision.action in ("pass", "block"):
            return result.decision, False

        def mask_all() -> bool:
            changed = False
            masker.reserve(s.text for s in segments)
            for segment, decision in zip(segments, result.decisions, strict=True):
                spans = decision.mask_findings
                if spans:
                    _set(body, segment.path, masker.mask(segment.text, spans))
                    changed = True
            return changed

        changed = await off_loop(sum(len(s.text) for s in segments), mask_all)
        return result.decision, changed

    async def check_output(
        self,
        ctx: RequestContext,
        route: Route,
        doc: dict[str, Any],
        masker: Masker,
        restore: Callable[[str], str] | None,
    ) -> tuple[Decision, bool]:
        """Check a parsed answer; mask leaks and restore input placeholders in place."""
        segments = output_segments(ctx.route, doc, ctx.body)
        result = await self.run_stage(route, "output", segments)
        await self.record_off_loop(ctx, "output", result)
        if result.decision.action == "block":
            return result.decision, False
        failed = self.incomplete(route, result, "output")
        if failed:  # a leak the policy masks could not be looked for: the answer is blocked
            return incomplete_decision(ctx, failed), False

        def rewrite() -> bool:
            changed = False
            for index, segment in enumerate(segments):
                text = segment.text
                spans = result.decisions[index].mask_findings if result.decisions else []
                if spans:
                    text = masker.mask(text, spans)
                if restore is not None:
                    text = restore(text)
                if text != segment.text:
                    _set(doc, segment.path, text)
                    changed = True
            if restore is not None:
                changed = _restore_tool_calls(doc, restore) or changed
            return changed

        changed = await off_loop(sum(len(s.text) for s in segments), rewrite)
        return result.decision, changed

    async def check_text(
        self,
        text: str,
        stage: str,
        route: Route | None,
        response_format: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The ``/v1/guardrails/check`` and ``railwatch check`` answer for one text."""
        started = time.perf_counter()
        context = TextContext(stage=stage, response_format=response_format)
        findings: list[Finding] = []
        errors: dict[str, str] = {}
        decision = PASS
        masked_text = None
        if route is not None:
            # never solo: concurrent checks (the remote SDK's) arrive as separate handler
            # runs that only overlap while a queued detector waits for its batch
            result = await self.run_stage(
                route, stage, [Segment((), text, context)], solo=False
            )
            decision = result.decision
            for outcomes in result.outcomes:
                for outcome in outcomes.values():
                    findings.extend(outcome.findings)
                    if outcome.error is not None:
                        errors[outcome.detector] = outcome.error
            spans = decision.mask_findings
            if spans:
                masked_text = await off_loop(len(text), lambda: Masker().mask(text, spans))
        actions = {id(t.finding): t.action for t in decision.triggered}
        body: dict[str, Any] = {
            "findings": [
                {"detector": f.detector, "label": f.label, "score": round(float(f.score), 6),
                 "start": f.start, "end": f.end, "action": actions.get(id(f)),
                 "metadata": _public_metadata(f.metadata)}
                for f in findings
            ],
            "decision": {"action": decision.action, "reasons": list(decision.reasons)},
            "route": route.name if route is not None else None,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if masked_text is not None:
            body["masked_text"] = masked_text
        if errors:  # detectors that did not finish: the decision is incomplete
            body["errors"] = errors
        return body


def _public_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A finding's metadata for the check API: text-free by the detectors' contract;
    only JSON scalars are kept."""
    return {k: v for k, v in metadata.items()
            if isinstance(v, (str, int, float, bool)) or v is None}


def _mark_incomplete(ctx: RequestContext, failed: Sequence[tuple[str, str]]) -> None:
    """``railwatch.guardrail.incomplete`` on the trace: ``detector:error`` pairs."""
    ctx.attributes[semconv.RAILWATCH_GUARDRAIL_INCOMPLETE] = ",".join(
        f"{name}:{code}" for name, code in failed
    )


def incomplete_decision(ctx: RequestContext, failed: Sequence[tuple[str, str]]) -> Decision:
    """A block for an answer whose masking detectors did not finish; marks the trace."""
    _mark_incomplete(ctx, failed)
    return Decision("block", tuple(f"{name}:{INCOMPLETE_LABEL}" for name, _ in failed))


def refuse_incomplete(ctx: RequestContext, failed: Sequence[tuple[str, str]]) -> None:
    """Raise :class:`GuardrailIncompleteError` for detectors that did not finish; marks
    the trace (``railwatch.guardrail.incomplete``: ``detector:error`` pairs)."""
    _mark_incomplete(ctx, failed)
    names = ", ".join(name for name, _ in failed)
    if all(code == TIMEOUT for _, code in failed):
        raise GuardrailIncompleteError(
            f"the guardrails could not finish checking this request in time ({names}); "
            "it was not forwarded. Send a shorter prompt."
        )
    error = GuardrailIncompleteError(
        f"the guardrails could not check this request ({names} failed); it was not "
        "forwarded. Retry later."
    )
    error.status = 503
    error.error_type = "server_error"
    raise error


@dataclass(frozen=True, slots=True)
class _StageRecords:
    """What one stage adds to the trace, built without touching the request."""

    findings: list[FindingRecord]
    runs: list[DetectorRunRecord]
    unrecorded: int  # triggered findings past MAX_RECORDED_FINDINGS
    errors: dict[str, str]  # detector -> error code


def _stage_records(t0: float, stage: str, result: StageResult) -> _StageRecords:
    """The finding and detector-run records of ``result`` (``t0``: the request's
    ``perf_counter`` arrival). Pure: safe in a worker thread."""
    room = MAX_RECORDED_FINDINGS
    findings: list[FindingRecord] = []
    runs: list[DetectorRunRecord] = []
    errors: dict[str, str] = {}
    unrecorded = 0
    offset = round((result.started - t0) * 1000.0, 4)
    for outcomes, decision in zip(result.outcomes, result.decisions, strict=True):
        triggered = decision.triggered
        if len(triggered) > room:
            unrecorded += len(triggered) - room
            triggered = triggered[:room]
        room -= len(triggered)
        for t in triggered:
            outcome = outcomes.get(t.finding.detector)
            findings.append(
                FindingRecord(
                    stage=stage,
                    detector=t.finding.detector,
                    label=t.finding.label,
                    score=round(float(t.finding.score), 6),
                    start=t.finding.start,
                    end=t.finding.end,
                    action=t.action,
                    latency_ms=round(outcome.latency_ms, 4) if outcome else 0.0,
                )
            )
        for outcome in outcomes.values():
            runs.append(
                DetectorRunRecord(
                    stage=stage,
                    detector=outcome.detector,
                    offset_ms=offset,
                    latency_ms=round(outcome.latency_ms, 4),
                    findings=len(outcome.findings),
                    error=outcome.error,
                    batch_size=outcome.batch_size,
                )
            )
            if outcome.error:
                errors[outcome.detector] = outcome.error
    return _StageRecords(findings, runs, unrecorded, errors)


def _apply_records(ctx: RequestContext, stage: str, result: StageResult,
                   built: _StageRecords) -> None:
    """Put ``built`` and the stage's decision on ``ctx`` (on the event loop)."""
    if built.unrecorded:
        unrecorded = int(ctx.attributes.get(semconv.RAILWATCH_FINDINGS_UNRECORDED, "0"))
        ctx.attributes[semconv.RAILWATCH_FINDINGS_UNRECORDED] = str(unrecorded + built.unrecorded)
    ctx.findings.extend(built.findings)
    ctx.detector_runs.extend(built.runs)
    for detector, error in built.errors.items():
        ctx.attributes[semconv.attr_detector_error(detector)] = error
    _remember_privacy_findings(ctx, stage, result)
    decision = result.decision
    ctx.decisions.append(DecisionRecord(stage, decision.action, decision.reasons))
    ctx.escalate(decision.action)


def _remember_privacy_findings(ctx: RequestContext, stage: str, result: StageResult) -> None:
    """Keep each segment the privacy detectors checked without error, with all their
    findings (triggered or not) and which of them ran, so stored text is masked
    without running those detectors again."""
    names = result.privacy
    if not names or len(result.segments) != len(result.outcomes):
        return
    for segment, outcomes in zip(result.segments, result.outcomes, strict=True):
        found: list[Finding] = []
        ran = []
        for name in names:
            outcome = outcomes.get(name)
            if outcome is not None and not outcome.error:
                found.extend(outcome.findings)
                ran.append(name)
        if ran:
            ctx.privacy_checked.append(
                CheckedText(stage, segment.text, tuple(found), frozenset(ran)))


def _restore_tool_calls(doc: dict[str, Any], restore: Callable[[str], str]) -> bool:
    changed = False
    for choice in doc.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        for call in (message or {}).get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                restored = restore(fn["arguments"])
                if restored != fn["arguments"]:
                    fn["arguments"] = restored
                    changed = True
    return changed
