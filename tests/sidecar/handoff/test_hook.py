"""The pipeline's hand-off hook: request context in, stored hand-off and answer out."""

from __future__ import annotations

import orjson
from aiohttp import web

from sidecar.context import RequestContext
from sidecar.handoff.config import HandoffSettings
from sidecar.handoff.conversation import parts_from_body
from sidecar.handoff.hook import make_handoff_hook, place_findings
from sidecar.handoff.model import UNPLACED, ConversationPart, Span
from sidecar.handoff.service import HandoffService
from sidecar.handoff.store import MemoryHandoffStore
from sidecar.policy import Decision, Route
from sidecar.record import FindingRecord
from sidecar.sse import SseParser


def _ctx(body: dict[str, object], *, stream: bool = False) -> RequestContext:
    ctx = RequestContext(
        request_id="r" * 32, trace_id="a" * 32, span_id="b" * 16, parent_span_id=None,
        trace_flags="01", method="POST", path="/v1/chat/completions", route="chat",
        upstream="http://127.0.0.1:1",
    )
    ctx.body = body
    ctx.stream = stream
    ctx.model_requested = "m1"
    ctx.user = "alice"
    return ctx


def _finding(stage: str, start: int, end: int, action: str = "handoff") -> FindingRecord:
    return FindingRecord(stage=stage, detector="toxicity", label="insult", score=0.9,
                         start=start, end=end, action=action)


async def test_hook_stores_and_answers() -> None:
    store = MemoryHandoffStore()
    service = HandoffService(HandoffSettings(enabled=True, client_message="Hold on."), store)
    hook = make_handoff_hook(service)
    ctx = _ctx({"messages": [{"role": "user", "content": "you idiot"}]})
    ctx.findings = [_finding("input", 4, 9), _finding("output", 0, 3)]
    response = await hook(ctx, Route(name="chat"), "output_guardrail", "Bad answer",
                          Decision("handoff", ("toxicity/insult",)))
    assert isinstance(response, web.Response) and response.status == 200
    hid = response.headers["x-railwatch-handoff-id"]
    assert ctx.handoff_id == hid and ctx.decision == "handoff" and ctx.output_text == "Hold on."
    assert isinstance(response.body, bytes)
    body = orjson.loads(response.body)
    assert body["choices"][0]["message"]["content"] == "Hold on."
    assert body["railwatch"]["handoff_id"] == hid
    h = await service.get(hid)
    assert h is not None
    assert h.reason == "output_guardrail: toxicity/insult" and h.model == "m1"
    assert h.messages[0].text[h.messages[0].spans[0].start:h.messages[0].spans[0].end] == "idiot"
    assert h.answer is not None and h.answer.spans[0].end == 3
    assert service.tracker.get("alice") is not None  # the conversation is marked handed off


async def test_hook_streams() -> None:
    service = HandoffService(HandoffSettings(enabled=True), MemoryHandoffStore())
    ctx = _ctx({"messages": [{"role": "user", "content": "hi"}], "stream": True}, stream=True)
    response = await make_handoff_hook(service)(ctx, Route(name="chat"), "client_request",
                                                None, Decision("pass"))
    assert isinstance(response, web.Response)
    assert response.content_type == "text/event-stream"
    assert isinstance(response.body, bytes)
    events = SseParser().feed(response.body)
    assert events[-1].data == b"[DONE]"


def test_findings_are_placed_only_when_unambiguous() -> None:
    one = [ConversationPart("user", "you idiot")]
    two = [ConversationPart("system", "be nice"), ConversationPart("user", "you idiot")]
    answer = ConversationPart("assistant", "no")
    placed, ans, unplaced = place_findings(one, answer, [_finding("input", 4, 9),
                                                         _finding("output", 0, 2)])
    assert placed[0].spans and ans is not None and ans.spans and not unplaced
    placed, _, unplaced = place_findings(two, None, [_finding("input", 4, 9)])
    assert not any(p.spans for p in placed) and len(unplaced) == 1  # which message? unknown
    placed, _, unplaced = place_findings(one, None, [_finding("input", 4, 9, "mask")])
    assert not placed[0].spans and len(unplaced) == 1  # masking moved the offsets
    placed, _, unplaced = place_findings(one, None, [_finding("input", 4, 99)])
    assert not placed[0].spans and len(unplaced) == 1  # does not fit


async def test_unplaced_findings_are_kept() -> None:
    service = HandoffService(HandoffSettings(enabled=True), MemoryHandoffStore())
    h = await service.create(reason="policy", messages=[ConversationPart("user", "x")],
                             unplaced=[Span(0, 1, "insult", "toxicity", 0.9, "input")])
    got = await service.get(h.id)
    assert got is not None and [i for i, _ in got.findings] == [UNPLACED]


def test_parts_from_body_moves_spans_of_multipart_content() -> None:
    body = {"messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "hello"},
                                     {"type": "image_url", "image_url": {"url": "x"}},
                                     {"type": "text", "text": "you idiot"}]},
    ]}
    spans = {("messages", 1, "content", 2, "text"): [Span(4, 9, "insult")],
             ("messages", 0, "content"): [Span(0, 3, "X")]}
    parts = parts_from_body("chat", body, spans)
    assert [p.role for p in parts] == ["system", "user"]
    user = parts[1]
    assert user.text == "hello\nyou idiot"
    assert user.text[user.spans[0].start:user.spans[0].end] == "idiot"
    assert parts[0].spans == (Span(0, 3, "X"),)
    prompts = parts_from_body("text_completion", {"prompt": ["a", "b"]},
                              {("prompt", 1): [Span(0, 1, "Y")]})
    assert [(p.text, p.spans) for p in prompts] == [("a", ()), ("b", (Span(0, 1, "Y"),))]
    assert parts_from_body("chat", None) == []
