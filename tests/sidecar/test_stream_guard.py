"""The stream guard: windows, overlap, hold-back, masks, cuts, restore, modes.

Streams are hand-built OpenAI SSE bytes split at many boundaries (mid ``data:``
line, mid UTF-8 character). The checkers here are scripted test doubles for the
checker callable (a word list, an e-mail regex); the proxy's integration tests use
the real detectors and policy.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk

from detectors.base import Finding
from sidecar.masking import Masker
from sidecar.pipeline._stream_text import holdback
from sidecar.pipeline.stream_guard import StreamGuard, StreamStep, WindowCheck, WindowVerdict
from sidecar.policy import Decision, Triggered
from sidecar.sse import SseParser

META = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
        "model": "m-1", "system_fingerprint": "fp_1"}
TEXT_META = {"id": "cmpl-1", "object": "text_completion", "created": 1700000000, "model": "m-1"}
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PASS = WindowVerdict()


# --- stream builders ------------------------------------------------------------------


def sse(doc: Any) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    return sse({**META, "choices": choices, **extra})


def delta(content: str | None = None, index: int = 0, finish: str | None = None,
          **fields: Any) -> dict[str, Any]:
    d: dict[str, Any] = dict(fields)
    if content is not None:
        d["content"] = content
    return {"index": index, "delta": d, "logprobs": None, "finish_reason": finish}


def chat_stream(pieces: Sequence[str], *, usage: bool = False, done: bool = True) -> bytes:
    extra: dict[str, Any] = {"usage": None} if usage else {}
    out = [chunk([delta("", role="assistant")], **extra)]
    out += [chunk([delta(p)], **extra) for p in pieces]
    out.append(chunk([delta(finish="stop")], **extra))
    if usage:
        out.append(sse({**META, "choices": [], "usage": {
            "prompt_tokens": 5, "completion_tokens": len(pieces), "total_tokens": 5 + len(pieces)}}))
    if done:
        out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def words(n: int, start: int = 0) -> list[str]:
    """n token-like deltas: "w0", " w1", " w2", ..."""
    return [("" if i == 0 else " ") + f"w{i}" for i in range(start, start + n)]


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    out, prev = [], 0
    for c in sorted(set(cuts)):
        if prev < c < len(data):
            out.append(data[prev:c])
            prev = c
    out.append(data[prev:])
    return out


def every(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


# --- checkers (test doubles for the runner + policy) ------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.checks: list[WindowCheck] = []

    async def __call__(self, check: WindowCheck) -> WindowVerdict:
        self.checks.append(check)
        return self.verdict(check)

    def verdict(self, check: WindowCheck) -> WindowVerdict:
        return PASS


class WordChecker(Recorder):
    def __init__(self, word: str = "idiot", action: str = "block") -> None:
        super().__init__()
        self.word, self.action = word, action

    def verdict(self, check: WindowCheck) -> WindowVerdict:
        if self.word in check.text.lower():
            return WindowVerdict(self.action, ("toxicity:insult",))
        return PASS


class EmailChecker(Recorder):
    def verdict(self, check: WindowCheck) -> WindowVerdict:
        spans = tuple(Finding("pii", "EMAIL_ADDRESS", 0.9, m.start(), m.end())
                      for m in EMAIL.finditer(check.text))
        return WindowVerdict("mask", ("pii:EMAIL_ADDRESS",), spans) if spans else PASS


# --- running and reading ----------------------------------------------------------------


async def run(guard: StreamGuard, chunks: Iterable[bytes], *, broken: bool = False
              ) -> tuple[bytes, list[StreamStep]]:
    steps = []
    for c in chunks:
        steps.append(await guard.feed(c))
        await asyncio.sleep(0)  # as reading the network would: background checks run
    steps.append(await guard.close(broken=broken))
    return b"".join(s.data for s in steps), steps


class Out:
    """What a client sees: events parsed the way an OpenAI client would."""

    def __init__(self, data: bytes, text_completion: bool = False) -> None:
        self.events = [e.data for e in SseParser().feed(data + b"\n\n")]
        self.done = bool(self.events) and self.events[-1] == b"[DONE]"
        self.docs = [orjson.loads(e) for e in self.events if e != b"[DONE]" and e.startswith(b"{")]
        for doc in self.docs:
            if "choices" in doc and not text_completion:
                # every chunk parses as the official client's type (its text-completion
                # type is the non-streaming one, which does not allow a null finish_reason)
                ChatCompletionChunk.model_validate(doc)
            elif "choices" in doc:
                Completion.model_construct(**doc)
        self.texts: dict[int, str] = {}
        self.finish: dict[int, str] = {}
        self.guardrail: dict[str, Any] | None = None
        for doc in self.docs:
            if "railwatch" in doc:
                self.guardrail = doc["railwatch"]
            for c in doc.get("choices", ()):
                piece = c["text"] if text_completion else c["delta"].get("content")
                self.texts[c["index"]] = self.texts.get(c["index"], "") + (piece or "")
                if c.get("finish_reason"):
                    self.finish[c["index"]] = c["finish_reason"]

    def text(self, index: int = 0) -> str:
        return self.texts.get(index, "")


def guard(checker: Any, **kw: Any) -> StreamGuard:
    kw.setdefault("window_chars", 32)
    kw.setdefault("overlap_chars", 16)
    kw.setdefault("max_holdback_chars", 24)
    return StreamGuard(checker=checker, **kw)


# --- clean streams ----------------------------------------------------------------------


CLEAN = ["Héllo", " wörld", ",", " this", " is", " a", " longer", " answer", " with", " emoji",
         " 🙂", " and", " numbers", " 42", " and", " more", " words", " to", " fill", " several",
         " windows", " of", " text", "."]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 10_000])
async def test_clean_stream_arrives_whole_at_any_chunking(step: int) -> None:
    data = chat_stream(CLEAN)
    checker = Recorder()
    out, steps = await run(guard(checker), every(data, step))
    seen = Out(out)
    assert seen.text() == "".join(CLEAN)
    assert seen.finish == {0: "stop"} and seen.done
    assert not any(s.verdict for s in steps)
    # windows cover the text once, plus bounded context
    assert len(checker.checks) >= 3
    assert checker.checks[-1].final


async def test_split_inside_data_line_and_utf8_character() -> None:
    data = chat_stream(CLEAN)
    i = data.index("ö".encode())
    cuts = [data.index(b"data:", 10) + 3, i + 1, data.index("🙂".encode()) + 2]
    out, _ = await run(guard(Recorder()), split_at(data, cuts))
    assert Out(out).text() == "".join(CLEAN)


async def test_unchanged_events_go_out_byte_for_byte() -> None:
    data = chat_stream(["one two three four five six seven eight nine ten eleven twelve "])
    out, _ = await run(guard(Recorder(), window_chars=1000), [data])
    assert out == data


async def test_first_release_right_after_first_content_chunk() -> None:
    g = guard(Recorder(), window_chars=256)
    role = chunk([delta("", role="assistant")])
    assert (await g.feed(role)).data == b""  # role-only: held with the first content
    assert not g.released_any
    step = await g.feed(chunk([delta("Hello")]))
    seen = Out(step.data)
    assert seen.text() == "Hello"  # no waiting for the window to fill, no hold-back of a word
    assert seen.docs[0]["choices"][0]["delta"]["role"] == "assistant"
    assert g.first_release_at is not None and g.released_any
    # later content waits for its window
    assert (await g.feed(chunk([delta(" there")]))).data == b""


async def test_first_window_holds_a_tail_that_looks_like_an_entity() -> None:
    g = guard(EmailChecker(), window_chars=64)
    out = (await g.feed(chunk([delta("Mail bob.sm")]))).data
    assert out == b""  # the chunk holding the tail waits whole: chunks are never re-cut
    rest, _ = await run(g, [chunk([delta("ith@example.com today")]), chunk([delta(finish="stop")]),
                            b"data: [DONE]\n\n"])
    assert Out(out + rest).text() == "Mail <EMAIL_ADDRESS_1> today"


# --- cuts -------------------------------------------------------------------------------


def insult_stream(at_word: int, total: int = 40) -> tuple[list[str], str]:
    pieces = words(total)
    pieces[at_word] = " idiot"
    return pieces, "".join(pieces)


@pytest.mark.parametrize("step", [1, 5, 13, 50])
async def test_insult_in_window_three_cuts_the_stream(step: int) -> None:
    pieces, full = insult_stream(at_word=22)
    checker = WordChecker()
    g = guard(checker)
    out, steps = await run(g, every(chat_stream(pieces), step))
    seen = Out(out)
    assert g.cut and steps[-1].verdict is None  # the close after the cut is a no-op
    cut_steps = [s for s in steps if s.cut]
    assert len(cut_steps) == 1 and cut_steps[0].verdict is not None
    assert cut_steps[0].verdict.reasons == ("toxicity:insult",)
    assert seen.finish == {0: "content_filter"}
    assert seen.guardrail == {"event": "guardrail", "action": "block", "stage": "output",
                              "reasons": ["toxicity:insult"]}
    assert seen.done and seen.docs[-1]["choices"] == []
    released = seen.text()
    assert full.startswith(released) and "idiot" not in released and "idi" not in released
    k = next(i for i, (_, v) in enumerate(g.verdicts) if v.action == "block")
    assert k >= 2  # the third window or later
    prev = g.verdicts[k - 1][0]
    assert len(released) <= prev.offset + len(prev.text)  # nothing of the violating window's new text
    assert all(s.data == b"" for s in steps[steps.index(cut_steps[0]) + 1 :])


def events(data: bytes) -> list[bytes]:
    """One network chunk per SSE event."""
    return [e + b"\n\n" for e in data.split(b"\n\n") if e]


@pytest.mark.parametrize("shift", range(-1, 7))
@pytest.mark.parametrize("step", [0, 7])
async def test_insult_split_across_chunks_and_window_boundary_is_caught(shift: int, step: int) -> None:
    # The first window is the first delta ("Hi "); the second ends 32 chars later. Put
    # "idiot" so that this boundary falls before, inside and after it, the word itself
    # split across deltas of 4 characters.
    first, window = "Hi ", 32
    boundary = len(first) + window
    filler = ("ab " * 20)[: boundary - 5 + shift - len(first)]
    rest = filler + "idiot is here and more text follows to fill another window"
    pieces = [first] + [rest[i : i + 4] for i in range(0, len(rest), 4)]
    data = chat_stream(pieces)
    checker = WordChecker()
    out, _ = await run(guard(checker, window_chars=window), every(data, step) if step else events(data))
    seen = Out(out)
    assert seen.finish == {0: "content_filter"}
    assert seen.text().startswith("Hi ")
    assert "idi" not in seen.text() and "iot" not in seen.text()


async def test_first_window_violation_reports_before_the_first_byte() -> None:
    g = guard(WordChecker(action="retry"))
    data = chat_stream(["You idiot", " and", " more"])
    steps = [await g.feed(c) for c in every(data, 9)]
    stop = [s for s in steps if s.verdict is not None]
    assert len(stop) == 1 and stop[0].before_first_byte and not stop[0].cut
    assert stop[0].verdict.action == "retry"  # type: ignore[union-attr]
    assert all(s.data == b"" for s in steps) and not g.released_any and not g.cut
    assert (await g.close()).data == b""


async def test_violation_after_release_is_a_cut_even_for_retry() -> None:
    pieces, _ = insult_stream(at_word=30)
    g = guard(WordChecker(action="handoff"))
    out, steps = await run(g, events(chat_stream(pieces)))
    assert g.cut and any(s.cut for s in steps) and not any(s.before_first_byte for s in steps)
    assert Out(out).guardrail["action"] == "handoff"  # type: ignore[index]


async def test_broken_stream_releases_passing_text_without_done() -> None:
    data = chat_stream(CLEAN, done=False)
    data = data[: data.rindex(b"data:")]  # no finish chunk either
    g = guard(Recorder())
    out, _ = await run(g, every(data, 11), broken=True)
    seen = Out(out)
    assert seen.text() == "".join(CLEAN) and not seen.done and not g.done
    assert g.verdicts[-1][0].final


async def test_clean_end_without_done_gets_done() -> None:
    out, _ = await run(guard(Recorder()), [chat_stream(CLEAN, done=False)])
    assert Out(out).done


# --- masks and restore ------------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 3, 8, 20])
@pytest.mark.parametrize("window", [8, 16, 32, 64])
async def test_email_split_across_chunks_is_masked_in_the_held_window(step: int, window: int) -> None:
    text = "Sure, write to jane.doe+list@mail.example.org for the invoice, or call us. Thanks."
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    masker = Masker()
    g = guard(EmailChecker(), window_chars=window, overlap_chars=32, max_holdback_chars=48,
              masker=masker)
    out, _ = await run(g, every(chat_stream(pieces), step))
    seen = Out(out)
    assert seen.text() == "Sure, write to <EMAIL_ADDRESS_1> for the invoice, or call us. Thanks."
    assert dict(masker.mapping) == {"<EMAIL_ADDRESS_1>": "jane.doe+list@mail.example.org"}
    assert g.text() == text and g.late_spans == 0


PLACEHOLDER_TEXT = "Write to <EMAIL_ADDRESS_1> or <EMAIL_ADDRESS_12> now, not <EMAIL_ADDRESS_9>."


@pytest.mark.parametrize("at", range(1, len(PLACEHOLDER_TEXT)))
async def test_input_placeholder_split_at_every_position_is_restored(at: int) -> None:
    masker = Masker()
    masker.mask("a@example.com", [Finding("pii", "EMAIL_ADDRESS", 0.9, 0, 13)])
    for i in range(2, 13):  # issue <EMAIL_ADDRESS_12>
        value = f"u{i}@example.com"
        masker.mask(value, [Finding("pii", "EMAIL_ADDRESS", 0.9, 0, len(value))])
    pieces = [PLACEHOLDER_TEXT[:at], PLACEHOLDER_TEXT[at:]]
    g = guard(Recorder(), window_chars=16, masker=masker, restore_input=True)
    out, _ = await run(g, [chat_stream(pieces)])
    assert Out(out).text() == (
        "Write to a@example.com or u12@example.com now, not u9@example.com."
    )
    assert g.text() == PLACEHOLDER_TEXT  # checks and the trace see what the model wrote
    assert all("@" not in c.text for c, _ in g.verdicts)


async def test_output_masks_are_not_restored_but_input_placeholders_are() -> None:
    masker = Masker()
    masker.mask("me@home.org", [Finding("pii", "EMAIL_ADDRESS", 0.9, 0, 11)])
    text = "I will mail <EMAIL_ADDRESS_1> and leak@corp.com later today, promise."
    g = guard(EmailChecker(), masker=masker, restore_input=True)
    out, _ = await run(g, every(chat_stream([text[i : i + 4] for i in range(0, len(text), 4)]), 7))
    assert Out(out).text() == "I will mail me@home.org and <EMAIL_ADDRESS_2> later today, promise."


async def test_tool_call_arguments_restored_across_deltas() -> None:
    masker = Masker()
    masker.mask("a@b.io", [Finding("pii", "EMAIL_ADDRESS", 0.9, 0, 6)])
    call = {"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "send", "arguments": ""}}
    args = ['{"to": "<EMAIL_', 'ADDRESS_1>"}']
    data = b"".join([
        chunk([delta(None, role="assistant", tool_calls=[call])]),
        *(chunk([delta(None, tool_calls=[{"index": 0, "function": {"arguments": a}}])])
          for a in args),
        chunk([delta(finish="tool_calls")]),
        b"data: [DONE]\n\n",
    ])
    out, _ = await run(guard(Recorder(), masker=masker, restore_input=True), every(data, 5))
    seen = Out(out)
    got = "".join(tc["function"].get("arguments") or "" for d in seen.docs for c in d["choices"]
                  for tc in c["delta"].get("tool_calls") or ())
    assert got == '{"to": "a@b.io"}' and seen.finish == {0: "tool_calls"}


# --- windows ----------------------------------------------------------------------------


async def test_token_windows_count_content_deltas() -> None:
    pieces = ["aaa"] + [" " + "abcdefghijklmnopqrstuvwxyz"[i % 26] * 3 for i in range(1, 30)]
    checker = Recorder()
    g = guard(checker, window_chars=10_000, window_tokens=8, overlap_chars=4)
    out, _ = await run(g, events(chat_stream(pieces)))
    assert Out(out).text() == "".join(pieces)
    full = "".join(pieces)
    ends = [c.offset + len(c.text) for c in checker.checks]
    delta_ends = {len("".join(pieces[: i + 1])) for i in range(len(pieces))}
    assert set(ends) <= delta_ends  # windows end on delta boundaries
    assert ends[0] == len(pieces[0])  # the first window: the first delta, at once
    assert ends[1:3] == [len("".join(pieces[: 1 + 8])), len("".join(pieces[: 1 + 16]))]
    assert ends[-1] == len(full) and g.counted_tokens == 30


async def test_windows_are_bounded_and_never_rescan_the_text() -> None:
    pieces = [f" word{i}" for i in range(3000)]  # ~26k chars
    checker = Recorder()
    window, overlap, hold = 256, 64, 64
    g = StreamGuard(checker=checker, window_chars=window, overlap_chars=overlap,
                    max_holdback_chars=hold)
    data = chat_stream(pieces)
    out, _ = await run(g, every(data, 4096))
    total = len("".join(pieces))
    assert Out(out).text() == "".join(pieces)
    longest_delta = max(map(len, pieces))
    assert all(len(c.text) <= window + max(overlap, hold) + longest_delta for c in checker.checks)
    assert sum(len(c.text) for c in checker.checks) <= total * (window + overlap + hold) / window
    offsets = [c.offset for c in checker.checks]
    assert offsets == sorted(offsets)


async def test_checks_run_in_the_background_and_pending_text_is_bounded() -> None:
    gate = asyncio.Event()
    seen_pending: list[int] = []

    class Slow(Recorder):
        async def __call__(self, check: WindowCheck) -> WindowVerdict:
            self.checks.append(check)
            if len(self.checks) > 1:
                await gate.wait()
            return PASS

    checker = Slow()
    g = StreamGuard(checker=checker, window_chars=64, max_pending_chars=256)
    pieces = [f" tok{i:03d}" for i in range(200)]
    data = chat_stream(pieces)
    feeds = every(data, 90)

    async def feed_all() -> bytes:
        out = []
        for c in feeds:
            step = await g.feed(c)
            seen_pending.append(g.unchecked_chars)
            out.append(step.data)
        out.append((await g.close()).data)
        return b"".join(out)

    task = asyncio.create_task(feed_all())
    for _ in range(50):
        await asyncio.sleep(0)
    assert not task.done()  # blocked: backpressure while the second check is held
    assert g.in_flight is not None
    assert max(seen_pending) <= 256 + 90
    gate.set()
    out = await task
    assert Out(out).text() == "".join(pieces)
    assert max(seen_pending) <= 256 + 90


async def test_poll_releases_when_the_check_finishes() -> None:
    gate = asyncio.Event()

    class Slow(Recorder):
        async def __call__(self, check: WindowCheck) -> WindowVerdict:
            self.checks.append(check)
            if len(self.checks) > 1:
                await gate.wait()
            return PASS

    g = StreamGuard(checker=Slow(), window_chars=16, max_holdback_chars=8, overlap_chars=8)
    first = await g.feed(chunk([delta("Hi")]))
    assert Out(first.data).text() == "Hi"
    step = await g.feed(chunk([delta(" there, a longer piece of text ")]))
    assert step.data == b"" and g.in_flight is not None
    gate.set()
    polled = await g.poll()
    assert Out(polled.data).text() == " there, a longer piece of text "  # the chunk, whole
    assert g.in_flight is None


# --- several choices, tools, other events ------------------------------------------------


def interleaved(a: list[str], b: list[str]) -> bytes:
    out = [chunk([delta("", index=0, role="assistant")]), chunk([delta("", index=1, role="assistant")])]
    for x, y in zip(a, b, strict=False):
        out += [chunk([delta(x, index=0)]), chunk([delta(y, index=1)])]
    out += [chunk([delta(index=0, finish="stop")]), chunk([delta(index=1, finish="length")])]
    return b"".join(out) + b"data: [DONE]\n\n"


async def test_two_choices_interleaved_are_windowed_separately() -> None:
    a, b = words(40), [f" v{i}" for i in range(40)]
    checker = Recorder()
    out, _ = await run(guard(checker), every(interleaved(a, b), 37))
    seen = Out(out)
    assert seen.text(0) == "".join(a) and seen.text(1) == "".join(b)
    assert seen.finish == {0: "stop", 1: "length"}
    assert {c.choice for c in checker.checks} == {0, 1}
    for c in checker.checks:
        assert c.text in ("".join(a) if c.choice == 0 else "".join(b))


async def test_two_choices_violation_in_one_cuts_both() -> None:
    a, b = words(40), [f" v{i}" for i in range(40)]
    b[12] = " idiot"
    g = guard(WordChecker())
    out, _ = await run(g, events(interleaved(a, b)))
    seen = Out(out)
    assert seen.finish == {0: "content_filter", 1: "content_filter"}
    assert "idiot" not in seen.text(1) and "".join(a).startswith(seen.text(0))


async def test_multi_choice_event_is_split_per_choice() -> None:
    data = chunk([delta("Hello there", index=0), delta("Bonjour toi", index=1)])
    data += chunk([delta(index=0, finish="stop"), delta(index=1, finish="stop")])
    out, _ = await run(guard(Recorder()), [data + b"data: [DONE]\n\n"])
    seen = Out(out)
    assert seen.texts == {0: "Hello there", 1: "Bonjour toi"}


async def test_tool_call_deltas_pass_in_order_after_the_content_before_them() -> None:
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    tool_events = [
        chunk([delta(None, tool_calls=[call])]),
        chunk([delta(None, tool_calls=[{"index": 0, "function": {"arguments": '{"a": 1}'}}])]),
    ]
    data = b"".join([chunk([delta("", role="assistant")]),
                     *(chunk([delta(p)]) for p in words(12)),
                     *tool_events,
                     chunk([delta(finish="tool_calls")]), b"data: [DONE]\n\n"])
    out, _ = await run(guard(Recorder()), every(data, 17))
    seen = Out(out)
    kinds = ["tool" if c["delta"].get("tool_calls") else "text" if c["delta"].get("content")
             else "other" for d in seen.docs for c in d["choices"]]
    last_text = max(i for i, k in enumerate(kinds) if k == "text")
    first_tool = kinds.index("tool")
    assert last_text < first_tool and seen.text() == "".join(words(12))
    for ev in tool_events:
        assert ev in out  # untouched


async def test_tool_call_only_stream_is_not_held_back() -> None:
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    g = guard(Recorder())
    assert (await g.feed(chunk([delta("", role="assistant")]))).data == b""
    step = await g.feed(chunk([delta(None, tool_calls=[call])]))
    assert b"c1" in step.data and b"assistant" in step.data


async def test_comments_and_unknown_events_keep_their_place() -> None:
    data = b"".join([
        b": keep-alive\n\n",
        chunk([delta("Hello")]),
        b"event: note\ndata: not json\n\n",
        chunk([delta(" world and more")]),
        b"data: {\"error\": {\"message\": \"x\"}}\n\n",
        chunk([delta(finish="stop")]),
        b"data: [DONE]\n\n",
    ])
    out, _ = await run(guard(Recorder(), window_chars=4), every(data, 6))
    assert Out(out).text() == "Hello world and more"
    order = [out.index(x) for x in (b": keep-alive", b"Hell", b"not json", b"world",
                                   b'"error"', b"[DONE]")]
    assert order == sorted(order)


async def test_text_completion_stream() -> None:
    pieces, _ = insult_stream(at_word=25)
    data = b"".join(sse({**TEXT_META, "choices": [{"index": 0, "text": p, "logprobs": None,
                                                   "finish_reason": None}]}) for p in pieces)
    g = guard(WordChecker())
    out, _ = await run(g, events(data + b"data: [DONE]\n\n"))
    seen = Out(out, text_completion=True)
    assert seen.finish == {0: "content_filter"} and "idiot" not in seen.text()
    assert seen.docs[-1]["object"] == "text_completion"


# --- usage ------------------------------------------------------------------------------


async def test_strip_usage_drops_the_usage_chunk_and_null_keys() -> None:
    data = chat_stream(CLEAN, usage=True)
    g = guard(Recorder(), strip_usage=True)
    out, _ = await run(g, every(data, 29))
    assert b"usage" not in out
    assert Out(out).text() == "".join(CLEAN)
    assert g.usage == {"prompt_tokens": 5, "completion_tokens": len(CLEAN),
                       "total_tokens": 5 + len(CLEAN)}


async def test_usage_kept_when_the_client_asked() -> None:
    data = chat_stream(CLEAN, usage=True)
    g = guard(Recorder())
    out, _ = await run(g, [data])
    assert Out(out).docs[-1]["usage"]["completion_tokens"] == len(CLEAN)
    assert g.usage is not None and g.counted_tokens == len(CLEAN)


# --- modes ------------------------------------------------------------------------------


async def test_passthrough_forwards_bytes_untouched_and_checks_at_the_end() -> None:
    pieces, _ = insult_stream(at_word=5)
    data = chat_stream(pieces)
    checker = WordChecker()
    g = guard(checker, mode="passthrough")
    chunks = every(data, 13)
    steps = [await g.feed(c) for c in chunks]
    assert [s.data for s in steps] == chunks and not checker.checks
    end = await g.close()
    assert end.data == b"" and end.verdict is not None and end.verdict.action == "block"
    assert [c.final for c in checker.checks] == [True] and checker.checks[0].offset == 0
    assert not g.cut


async def test_passthrough_restores_and_strips_when_asked() -> None:
    masker = Masker()
    masker.mask("a@b.io", [Finding("pii", "EMAIL_ADDRESS", 0.9, 0, 6)])
    data = chat_stream(["Mail <EMAIL_", "ADDRESS_1> now"], usage=True)
    g = guard(Recorder(), mode="passthrough", masker=masker, restore_input=True, strip_usage=True)
    out, _ = await run(g, every(data, 10))
    assert Out(out).text() == "Mail a@b.io now" and b"usage" not in out and Out(out).done


async def test_buffered_holds_everything_then_releases() -> None:
    checker = Recorder()
    g = guard(checker, mode="buffered")
    data = chat_stream(CLEAN)
    chunks = every(data, 50)
    steps = [await g.feed(c) for c in chunks[:-1]]
    assert all(s.data == b"" for s in steps) and not checker.checks
    last = await g.feed(chunks[-1])
    assert last.data == data  # one check of the whole text, then every event as it came
    assert len(checker.checks) == 1 and checker.checks[0].final
    assert checker.checks[0].text == "".join(CLEAN)


async def test_buffered_violation_reports_before_the_first_byte() -> None:
    pieces, _ = insult_stream(at_word=35)
    g = guard(WordChecker(action="fallback"), mode="buffered")
    out, steps = await run(g, every(chat_stream(pieces), 40))
    assert out == b"" and not g.released_any
    stop = [s for s in steps if s.verdict is not None]
    assert len(stop) == 1 and stop[0].before_first_byte and stop[0].verdict.action == "fallback"  # type: ignore[union-attr]


async def test_buffered_mask_masks_the_whole_answer() -> None:
    text = "a@x.io and b@y.io and a@x.io"
    g = guard(EmailChecker(), mode="buffered")
    out, _ = await run(g, [chat_stream([text[:9], text[9:]])])
    assert Out(out).text() == "<EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_2> and <EMAIL_ADDRESS_1>"


# --- randomised: any chunking, any window size ------------------------------------------


INPUT_VALUE = "me@home.org"
VOCAB = ["the", "report", "is", "ready,", "see", "page", "12", "and", "call", "+1 555 0100",
         "<EMAIL_ADDRESS_1>", "alice.b@corp.example", "ok.", "🙂", "naïve", "x_y", "done"]


def random_case(seed: int, insult: bool) -> tuple[str, list[bytes], dict[str, int]]:
    import random

    rnd = random.Random(seed)
    toks = ["Hello,"] + [rnd.choice(VOCAB) for _ in range(rnd.randint(20, 60))]
    if insult:
        toks.insert(rnd.randint(3, len(toks)), "idiot")
    text = " ".join(toks)
    pieces, i = [], 0
    while i < len(text):
        n = rnd.randint(1, 7)
        pieces.append(text[i : i + n])
        i += n
    data = chat_stream(pieces)
    cuts = [rnd.randrange(1, len(data)) for _ in range(rnd.randint(0, 40))]
    sizes = {"window_chars": rnd.choice([4, 8, 16, 32, 64]), "overlap_chars": rnd.choice([0, 8, 32]),
             "max_holdback_chars": 40}
    return text, split_at(data, cuts), sizes


def expected_output(text: str) -> str:
    m = Masker()
    m.mask(INPUT_VALUE, [Finding("pii", "EMAIL_ADDRESS", 0.9, 0, len(INPUT_VALUE))])
    spans = [Finding("pii", "EMAIL_ADDRESS", 0.9, x.start(), x.end()) for x in EMAIL.finditer(text)]
    return m.mask(text, spans).replace("<EMAIL_ADDRESS_1>", INPUT_VALUE, text.count("<EMAIL_ADDRESS_1>"))


class EmailAndWord(EmailChecker):
    def verdict(self, check: WindowCheck) -> WindowVerdict:
        if "idiot" in check.text:
            return WindowVerdict("block", ("toxicity:insult",))
        return super().verdict(check)


def input_masker() -> Masker:
    m = Masker()
    m.mask(INPUT_VALUE, [Finding("pii", "EMAIL_ADDRESS", 0.9, 0, len(INPUT_VALUE))])
    return m


@pytest.mark.parametrize("seed", range(60))
async def test_random_clean_streams_come_out_masked_and_restored(seed: int) -> None:
    text, chunks, sizes = random_case(seed, insult=False)
    g = guard(EmailAndWord(), masker=input_masker(), restore_input=True, **sizes)
    out, steps = await run(g, chunks)
    seen = Out(out)
    assert seen.text() == expected_output(text)
    assert seen.finish == {0: "stop"} and seen.done and g.text() == text
    assert g.late_spans == 0 and not any(s.verdict for s in steps)


@pytest.mark.parametrize("seed", range(60))
async def test_random_streams_with_an_insult_never_release_it(seed: int) -> None:
    text, chunks, sizes = random_case(seed, insult=True)
    g = guard(EmailAndWord(), masker=input_masker(), restore_input=True, **sizes)
    out, steps = await run(g, chunks)
    stops = [s for s in steps if s.verdict is not None]
    assert len(stops) == 1
    if stops[0].before_first_byte:
        assert out == b"" and not g.released_any
        return
    seen = Out(out)
    assert stops[0].cut and seen.finish == {0: "content_filter"} and seen.done
    assert expected_output(text).startswith(seen.text())
    # nothing of the insult went out (released text ends at a chunk boundary before it)
    assert len(seen.text()) <= expected_output(text).index("idiot")


# --- odd inputs --------------------------------------------------------------------------


async def test_crlf_line_ends() -> None:
    data = chat_stream(CLEAN).replace(b"\n", b"\r\n")
    out, _ = await run(guard(Recorder()), every(data, 5))
    assert Out(out).text() == "".join(CLEAN) and Out(out).done


async def test_checker_error_propagates_and_stops_the_guard() -> None:
    class Broken(Recorder):
        def verdict(self, check: WindowCheck) -> WindowVerdict:
            raise RuntimeError("detector down")

    g = guard(Broken())
    with pytest.raises(RuntimeError):
        await g.feed(chunk([delta("Hello")]))
    assert (await g.feed(chunk([delta(" more")]))).data == b""
    assert (await g.close()).data == b""


# --- pieces ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "first", "held"),
    [
        ("Hello", True, ""),
        (" Hello", True, ""),
        ("Hello, a", True, "a"),
        ("Hello.", True, "Hello."),
        ("4111", True, "4111"),
        ("Hello", False, "Hello"),
        ("Say hi ", False, ""),
        ("Mail bob.sm", True, "bob.sm"),
        ("call +44 20 7946 09", False, "+44 20 7946 09"),
        ("card 4111 1111 1111 ", False, "4111 1111 1111 "),
        ("I have 3 cats", False, "cats"),
        ("x" * 100, False, "x" * 24),
    ],
)
def test_holdback(text: str, first: bool, held: str) -> None:
    n = holdback(text, 24, first=first)
    assert text[len(text) - n :] == held


def test_verdict_from_decision() -> None:
    f = Finding("pii", "EMAIL_ADDRESS", 0.9, 1, 4)
    d = Decision("mask", ("pii:EMAIL_ADDRESS",), (Triggered(f, "mask"),))
    assert WindowVerdict.from_decision(d) == WindowVerdict("mask", ("pii:EMAIL_ADDRESS",), (f,))


# --- time bound and natural boundaries ----------------------------------------------------


async def test_a_clause_end_makes_a_window_due_before_it_fills() -> None:
    checker = Recorder()
    g = guard(checker, window_chars=1000, max_hold_ms=None)
    assert Out((await g.feed(chunk([delta("Hello")]))).data).text() == "Hello"
    step = await g.feed(chunk([delta(" there, my good")]))
    assert step.data == b"" and g.in_flight is not None  # due at the comma, checked off-loop
    polled = await g.poll()
    # the chunk ends in a word that may go on: it waits whole
    assert polled.data == b""
    await g.feed(chunk([delta(" friend. And so")]))
    # checked up to "so"; " friend. And so" ends in a word that may go on: held whole
    assert Out((await g.poll()).data).text() == " there, my good"


async def test_the_clock_releases_held_text_without_a_boundary() -> None:
    checker = Recorder()
    g = guard(checker, window_chars=1000, boundaries=False, max_hold_ms=0)
    await g.feed(chunk([delta("Hello")]))
    assert g.deadline is None  # nothing unchecked
    await g.feed(chunk([delta(" big")]))
    await g.feed(chunk([delta(" wide world")]))
    polled = await g.poll()
    assert Out(polled.data).text() == " big"  # " wide world" ends in a word: held whole


async def test_without_a_due_window_the_guard_names_its_deadline() -> None:
    g = guard(Recorder(), window_chars=1000, boundaries=False, max_hold_ms=50)
    await g.feed(chunk([delta("Hello")]))
    assert g.deadline is None and (await g.poll()).data == b""
    await g.feed(chunk([delta(" there")]))
    deadline = g.deadline
    assert deadline is not None and g.in_flight is None
    assert (await g.poll()).data == b""  # not yet overdue: nothing to do


async def test_whole_answer_rules_see_the_whole_text_and_hold_only_the_end() -> None:
    class Json(Recorder):
        def verdict(self, check: WindowCheck) -> WindowVerdict:
            if check.whole is not None and not check.whole.endswith("}"):
                return WindowVerdict("retry", ("format:json_invalid",), whole_only=True)
            return PASS

    pieces = ['{"a"', ': 1', ', "b": [', '1, 2', "]"]
    checker = Json()
    out, steps = await run(guard(checker, whole_text=True), events(chat_stream(pieces)))
    seen = Out(out)
    assert seen.text() == "".join(pieces) and seen.finish == {0: "content_filter"}  # text out, end cut
    assert [c.whole for c in checker.checks if c.whole is not None] == ["".join(pieces)]
    assert [s.cut for s in steps if s.verdict is not None] == [True]


async def test_early_headers_send_the_role_chunk_at_once_and_can_only_cut() -> None:
    g = guard(WordChecker(), early_headers=True)
    role = await g.feed(chunk([delta("", role="assistant")]))
    assert Out(role.data).docs[0]["choices"][0]["delta"]["role"] == "assistant"
    step = await g.feed(chunk([delta("idiot")]))
    assert step.cut and not step.before_first_byte
    seen = Out(step.data)
    assert seen.text() == "" and seen.finish == {0: "content_filter"} and seen.done
