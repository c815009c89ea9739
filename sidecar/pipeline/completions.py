"""The OpenAI flow: ingress -> input guard -> upstream (with actions) -> output guard.

:class:`CompletionFlow` handles ``/v1/chat/completions``, ``/v1/completions`` and
``/v1/embeddings``. Without a matching policy route it is a lean pass-through
(parse, forward, observe). With one, the input guard may mask or block, unary
answers go through the actions stage (:mod:`sidecar.pipeline.actions`: retries,
fallbacks, ``then``) and the output guard, and streams go through the stream
flow (:mod:`sidecar.pipeline.streaming`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from sidecar.context import RequestContext
from sidecar.errors import UpstreamError
from sidecar.masking import PLACEHOLDER_PATTERN, Masker
from sidecar.pipeline import ingress
from sidecar.pipeline.actions import ACCEPTABLE, ActionRunner, Attempt, UpstreamSet
from sidecar.pipeline.guard import Guard
from sidecar.pipeline.observe import decode_body, observe_unary
from sidecar.pipeline.responses import blocked_response, upstream_response
from sidecar.pipeline.streaming import StreamFlow
from sidecar.pipeline.upstream import UpstreamClient, forward_request_headers
from sidecar.policy import PASS, SEVERITY, Decision, Route
from sidecar.settings import ServerSettings

# (ctx, route, reason, the answer the model gave or None, the decision) -> the client's response
HandoffHook = Callable[
    [RequestContext, Route, str, str | None, Decision], Awaitable[web.StreamResponse]
]
FAILURES = frozenset({"block", "retry", "fallback", "handoff"})


def input_restore(masker: Masker) -> Callable[[str], str]:
    """Restore only the placeholders the input guard issued (not output-leak masks)."""
    table = dict(masker.mapping)

    def restore(text: str) -> str:
        if "<" not in text:
            return text
        return PLACEHOLDER_PATTERN.sub(lambda m: table.get(m.group(0), m.group(0)), text)

    return restore


async def send_unary(
    client: UpstreamClient,
    request: web.Request,
    ctx: RequestContext,
    headers: CIMultiDict[str],
    payload: bytes | None,
) -> tuple[int, Any, bytes]:
    """(status, headers, body) of one non-streaming upstream exchange."""
    resp = await client.send(ctx, request.method, request.path_qs, headers, payload, stream=False)
    try:
        raw = await client.read_body(resp)
    finally:
        resp.release()
    ctx.upstream_done_at = time.perf_counter()
    return resp.status, resp.headers, raw


class CompletionFlow:
    def __init__(
        self,
        server: ServerSettings,
        upstreams: UpstreamSet,
        guard: Guard | None,
        streams: StreamFlow,
    ) -> None:
        self.server = server
        self.upstreams = upstreams
        self.guard = guard
        self.streams = streams
        self.handoff: HandoffHook | None = None
        self.handoff_service: Any = None  # HandoffService: conversation triggers

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
                self.upstreams.primary.client, request, ctx, headers, raw
            )
            if status == 200:
                _observe(ctx, up_headers, answer)
            return upstream_response(ctx, status, up_headers.items(), answer)

        ctx.attributes["railwatch.policy.route"] = route.name
        conversation = self._observe_conversation(request, ctx, body)
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
        restore = input_restore(masker) if len(masker) else None
        if ctx.stream:
            return await self.streams.guarded(
                request, ctx, headers, raw, route, masker, restore, body,
                lambda: self._stream_plan(route),
            )
        return await self._unary(request, ctx, headers, body, raw, route, masker, restore,
                                 input_decision, conversation)

    def _stream_plan(self, route: Route) -> list[Attempt]:
        """Streams try one attempt at a time: primary, retries, then the fallbacks."""
        primary = self.upstreams.primary
        plan = [Attempt("primary", primary, None)]
        plan += [Attempt("retry", primary, None) for _ in range(route.retry.times)]
        plan += [Attempt("fallback", self.upstreams.get(t.upstream), t.model)
                 for t in route.fallback]
        return plan

    def _observe_conversation(
        self, request: web.Request, ctx: RequestContext, body: dict[str, Any]
    ) -> str | None:
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
        self,
        request: web.Request,
        ctx: RequestContext,
        headers: CIMultiDict[str],
        body: dict[str, Any],
        raw: bytes,
        route: Route,
        masker: Masker,
        restore: Callable[[str], str] | None,
        input_decision: str,
        conversation: str | None = None,
    ) -> web.StreamResponse:
        guard = self.guard
        assert guard is not None
        check_output = bool(route.output) or restore is not None

        async def send(attempt: Attempt, payload: bytes) -> None:
            status, up_headers, answer = await send_unary(
                attempt.upstream.client, request, ctx, headers, payload
            )
            attempt.status, attempt.headers, attempt.raw = status, up_headers, answer
            if status != 200:
                return
            try:
                doc = orjson.loads(decode_body(answer, up_headers.get("Content-Encoding")))
            except (ValueError, OSError):
                doc = None
            if isinstance(doc, dict) and "error" in doc and "choices" not in doc and "data" not in doc:
                # a 200 carrying an OpenAI error: a failed upstream answer, retried as one
                attempt.error = UpstreamError(
                    "the upstream answered with an error body", code="upstream_error_body"
                )
                return
            if not check_output:
                return
            if not isinstance(doc, dict):
                # nothing the output detectors can read: it passes (fail-open), marked
                ctx.attributes["railwatch.output.unchecked"] = "unparsed"
                return
            attempt.doc = doc
            attempt.decision, attempt.changed = await guard.check_output(
                ctx, route, doc, masker, restore
            )

        final = await ActionRunner(ctx, route, self.upstreams, send, body, raw).run()
        ctx.upstream = final.upstream.label
        if final.error is not None and (final.status == 0 or final.status == 200):
            if route.then == "handoff" and self.handoff is not None:
                return await self.handoff(ctx, route, "upstream_failure", None, final.decision)
            raise final.error
        if final.status == 200:
            _observe(ctx, final.headers, final.raw)
        else:
            return upstream_response(ctx, final.status, final.headers.items(), final.raw)
        action = final.decision.action
        if action not in ACCEPTABLE:
            if action in ("retry", "fallback"):  # rounds spent: the route's `then` decides
                action = route.then
                ctx.attributes["railwatch.exhausted"] = "1"
            if action != "pass":
                reason = self._handoff_reason(conversation, action)
                if reason is not None and reason != "policy" and self.handoff is not None:
                    answer = ctx.output_text
                    return await self.handoff(ctx, route, reason, answer, final.decision)
            if action == "block":
                return blocked_response(ctx, route, "output", final.decision)
            if action == "handoff":
                if self.handoff is not None:
                    answer = ctx.output_text
                    return await self.handoff(ctx, route, "policy", answer, final.decision)
                ctx.attributes["railwatch.handoff.unavailable"] = "1"
                return blocked_response(ctx, route, "output", final.decision)
            action = "flag"  # then: pass, flagged
        ctx.decision = max(input_decision, action, key=SEVERITY.__getitem__)
        if final.changed and final.doc is not None:
            return upstream_response(ctx, 200, final.headers.items(), orjson.dumps(final.doc),
                                     decoded=True)
        return upstream_response(ctx, 200, final.headers.items(), final.raw)


def _observe(ctx: RequestContext, headers: Any, raw: bytes) -> None:
    try:
        body = decode_body(raw, headers.get("Content-Encoding"))
    except (ValueError, OSError):
        return
    if body:
        observe_unary(ctx, body)
