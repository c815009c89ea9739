"""The OpenAI flow: ingress -> input guard -> attempt engine -> output guard.

:class:`CompletionFlow` handles ``/v1/chat/completions``, ``/v1/completions`` and
``/v1/embeddings``. Without a matching policy route it is a lean pass-through
(parse, forward, observe). With one, the input guard may mask or block; then the
attempt engine (:mod:`sidecar.pipeline.engine`) runs the attempts, each judged by
the output guard: :class:`UnaryStrategy` here for unary answers, the stream
strategy of :mod:`sidecar.pipeline.streaming` for streams. This module maps the
engine's verdict to the client's response (deliver, block, hand off, fail).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy

from sidecar import jsonio, semconv
from sidecar.context import AnswerFacts, RequestContext
from sidecar.errors import UpstreamError
from sidecar.handoff.hook import Hook, make_handoff_hook
from sidecar.handoff.service import HandoffService
from sidecar.masking import Masker
from sidecar.pipeline import ingress
from sidecar.pipeline.actions import Upstream, UpstreamSet
from sidecar.pipeline.call import GuardedCall
from sidecar.pipeline.engine import (
    AttemptLog,
    AttemptSpec,
    Engine,
    Outcome,
    Verdict,
    unchecked_decision,
)
from sidecar.pipeline.guard import Guard
from sidecar.pipeline.observe import observe_answer, observe_lean
from sidecar.pipeline.responses import blocked_response, upstream_response
from sidecar.pipeline.streaming import StreamFlow
from sidecar.pipeline.upstream import UpstreamBody, UpstreamClient, forward_request_headers
from sidecar.policy import PASS
from sidecar.settings import ServerSettings

FAILURES = frozenset({"block", "retry", "fallback", "handoff"})


@dataclass(slots=True)
class UnaryAnswer:
    """One non-streaming upstream answer, parsed once; ``facts`` as the upstream sent it."""

    upstream: Upstream
    status: int
    headers: CIMultiDictProxy[str]
    raw: bytes
    facts: AnswerFacts
    doc: dict[str, Any] | None = None
    lenient: bool = False  # parsed with non-finite numbers; written back the same way
    changed: bool = False  # the output guard rewrote ``doc``
    extra: dict[str, str] = field(default_factory=dict)  # trace attributes of this answer

    def body(self) -> tuple[bytes, bool]:
        """(bytes for the client, decoded?)."""
        if self.changed and self.doc is not None:
            return jsonio.dumps(self.doc, self.lenient), True
        return self.raw, False


async def send_unary(
    client: UpstreamClient, ctx: RequestContext, method: str, path_qs: str, headers: Any,
    payload: bytes | None,
) -> tuple[int, CIMultiDictProxy[str], UpstreamBody]:
    """(status, headers, body) of one non-streaming upstream exchange."""
    resp = await client.send(ctx, method, path_qs, headers, payload, stream=False)
    try:
        body = await client.read_body(resp)
    finally:
        resp.release()
    return resp.status, resp.headers, body


class UnaryStrategy:
    """The engine's strategy for unary answers: send, parse once, judge with the output guard.
    Attempts of a round may run concurrently (``retry.parallel``)."""

    parallel = True

    def __init__(self, call: GuardedCall, upstreams: UpstreamSet, guard: Guard) -> None:
        self.call = call
        self.upstreams = upstreams
        self.guard = guard
        self.check_output = bool(call.route.output) or call.restore is not None

    async def attempt(self, spec: AttemptSpec) -> Outcome[UnaryAnswer]:
        call, ctx = self.call, self.call.ctx
        upstream = self.upstreams.get(spec.upstream)
        try:
            status, headers, body = await send_unary(
                upstream.client, ctx, call.method, call.path_qs, call.headers,
                call.payload(spec),
            )
        except UpstreamError as exc:
            return Outcome(error=exc)
        answer = UnaryAnswer(upstream, status, headers, body.raw,
                             AnswerFacts(upstream_done_at=time.perf_counter()))
        if status != 200:
            return Outcome(status=status, result=answer)
        doc, answer.lenient = body.json()  # None: undecodable or not JSON, unparsed
        if isinstance(doc, dict) and "error" in doc and "choices" not in doc and "data" not in doc:
            # a 200 carrying an OpenAI error: a failed upstream answer, retried as one
            error = UpstreamError("the upstream answered with an error body",
                                  code="upstream_error_body")
            return Outcome(status=200, error=error, result=answer)
        if not isinstance(doc, dict):
            answer.extra[semconv.ATTR_OUTPUT_UNCHECKED] = "unparsed"
            if call.route.output:  # nothing the detectors can read: the route decides
                return Outcome(status=200, decision=unchecked_decision(call.route), result=answer)
            return Outcome(status=200, result=answer)
        observe_answer(answer.facts, doc)  # as the upstream sent it, before any rewrite
        answer.doc = doc
        if answer.lenient:
            answer.extra[semconv.ATTR_OUTPUT_NONFINITE] = "1"
        if not self.check_output:
            return Outcome(status=200, result=answer)
        decision, answer.changed = await self.guard.check_output(
            ctx, call.route, doc, call.masker, call.restore
        )
        return Outcome(status=200, decision=decision, result=answer)


class CompletionFlow:
    def __init__(
        self,
        server: ServerSettings,
        upstreams: UpstreamSet,
        guard: Guard | None,
        streams: StreamFlow,
        handoff: HandoffService | None = None,
    ) -> None:
        """``handoff``: the hand-off service (``handoff.enabled``); without it, requests
        the policy hands off are blocked (marked ``handoff_unavailable``)."""
        self.server = server
        self.upstreams = upstreams
        self.guard = guard
        self.streams = streams
        self.handoff_service = handoff
        self.handoff: Hook | None = make_handoff_hook(handoff) if handoff is not None else None

    async def handle(self, request: web.Request, ctx: RequestContext) -> web.StreamResponse:
        raw, body = await ingress.parse_request(request, ctx, self.server.max_body_bytes)
        guard = self.guard
        path = ingress.canonical_path(request.path)
        route = guard.route_for(path, ctx.model_requested, ctx.tenant) if guard else None
        headers = forward_request_headers(request.headers, ctx, inspect=True)
        if route is None or guard is None:
            if ctx.stream:
                return await self.streams.forward(request, ctx, headers, raw)
            status, up_headers, answer = await send_unary(
                self.upstreams.primary.client, ctx, request.method, request.path_qs,
                headers, raw,
            )
            observe_lean(ctx, status, answer.decoded)
            return upstream_response(ctx, status, up_headers.items(), answer.raw)

        ctx.attributes[semconv.ATTR_POLICY_ROUTE] = route.name
        conversation = self._observe_conversation(ctx, body)
        reason = self._handoff_reason(conversation, None, request, body)
        if reason is not None and self.handoff is not None:
            return await self.handoff(ctx, route, reason, None, PASS)
        masker = Masker()
        input_decision = "pass"
        if route.input:
            decision, changed = await guard.check_input(ctx, route, body, masker)
            input_decision = decision.action
            if decision.action in FAILURES:
                reason = self._handoff_reason(conversation, decision.action)
                if reason is not None and self.handoff is not None:
                    return await self.handoff(ctx, route, reason, None, decision)
            if decision.action == "block":
                return blocked_response(ctx, route, "input", decision)
            if changed:
                raw = orjson.dumps(body)
        call = GuardedCall(
            request=request, ctx=ctx, headers=headers, body=body, raw=raw, route=route,
            masker=masker, restore=masker.snapshot()[0] if len(masker) else None,
            endpoint=path, input_decision=input_decision,
        )
        if ctx.stream:
            verdict = await self.streams.guarded(call)
            if verdict is None or verdict.action == "deliver":
                response = verdict.outcome.result if verdict is not None else None
                assert isinstance(response, web.StreamResponse)
                return response
            return await self._act(call, verdict, None, conversation)
        return await self._unary(call, conversation)

    def _observe_conversation(self, ctx: RequestContext, body: dict[str, Any]) -> str | None:
        service = self.handoff_service
        if service is None:
            return None
        from sidecar.handoff.tracker import conversation_key, user_turns

        conversation: str | None = conversation_key(ctx.conversation_id, ctx.user)
        service.observe_turn(conversation, user_turns(ctx.route, body))
        return conversation

    def _handoff_reason(
        self,
        conversation: str | None,
        action: str | None,
        request: web.Request | None = None,
        body: dict[str, Any] | None = None,
    ) -> str | None:
        """Why this request goes to a person now: policy, client flag, conversation triggers."""
        service = self.handoff_service
        if service is None:
            return "policy" if action == "handoff" else None
        requested = False
        if request is not None:
            from sidecar.handoff.tracker import handoff_requested

            requested = handoff_requested(request.headers, body)
        if action in FAILURES:
            service.record_failure(conversation)
        reason: str | None = service.reason(
            conversation=conversation, action=action, requested=requested
        )
        return reason

    async def _unary(
        self, call: GuardedCall, conversation: str | None
    ) -> web.StreamResponse:
        ctx, guard = call.ctx, self.guard
        assert guard is not None
        log = AttemptLog(ctx.t0, ctx.model_requested)
        engine = Engine(call.route, UnaryStrategy(call, self.upstreams, guard), self.upstreams,
                        call.endpoint, log, corrective=ctx.route == semconv.OP_CHAT)
        try:
            verdict = await engine.run()
        finally:
            ctx.attempts.extend(log.records)
            ctx.retries += log.retries
        answer = verdict.outcome.result
        if answer is not None:
            ctx.upstream = answer.upstream.label
            ctx.attributes.update(answer.extra)
        if verdict.action == "fail":
            if answer is not None and verdict.outcome.error is None:  # the upstream's own 5xx
                ctx.upstream_done_at = answer.facts.upstream_done_at
                return upstream_response(ctx, answer.status, answer.headers.items(), answer.raw)
            assert verdict.outcome.error is not None
            raise verdict.outcome.error
        if answer is not None and answer.status != 200:  # a 4xx: the client's, passed through
            ctx.upstream_done_at = answer.facts.upstream_done_at
            return upstream_response(ctx, answer.status, answer.headers.items(), answer.raw)
        if answer is not None:
            ctx.adopt(answer.facts)
        if verdict.action != "deliver":
            return await self._act(call, verdict, ctx.output_text, conversation)
        ctx.settle(call.input_decision, verdict.decision.action)
        if verdict.exhausted:
            ctx.attributes[semconv.ATTR_EXHAUSTED] = "1"
        assert answer is not None
        payload, decoded = answer.body()
        return upstream_response(ctx, 200, answer.headers.items(), payload, decoded=decoded)

    async def _act(
        self, call: GuardedCall, verdict: Verdict[Any], answer: str | None,
        conversation: str | None,
    ) -> web.StreamResponse:
        """Carry out a verdict other than ``deliver``: block, hand off, or fail."""
        ctx, route = call.ctx, call.route
        if verdict.exhausted:
            ctx.attributes[semconv.ATTR_EXHAUSTED] = "1"
        if verdict.action == "fail":
            error = verdict.outcome.error
            assert error is not None
            raise error
        if verdict.reason == "upstream_failure":
            if self.handoff is not None:
                return await self.handoff(ctx, route, "upstream_failure", None, verdict.decision)
            error = verdict.outcome.error
            if error is not None:
                raise error
        reason = self._handoff_reason(conversation, verdict.action)
        if reason is not None and reason != "policy" and self.handoff is not None:
            return await self.handoff(ctx, route, reason, answer, verdict.decision)
        if verdict.action == "handoff":
            if self.handoff is not None:
                return await self.handoff(ctx, route, "policy", answer, verdict.decision)
            ctx.attributes[semconv.ATTR_HANDOFF_UNAVAILABLE] = "1"
        return blocked_response(ctx, route, "output", verdict.decision)
