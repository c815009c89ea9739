"""Reading OpenAI responses into the context: unary bodies and SSE streams.

:class:`StreamObserver` sees a stream's bytes *after* they were written to the
client, so observation never delays delivery. It parses events incrementally
(:class:`~sidecar.sse.SseParser`), keeps each choice's text and tool-call
arguments, the response id, served model, ``system_fingerprint``, finish
reasons and usage. When the upstream sends no ``usage`` (llama.cpp's server
ignores ``stream_options.include_usage``), completion tokens are counted as
content-bearing deltas (servers such as vLLM and llama.cpp send one token per
delta) and prompt tokens with :func:`count_tokens` on the prompt text; both are
estimates, marked ``usage_source="counted"``.

Time to first token and the last token's time are taken where the client sees
them: the lean path observes after each write; a guarded stream's observer is
built with ``mark_tokens=False`` and the stream guard's caller marks the tokens it
writes. A stream the upstream ended with ``[DONE]`` but no ``finish_reason`` is
marked truncated (``error_type="upstream_truncated"``, status stays 200).
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

from sidecar import jsonio, semconv
from sidecar.context import AnswerFacts, RequestContext
from sidecar.sse import EventSizeLimit, SseParser
# Runs of word characters and single other non-space characters: about one token per
# English word or punctuation mark (BPE tokenizers cut long words into 2-3 more).
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
# Chat templates add a few tokens per message (role markers, separators).
_PER_MESSAGE_TOKENS = 4


def count_tokens(ctx: RequestContext) -> int | None:
    """An estimate of the prompt's tokens from its text (None when there is none).

    Cost: one regex scan of the prompt text, about 1 µs per 100 characters.
    """
    text = ctx.prompt_text
    if not text:
        return None
    messages = ctx.body.get("messages") if ctx.body is not None else None
    overhead = _PER_MESSAGE_TOKENS * len(messages) if isinstance(messages, list) else 0
    return sum(1 for _ in _TOKEN_RE.finditer(text)) + overhead



# Where an answer is observed into: the request itself, or one attempt's facts.
Sink = RequestContext | AnswerFacts


def _apply_usage(ctx: Sink, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    u = ctx.usage
    p, c, t = usage.get("prompt_tokens"), usage.get("completion_tokens"), usage.get("total_tokens")
    u.prompt_tokens = p if isinstance(p, int) else u.prompt_tokens
    u.completion_tokens = c if isinstance(c, int) else u.completion_tokens
    u.total_tokens = t if isinstance(t, int) else u.total_tokens
    u.source = "upstream"


def _apply_meta(ctx: Sink, doc: dict[str, Any]) -> None:
    if ctx.response_id is None:
        rid = doc.get("id")
        ctx.response_id = rid if isinstance(rid, str) else None
    model = doc.get("model")
    if isinstance(model, str):
        ctx.model_served = model
    fp = doc.get("system_fingerprint")
    if isinstance(fp, str):
        ctx.system_fingerprint = fp


def note_response_format(ctx: RequestContext) -> None:
    """Record on the trace that the request asked for JSON (``railwatch report``
    judges JSON validity over those requests only)."""
    fmt = ctx.body.get("response_format") if ctx.body is not None else None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("json_object", "json_schema"):
        ctx.attributes[semconv.ATTR_REQUEST_RESPONSE_FORMAT] = kind


def observe_unary(ctx: Sink, body: bytes) -> dict[str, Any] | None:
    """Fill ``ctx`` from a non-streaming completion body; returns the parsed doc."""
    try:
        doc, _lenient = jsonio.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    observe_answer(ctx, doc)
    return doc


def observe_lean(ctx: RequestContext, status: int, decoded: bytes | None) -> None:
    """The lean path's whole answer, just read: marks ``upstream_done_at`` and fills
    ``ctx`` from a 200's decoded body (None: undecodable, nothing read). Never raises."""
    ctx.upstream_done_at = time.perf_counter()
    if status == 200 and decoded:
        observe_unary(ctx, decoded)


def observe_answer(ctx: Sink, doc: dict[str, Any]) -> None:
    """Fill ``ctx`` from a parsed non-streaming completion (never raises on odd shapes)."""
    _apply_meta(ctx, doc)
    _apply_usage(ctx, doc.get("usage"))
    choices = doc.get("choices")
    if isinstance(choices, list):
        texts: list[str] = []
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                ctx.finish_reasons.append(reason)
            message = choice.get("message")
            if isinstance(message, dict):
                content = message.get("content")
                if isinstance(content, str):
                    texts.append(content)
            else:
                text = choice.get("text")
                if isinstance(text, str):
                    texts.append(text)
        if texts:
            ctx.output_parts = ["\n".join(texts)] if len(texts) > 1 else texts


BROKEN_RESPONSE = "upstream_broken_response"
TOO_LARGE = "upstream_response_too_large"
MAX_CHOICES = 128  # a choice index past this is not an answer we asked for


def _is_index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_CHOICES


def _opt_str(value: Any) -> bool:
    return value is None or isinstance(value, str)


def valid_chunk(doc: dict[str, Any]) -> bool:
    """Does a parsed stream event have the types an OpenAI chunk promises, for every
    field the sidecar reads (choices, index, delta, content, text, tool calls,
    finish_reason, usage)? Fields it does not read are not checked."""
    choices = doc.get("choices")
    if choices is not None and not isinstance(choices, list):
        return False
    for choice in choices or ():
        if not isinstance(choice, dict) or not _is_index(choice.get("index", 0)):
            return False
        if not _opt_str(choice.get("finish_reason")) or not _opt_str(choice.get("text")):
            return False
        delta = choice.get("delta")
        if delta is None:
            continue
        if not isinstance(delta, dict) or not _opt_str(delta.get("content")):
            return False
        calls = delta.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            return False
        for call in calls or ():
            if not isinstance(call, dict) or not _is_index(call.get("index", 0)):
                return False
            fn = call.get("function")
            if fn is not None and not (isinstance(fn, dict) and _opt_str(fn.get("arguments"))):
                return False
    usage = doc.get("usage")
    return usage is None or isinstance(usage, dict)


class StreamObserver:
    """Follows one SSE completion stream. ``feed`` is cheap and never raises.

    ``broken`` is ``None`` while the stream is sound; it becomes
    ``"upstream_broken_response"`` on the first event whose fields have the wrong
    types (``"index": "x"``; the event is skipped), or ``"upstream_response_too_large"``
    when a line or event exceeds ``max_event_bytes``. The stream's owner ends the
    stream with an error event when it is set.

    ``request``: the request (counting prompt tokens, marking a truncated stream);
    ``ctx`` itself when it is one. ``mark_tokens=False``: the caller marks tokens as
    it writes them to the client (a guarded stream).
    """

    def __init__(self, ctx: Sink, max_event_bytes: int = 8 * 1024 * 1024, *,
                 request: RequestContext | None = None, mark_tokens: bool = True,
                 max_total_bytes: int | None = None) -> None:
        self.ctx = ctx
        # the whole stream, like a unary answer (``upstream.max_response_bytes``): an
        # endless stream of valid events must not grow the text kept for checks and trace
        self.max_total_bytes = max_total_bytes
        self.total_bytes = 0
        self.mark = mark_tokens
        self.request = request if request is not None else (
            ctx if isinstance(ctx, RequestContext) else None)
        self.broken: str | None = None
        self.parser = SseParser(max_event_bytes)
        self.size_limit = EventSizeLimit(max_event_bytes)
        self.choices: dict[int, list[str]] = {}
        self.tool_args: dict[tuple[int, int], list[str]] = {}
        self.done = False
        self.events = 0
        self.counted = 0

    def _count(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        limit = self.max_total_bytes
        if limit is not None and self.total_bytes > limit and self.broken is None:
            self.broken = TOO_LARGE

    def feed(self, chunk: bytes) -> None:
        self._count(chunk)
        events = self.parser.feed(chunk)
        if self.parser.overflowed and self.broken is None:
            self.broken = TOO_LARGE
        if events:
            now = time.perf_counter()
            for event in events:
                try:
                    self._event(event.data, now)
                except (AttributeError, TypeError):  # a malformed event: skip, keep streaming
                    continue

    def limit(self, chunk: bytes) -> None:
        """For a stream someone else parses (the stream guard): mark it broken once a
        line or event runs past ``max_event_bytes``, or the stream past ``max_total_bytes``.
        Never raises."""
        self._count(chunk)
        if not self.size_limit.feed(chunk) and self.broken is None:
            self.broken = TOO_LARGE

    def _event(self, data: bytes, now: float) -> None:
        self.events += 1
        if data == b"[DONE]":
            self.done = True
            return
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if isinstance(doc, dict):
            self._doc(doc, now)

    def observe_doc(self, doc: dict[str, Any]) -> None:
        """One event someone else already parsed (the stream guard); never raises."""
        self.events += 1
        try:
            self._doc(doc, time.perf_counter())
        except (AttributeError, TypeError):  # a malformed event: skip, keep streaming
            pass

    def _doc(self, doc: dict[str, Any], now: float) -> None:
        if not valid_chunk(doc):
            self.broken = self.broken or BROKEN_RESPONSE
            return
        ctx = self.ctx
        if ctx.response_id is None:
            _apply_meta(ctx, doc)
        usage = doc.get("usage")
        if usage:
            _apply_usage(ctx, usage)
        choices = doc.get("choices")
        if not choices:
            return
        for choice in choices:
            index = choice.get("index", 0)
            reason = choice.get("finish_reason")
            if reason:
                ctx.finish_reasons.append(reason)
            delta = choice.get("delta")
            if delta is None:  # text completion stream
                text = choice.get("text")
                if text:
                    self.choices.setdefault(index, []).append(text)
                    self.counted += 1
                    if self.mark:
                        ctx.mark_token(now)
                continue
            content = delta.get("content")
            if content:
                self.choices.setdefault(index, []).append(content)
                self.counted += 1
                if self.mark:
                    ctx.mark_token(now)
            calls = delta.get("tool_calls")
            if calls:
                for call in calls:
                    fn = call.get("function") or {}
                    args = fn.get("arguments")
                    if args:
                        self.tool_args.setdefault((index, call.get("index", 0)), []).append(args)
                self.counted += 1
                if self.mark:
                    ctx.mark_token(now)

    def close(self, delivered: dict[int, int] | None = None, *, done: bool = False) -> None:
        """End of stream: flush the parser, settle text and token counts into the context.

        ``delivered`` (choice -> characters the client got) limits the recorded text
        and counted tokens to what reached the client (a guarded stream that was
        abandoned while text was held). ``done``: the upstream's ``[DONE]`` was seen
        by whoever parsed the events (the stream guard). Never raises.
        """
        for event in self.parser.close():
            self._event(event.data, time.perf_counter())
        ctx = self.ctx
        request = self.request
        counted = self.counted
        if self.choices:
            if delivered is not None:
                counted = 0
                kept: dict[int, list[str]] = {}
                for i, parts in self.choices.items():
                    room = delivered.get(i, 0)
                    out = kept[i] = []
                    for part in parts:
                        if room <= 0:
                            break
                        out.append(part[:room])
                        room -= len(part)
                        counted += 1
                self.choices = {i: p for i, p in kept.items() if p}
            texts = ["".join(self.choices[i]) for i in sorted(self.choices)]
            ctx.output_parts = ["\n".join(texts)] if len(texts) > 1 else texts
        usage = ctx.usage
        if usage.source is None:
            if counted:
                usage.completion_tokens = counted
            usage.prompt_tokens = count_tokens(request) if request is not None else None
            if counted or usage.prompt_tokens is not None:
                usage.source = "counted"
        if (request is not None and (self.done or done) and not ctx.finish_reasons
                and request.error_type is None):
            request.error_type = "upstream_truncated"  # [DONE] without any finish_reason
            request.attributes[semconv.ATTR_STREAM_TRUNCATED] = "1"
