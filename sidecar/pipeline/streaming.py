"""The streaming flow: SSE answers forwarded chunk by chunk as they arrive.

``forward`` is the lean path (no policy route): each upstream chunk is written to
the client, then observed, so observation never delays delivery. ``guarded`` is
the path of a policy route: a :class:`~sidecar.pipeline.stream_guard.StreamGuard`
checks output windows, masks, restores input placeholders split across chunks,
and cuts the stream on a violation; before the first byte, a verdict can still
move to the next attempt (retry, fallback) or hand off. A broken or stalled upstream stream ends with a final
``data: {"error": ...}`` event, which the ``openai`` client raises as ``APIError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict

from detectors.base import TextContext
from sidecar import jsonio, semconv
from sidecar.context import AnswerFacts, RequestContext
from sidecar.errors import RequestError, UpstreamError
from sidecar.pipeline._stream_pump import (
    TAIL_EVENTS,
    finish_stream,
    open_stream,
    pump,
)
from sidecar.pipeline._stream_rules import StreamRules
from sidecar.pipeline._stream_windows import CONTINUE
from sidecar.pipeline.actions import Upstream, UpstreamSet
from sidecar.pipeline.call import GuardedCall
from sidecar.pipeline.engine import (
    ACCEPTABLE,
    AttemptLog,
    AttemptSpec,
    Engine,
    Outcome,
    Verdict,
    as_delivered,
    unchecked_decision,
)
from sidecar.pipeline.guard import Guard, Segment, incomplete_decision
from sidecar.pipeline.relay import relay
from sidecar.pipeline.observe import StreamObserver, observe_answer, observe_lean
from sidecar.pipeline.responses import upstream_response
from sidecar.pipeline.stream_guard import StreamGuard, WindowCheck, WindowVerdict
from sidecar.pipeline.upstream import UpstreamBody
from sidecar.masking import Masker
from sidecar.policy import PASS, Decision, Route, merge


class StreamFlow:
    def __init__(self, upstreams: UpstreamSet, guard: Guard | None = None,
                 stream_usage: bool = True) -> None:
        self.upstreams = upstreams
        self.guard = guard
        self.stream_usage = stream_usage  # ask upstreams for usage in streams
        self.rules = StreamRules()  # each route's window and whole-answer output rules

    async def forward(
        self,
        request: web.Request,
        ctx: RequestContext,
        headers: CIMultiDict[str],
        payload: bytes,
    ) -> web.StreamResponse:
        """The lean path: bytes go to the client as they arrive, then are observed."""
        client = self.upstreams.primary.client
        resp = await client.send(ctx, request.method, request.path_qs, headers, payload,
                                 stream=True)
        try:
            ctype = resp.headers.get("Content-Type", "")
            if resp.status != 200 or not ctype.startswith("text/event-stream"):
                # An error, or a server that ignored "stream": pass the body through whole.
                answer = await client.read_body(resp)
                observe_lean(ctx, resp.status, answer.decoded)
                return upstream_response(ctx, resp.status, resp.headers.items(), answer.raw)
            out = await open_stream(request, ctx, resp)
            observer = StreamObserver(ctx, client.settings.max_sse_event_bytes,
                                      max_total_bytes=client.settings.max_response_bytes)
            tail: bytes | None = None

            def observe(chunk: bytes) -> str | None:
                observer.feed(chunk)  # after the write: observing never delays delivery
                return observer.broken

            try:
                stopped = await relay(resp.content, out, ctx, observe)
                if stopped is not None:
                    ctx.error_type = stopped
                    tail = TAIL_EVENTS.get(stopped)  # none when the client left
            except BaseException:  # cancelled (the client left): record what it got
                observer.close()
                raise
            ctx.upstream_done_at = time.perf_counter()
            observer.close()
            await finish_stream(out, ctx, tail)
            return out
        finally:
            resp.release()

    async def guarded(self, call: GuardedCall) -> Verdict[web.StreamResponse]:
        """A stream on a policy route, checked in windows by the output detectors.

        The attempt engine runs the attempts one at a time (primary, retries,
        fallbacks; never in parallel), each through :class:`StreamStrategy`. Before
        the first byte leaves, a verdict ``retry`` or ``fallback`` or an upstream
        failure moves to the next attempt; once bytes left, the attempt is committed
        and violations cut the stream. A ``deliver`` verdict carries the response
        (streamed already, or an upstream 4xx/5xx to pass on); other verdicts are the
        caller's to carry out (block, hand off, fail).
        """
        ctx, body, payload = call.ctx, call.body, call.raw
        strip_usage = False
        if self.stream_usage and ctx.route in (semconv.OP_CHAT, semconv.OP_TEXT_COMPLETION):
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                body = {**body, "stream_options": {**(options or {}), "include_usage": True}}
                payload = orjson.dumps(body)
                strip_usage = True  # usage is always known; the client gets what it asked for
        if not call.route.output and call.restore is None and not strip_usage:
            response = await self.forward(call.request, ctx, call.headers, payload)
            return Verdict("deliver", Outcome(ctx.status, committed=True, result=response), PASS)
        strategy = StreamStrategy(self, call, body, payload, strip_usage)
        log = AttemptLog(ctx.t0, ctx.model_requested)
        engine = Engine(call.route, strategy, self.upstreams, call.endpoint, log,
                        corrective=ctx.route == semconv.OP_CHAT)
        try:
            verdict = await engine.run()
        finally:
            ctx.attempts.extend(log.records)
            ctx.retries += log.retries
        return strategy.settle(verdict)


def delivered_stream_action(mode: str, decision: Decision) -> str | None:
    """The action a stream whose bytes reached the client records for its windows'
    merged ``decision`` (as delivered: a spent retry is already ``flag``); ``None``
    when it must be ``block`` (an override).

    An acceptable verdict (``pass``, ``flag``, ``mask``) stands; any other means the
    stream was being cut when the attempt ended (also when the client left during the
    cut). ``passthrough`` forwards untouched: its verdict stands, for the record only."""
    action = decision.action
    return action if mode == "passthrough" or action in ACCEPTABLE else None


def window_guard(
    guard: Guard, route: Route, ctx: RequestContext, context: TextContext, masker: Masker, *,
    restore_input: bool, last_chance: bool, decisions: list[Decision],
    observe: Callable[[dict[str, Any]], None] | None = None, strip_usage: bool = False,
    rules: StreamRules | None = None,
) -> StreamGuard:
    """A stream guard whose windows go through ``guard``'s output stage for ``route``
    (recorded on ``ctx``; non-pass decisions appended to ``decisions``). With
    ``last_chance``, ``retry``/``fallback`` verdicts are delivered flagged instead.

    Rules of whole-answer detectors (``format``) run once on each choice's whole text
    (:mod:`sidecar.pipeline._stream_rules`; ``rules`` caches the split per route)."""
    windows, whole = (rules or StreamRules()).split(route, guard)

    async def run(stage_route: Route, text: str) -> Decision:
        result = await guard.run_stage(stage_route, "output", [Segment((), text, context)])
        guard.record(ctx, "output", result)  # windows are small: on the loop
        decision = result.decision
        failed = guard.incomplete(stage_route, result, "output") if decision.action != "block" else []
        if failed:  # a leak the policy masks could not be looked for: cut, never release
            decision = incomplete_decision(ctx, failed)
        return decision

    async def checker(check: WindowCheck) -> WindowVerdict:
        if not route.output:
            return WindowVerdict()
        whole_only = False
        if check.whole is None or whole is None:
            decision = await run(windows, check.text)
        elif check.whole is check.text:  # buffered, passthrough: one text, every rule
            decision = await run(route, check.text)
        else:
            judged = await run(whole, check.whole)
            # spans of a whole-answer finding are not window offsets: it cannot mask
            decision = Decision("flag" if judged.action == "mask" else judged.action,
                                judged.reasons)
            window = await run(windows, check.text) if check.text else PASS
            whole_only = window.action in CONTINUE and decision.action not in CONTINUE
            decision = merge([window, decision])
        if last_chance and decision.action in ("retry", "fallback"):
            ctx.attributes[semconv.ATTR_EXHAUSTED] = "1"
            decision, whole_only = as_delivered(decision), False
        if decision.action != "pass":
            decisions.append(decision)  # what the window's verdict was, as delivered
        return WindowVerdict(decision.action, decision.reasons,
                             tuple(decision.mask_findings), whole_only)

    spec = route.stream
    return StreamGuard(
        checker=checker, mode=spec.mode, window_chars=spec.window_chars,
        window_tokens=spec.window_tokens, overlap_chars=spec.overlap_chars,
        max_holdback_chars=spec.max_holdback_chars, max_hold_ms=spec.max_hold_ms,
        boundaries=spec.boundaries, whole_text=whole is not None,
        early_headers=spec.early_headers, masker=masker, restore_input=restore_input,
        strip_usage=strip_usage, observe=observe,
    )


class UpstreamAnswer(NamedTuple):
    """A whole non-stream answer an attempt got instead of a stream (an error status)."""

    status: int
    headers: list[tuple[str, str]]
    raw: bytes
    upstream_label: str


StreamResult = web.StreamResponse | UpstreamAnswer


class StreamStrategy:
    """The engine's strategy for streams: one upstream stream through a stream guard.

    Each attempt observes its answer into its own :class:`AnswerFacts` and keeps its
    own window decisions; only when the attempt's bytes reached the client does the
    context adopt its facts and settle the request's decision on the input stage's
    and this attempt's windows (judged to the end of the stream, which has ended
    when the attempt returns). A discarded attempt leaves nothing in the trace but
    its attempt record, findings and stage decisions; a cut stays ``block``.
    """

    parallel = False

    def __init__(self, flow: StreamFlow, call: GuardedCall, body: dict[str, Any],
                 payload: bytes, strip_usage: bool) -> None:
        self.flow, self.call, self.body, self.payload = flow, call, body, payload
        self.strip_usage = strip_usage
        self.context = TextContext(
            stage="output",
            response_format=body.get("response_format"),
            tools=body.get("tools"),
        )
        self._decisions: list[Decision] = []  # this attempt's window decisions

    def settle(self, verdict: Verdict[StreamResult]) -> Verdict[web.StreamResponse]:
        """The engine's verdict with the response to send, where there is one."""
        ctx, outcome = self.call.ctx, verdict.outcome
        result = outcome.result
        if isinstance(result, web.StreamResponse):
            return Verdict(verdict.action, Outcome(outcome.status, outcome.decision, None, True,
                                                   result), verdict.decision, verdict.exhausted)
        if isinstance(result, UpstreamAnswer) and verdict.action in ("deliver", "fail"):
            # the upstream's own 4xx (final) or 5xx (every attempt failed), passed on as is
            ctx.upstream = result.upstream_label
            response = upstream_response(ctx, result.status, result.headers, result.raw)
            return Verdict("deliver", Outcome(result.status, committed=True, result=response),
                           verdict.decision)
        if verdict.action == "deliver":
            # ``then: pass`` after a stream that was judged, not delivered: nothing is left
            # to send, and an unsent answer is never passed unchecked: block
            return Verdict("block", Outcome(outcome.status, outcome.decision), verdict.decision,
                           verdict.exhausted)
        return Verdict(verdict.action, Outcome(outcome.status, outcome.decision, outcome.error),
                       verdict.decision, verdict.exhausted, verdict.reason)

    async def attempt(self, spec: AttemptSpec) -> Outcome[StreamResult]:
        ctx, call = self.call.ctx, self.call
        upstream = self.flow.upstreams.get(spec.upstream)
        facts = AnswerFacts()
        self._decisions = []
        adopted = False
        try:
            outcome = await self._stream(upstream, call.payload(spec, self.body, self.payload),
                                         spec.last_chance, facts)
            if outcome.committed:
                self._deliver(upstream, facts, outcome.decision)
                adopted = True
            return outcome
        finally:
            if not adopted and ctx.status == 200:  # cancelled after bytes left: keep them
                self._deliver(upstream, facts, merge(self._decisions))

    def _deliver(self, upstream: Upstream, facts: AnswerFacts, decision: Decision) -> None:
        """This attempt's answer reached the client: the request takes its facts, and its
        decision replaces what discarded attempts escalated. Never raises.

        The decision is the most severe of the input stage's and ``decision`` (this
        attempt's windows, as delivered), or ``block`` when they ended on a stop
        (:func:`delivered_stream_action`)."""
        ctx = self.call.ctx
        ctx.upstream = upstream.label
        ctx.adopt(facts)
        action = delivered_stream_action(self.call.route.stream.mode, decision)
        if action is None:
            ctx.override("block")
        else:
            ctx.settle(self.call.input_decision, action)

    def _guard(self, last_chance: bool, observer: StreamObserver) -> StreamGuard:
        assert self.flow.guard is not None
        return window_guard(self.flow.guard, self.call.route, self.call.ctx, self.context,
                            self.call.masker, restore_input=self.call.restore is not None,
                            last_chance=last_chance, decisions=self._decisions,
                            observe=observer.observe_doc, strip_usage=self.strip_usage,
                            rules=self.flow.rules)

    def _decision(self, verdict: WindowVerdict) -> Decision:
        """The verdict as a decision, with the findings that triggered it (for the
        corrective message of a retry)."""
        triggered = tuple(t for d in self._decisions for t in d.triggered)
        return Decision(verdict.action, verdict.reasons, triggered)

    async def _stream(
        self, upstream: Upstream, payload: bytes, last_chance: bool, facts: AnswerFacts
    ) -> Outcome[StreamResult]:
        ctx, call = self.call.ctx, self.call
        client = upstream.client
        try:
            resp = await client.send(ctx, call.method, call.path_qs, call.headers, payload,
                                     stream=True)
        except UpstreamError as exc:
            return Outcome(error=exc)
        try:
            status = resp.status
            if status != 200:
                raw = (await client.read_body(resp)).raw
                facts.upstream_done_at = ctx.upstream_done_at = time.perf_counter()
                answer = UpstreamAnswer(status, list(resp.headers.items()), raw, upstream.label)
                return Outcome(status=status, result=answer)
            if not resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                # the upstream ignored "stream": check it as a unary answer
                body = await client.read_body(resp)
                facts.upstream_done_at = time.perf_counter()
                return await self._unary_answer(resp, body, last_chance, facts)
            # tokens are marked on the request as the client gets them, not on arrival
            observer = StreamObserver(facts, client.settings.max_sse_event_bytes, request=ctx,
                                      max_total_bytes=client.settings.max_response_bytes,
                                      mark_tokens=False)
            result = await pump(call.request, ctx, resp, self._guard(last_chance, observer),
                                observer, early_headers=call.route.stream.early_headers)
            if isinstance(result, web.StreamResponse):  # relayed to its end (or cut)
                return Outcome(status=200, decision=merge(self._decisions), committed=True,
                               result=result)
            if isinstance(result, RequestError):
                return Outcome(error=result)
            return Outcome(status=200, decision=self._decision(result))
        except UpstreamError as exc:  # reading a non-SSE body failed
            return Outcome(error=exc)
        finally:
            resp.release()

    async def _unary_answer(
        self, resp: aiohttp.ClientResponse, answer: UpstreamBody, last_chance: bool,
        facts: AnswerFacts,
    ) -> Outcome[StreamResult]:
        ctx, guard, route = self.call.ctx, self.flow.guard, self.call.route
        assert guard is not None
        raw = answer.raw
        doc, lenient = answer.json()  # None: undecodable or not JSON, unparsed
        if not isinstance(doc, dict):
            ctx.attributes[semconv.ATTR_OUTPUT_UNCHECKED] = "unparsed"
            if route.output:  # nothing the detectors can read: the route decides
                return Outcome(status=200, decision=unchecked_decision(route))
            response = upstream_response(ctx, 200, resp.headers.items(), raw)
            return Outcome(status=200, committed=True, result=response)
        observe_answer(facts, doc)
        decision, changed = await guard.check_output(ctx, route, doc, self.call.masker,
                                                     self.call.restore)
        if decision.action not in ACCEPTABLE:
            if not last_chance or decision.action not in ("retry", "fallback"):
                return Outcome(status=200, decision=decision)
            ctx.attributes[semconv.ATTR_EXHAUSTED] = "1"
            decision = as_delivered(decision)
        body_out = jsonio.dumps(doc, lenient) if changed else raw
        response = upstream_response(ctx, 200, resp.headers.items(), body_out, decoded=changed)
        return Outcome(status=200, decision=decision, committed=True, result=response)
