"""The pipeline's hand-off hook: turn a request into a stored hand-off and the client's answer.

:func:`make_handoff_hook` returns the callable the completions stage calls as
``hook(ctx, route, reason, answer, decision)`` (a :data:`Hook`):
it records the hand-off (conversation from ``ctx.body``, findings from
``ctx.findings``, the model's withheld ``answer``), marks the context (decision
``handoff``, ``handoff_id``, status 200, the message as output) and returns the
response (JSON, or the whole SSE stream for ``stream: true``).

Placing findings: the trace's findings carry offsets into the text they were
found in but not *which* text, so a finding is marked in a message only when
that is unambiguous (the request has one text, or the finding is on the answer)
and its stage did not rewrite the text (masking moves offsets). Other findings
are kept as *unplaced*: listed for the reviewer, not marked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from aiohttp import web

from sidecar import semconv
from sidecar.context import RequestContext
from sidecar.handoff.conversation import parts_from_body
from sidecar.handoff.model import ConversationPart, Span
from sidecar.handoff.response import handoff_response
from sidecar.handoff.service import HandoffService
from sidecar.handoff.tracker import conversation_key
from sidecar.policy import Decision, Route

Hook = Callable[
    [RequestContext, Route, str, str | None, Decision], Awaitable[web.StreamResponse]
]


def place_findings(
    parts: Sequence[ConversationPart], answer: ConversationPart | None, findings: Sequence[Any]
) -> tuple[list[ConversationPart], ConversationPart | None, list[Span]]:
    """Attach trace findings (``FindingRecord``) to the texts they are in, when sure."""
    by_stage: dict[str, list[Span]] = {"input": [], "output": []}
    rewritten: set[str] = set()
    for f in findings:
        span = Span.from_finding(f)
        by_stage.setdefault(span.stage, []).append(span)
        if span.action == "mask":
            rewritten.add(span.stage)
    unplaced: list[Span] = []
    texts = [i for i, p in enumerate(parts) if p.text]
    placed = list(parts)
    inputs = by_stage.pop("input")
    if len(texts) == 1 and "input" not in rewritten:
        target = placed[texts[0]]
        fits = [s for s in inputs if s.end <= len(target.text)]
        placed[texts[0]] = replace(target, spans=target.spans + tuple(fits))
        unplaced.extend(s for s in inputs if s.end > len(target.text))
    else:
        unplaced.extend(inputs)
    outputs = by_stage.pop("output")
    if answer is not None and "output" not in rewritten:
        fits = [s for s in outputs if s.end <= len(answer.text)]
        answer = replace(answer, spans=answer.spans + tuple(fits))
        unplaced.extend(s for s in outputs if s.end > len(answer.text))
    else:
        unplaced.extend(outputs)
    for rest in by_stage.values():
        unplaced.extend(rest)
    return placed, answer, unplaced


def make_handoff_hook(service: HandoffService) -> Hook:
    """The completions stage's ``handoff`` hook for ``service``. The hook raises
    ``HandoffUnavailableError`` (503) when the hand-off cannot be stored."""
    message = service.settings.client_message

    async def hook(
        ctx: RequestContext, route: Route, reason: str, answer: str | None, decision: Decision
    ) -> web.StreamResponse:
        reasons = decision.reasons
        full_reason = f"{reason}: {', '.join(reasons)}" if reasons else reason
        parts, answer_part, unplaced = place_findings(
            parts_from_body(ctx.route, ctx.body),
            ConversationPart("assistant", answer) if answer is not None else None,
            ctx.findings,
        )
        handoff = await service.create(
            reason=full_reason[:500],
            messages=parts,
            answer=answer_part,
            unplaced=unplaced,
            request_id=ctx.request_id,
            trace_id=ctx.trace_id,
            conversation_id=ctx.conversation_id,
            conversation=conversation_key(ctx.conversation_id, ctx.user),
            tenant=ctx.tenant,
            route=ctx.route,
            model=ctx.model_served or ctx.model_requested or "",
        )
        ctx.handoff_id = handoff.id
        ctx.override("handoff")
        ctx.status = 200
        ctx.finish_reasons = ["stop"]
        ctx.output_parts = [message]
        ctx.attributes[semconv.ATTR_HANDOFF_REASON] = reason
        return handoff_response(
            ctx.route, handoff.id, message, stream=ctx.stream,
            model=ctx.model_served or ctx.model_requested, trace_id=ctx.trace_id,
            created=ctx.started_at, poll_token=service.poll_tokens.token(handoff.id),
        )

    return hook
