"""Guarded streams in-process: generators checked in windows by the proxy's stream guard.

Each item the guarded generator yields (an ``openai`` chunk, or a piece of text) is
written as the SSE event the proxy would have seen and fed to the same
:class:`~sidecar.pipeline.stream_guard.StreamGuard` (windows with overlap, masks in
held text, input placeholders restored across items); what the guard releases is
turned back into items of the same kind. A violation raises
:class:`~sidecar.errors.GuardrailViolation` after the released items (text that
passed its check); nothing after it is yielded. Streams make one attempt: a
``retry`` or ``fallback`` verdict raises as well (the caller may call again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson

from detectors.base import TextContext
from sidecar.context import AnswerFacts, RequestContext
from sidecar.errors import GuardrailViolation
from sidecar.masking import Masker
from sidecar.pipeline.observe import StreamObserver
from sidecar.pipeline.stream_guard import StreamStep
from sidecar.pipeline.streaming import delivered_stream_action, window_guard
from sidecar.policy import Decision, Route, merge
from sidecar.sdk.runtime import SdkRuntime
from sidecar.sse import SseParser, encode

log = logging.getLogger(__name__)

_ABORT_WAIT_S = 5.0  # for the SDK loop to stop a stream's checks


class StreamAdapter:
    """Items <-> SSE events: ``openai`` chunks (``to_json``/``model_validate``), dicts,
    or plain strings (sent as chat deltas, given back as strings)."""

    def __init__(self) -> None:
        self.kind: type[Any] | None = None  # the chunk class, once seen
        self.text = False

    def encode(self, item: Any) -> bytes:
        if isinstance(item, str):
            self.text = True
            return encode({"object": "chat.completion.chunk",
                           "choices": [{"index": 0, "delta": {"content": item}}]})
        to_json = getattr(item, "to_json", None)
        if callable(to_json):
            self.kind = type(item)
            encoded = str(to_json(indent=None))
            return b"data: " + encoded.encode("utf-8") + b"\n\n"
        return encode(item)

    def decode(self, data: bytes, parser: SseParser) -> list[Any]:
        items: list[Any] = []
        for event in parser.feed(data):
            if event.data is None or event.data == b"[DONE]":
                continue
            doc = orjson.loads(event.data)
            if not isinstance(doc, dict) or "railwatch" in doc and not doc.get("choices"):
                continue  # the guard's own cut event: the violation is raised instead
            if self.text:
                for choice in doc.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        items.append(content)
            elif self.kind is not None:
                items.append(self.kind.model_validate(doc))
            else:
                items.append(doc)
        return items


class GuardedStream:
    """State of one guarded stream; the sync and async iterators below drive it."""

    def __init__(self, rt: SdkRuntime, ctx: RequestContext, route: Route, masker: Masker,
                 restore_input: bool, body: dict[str, Any], input_decision: str = "pass",
                 on_end: Callable[[], None] | None = None) -> None:
        self.rt, self.ctx, self.route, self.on_end = rt, ctx, route, on_end
        self.input_decision = input_decision
        self.facts = AnswerFacts()
        self.observer = StreamObserver(self.facts)
        self.decisions: list[Decision] = []
        assert rt.guard is not None
        context = TextContext(stage="output", response_format=body.get("response_format"),
                              tools=body.get("tools"))
        self.guard = window_guard(rt.guard, route, ctx, context, masker,
                                  restore_input=restore_input, last_chance=False,
                                  decisions=self.decisions, observe=self.observer.observe_doc)
        self.adapter = StreamAdapter()
        self.parser = SseParser()
        self.released = False
        self.violation: GuardrailViolation | None = None  # a stop, raised after its items

    def items(self, step: StreamStep) -> list[Any]:
        """The items a step releases (text that passed its check). When the step also
        stopped the stream, the violation is kept for :meth:`check`, which the caller
        calls after giving out these items."""
        out = self.adapter.decode(step.data, self.parser) if step.data else []
        if out:
            self.released = True
            if self.ctx.first_token_at is None:
                self.ctx.first_token_at = time.perf_counter()
            self.ctx.last_token_at = time.perf_counter()
        if step.verdict is not None and (step.cut or step.before_first_byte):
            self._stop(step)  # (a passthrough stream's verdict is for the record only)
        return out

    def check(self) -> None:
        """Raise the violation of a step that stopped the stream (after its items)."""
        if self.violation is not None:
            raise self.violation

    def _stop(self, step: StreamStep) -> None:
        assert step.verdict is not None
        ctx = self.ctx
        ctx.status = 200 if self.released else 400
        ctx.error_type = None if self.released else "content_blocked"
        ctx.override("block")
        triggered = tuple(t for d in self.decisions for t in d.triggered)
        findings = tuple(
            {"detector": t.finding.detector, "label": t.finding.label,
             "score": round(float(t.finding.score), 6), "action": t.action}
            for t in triggered
        )
        self.violation = GuardrailViolation(
            step.verdict.action if not self.released else "block", "output",
            step.verdict.reasons, findings, ctx.trace_id)

    def finish(self) -> None:
        """The stream ended (exhausted, violated, or dropped by the caller): settle the
        trace and hand it over. Never raises.

        The decision is the proxy's for a delivered stream: the input stage's and the
        windows' verdicts, or ``block`` when a window had decided to stop the stream
        (``retry`` and ``fallback`` included: an SDK stream makes one attempt), also when
        the caller dropped the stream before the violation reached it."""
        self._abort_guard()
        self.observer.close()
        self.facts.first_token_at = self.facts.last_token_at = None  # the caller's side counts
        self.ctx.adopt(self.facts)
        action = delivered_stream_action(self.route.stream.mode, merge(self.decisions))
        if action is None:
            self.ctx.override("block")
        else:
            self.ctx.settle(self.input_decision, action)
        if self.ctx.status == 0:
            self.ctx.status = 200
        if self.on_end is not None:
            self.on_end()

    def _abort_guard(self) -> None:
        """Stop the guard's window checks, and wait until it has: a check still running
        (an async caller cancelled mid-feed) must not add a verdict after the decision
        is read. Never raises."""
        loop = self.rt.loop
        if loop.in_loop():
            self.guard.abort()
            return
        if loop.loop.is_closed():  # the runtime was shut down: no check runs any more
            return

        async def abort() -> None:
            self.guard.abort()

        try:
            loop.run(abort(), _ABORT_WAIT_S)
        except Exception:  # noqa: BLE001 - the SDK loop is gone or stuck: nothing to wait for
            log.warning("SDK stream: the guard could not be stopped; its decision may be early")


def iterate(stream: GuardedStream, source: Iterator[Any]) -> Iterator[Any]:
    loop = stream.rt.loop
    try:
        for item in source:
            step = loop.run(stream.guard.feed(stream.adapter.encode(item)))
            yield from stream.items(step)
            stream.check()
        yield from stream.items(loop.run(stream.guard.close()))
        stream.check()
    finally:
        stream.finish()


async def aiterate(stream: GuardedStream, source: AsyncIterator[Any]) -> AsyncIterator[Any]:
    loop = stream.rt.loop
    try:
        async for item in source:
            step = await loop.call(stream.guard.feed(stream.adapter.encode(item)))
            for out in stream.items(step):
                yield out
            stream.check()
        for out in stream.items(await loop.call(stream.guard.close())):
            yield out
        stream.check()
    finally:
        stream.finish()
