"""The SDK in local mode: the official client wrapped, and ``@guard`` on plain functions.

Real pieces throughout: the demo upstream over loopback, the official ``openai``
client, the policy's real detectors, and traces read back from embedded chDB.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import openai
import pytest

from sidecar.errors import GuardrailViolation
from tests.helpers.servers import seen
from tests.sidecar.sdk.conftest import POLICY, traces

if TYPE_CHECKING:
    from tests.conftest import Backend

EMAIL = "alice@example.com"
CARD = "4111 1111 1111 1111"


def _tag() -> str:
    return f"tag-{uuid.uuid4().hex[:10]}"


def _client(demo: Any) -> openai.OpenAI:
    from sidecar.sdk import wrap_openai

    return wrap_openai(openai.OpenAI(base_url=demo.url + "/v1", api_key="x", max_retries=0))


def test_masked_pii_never_reaches_the_upstream_and_comes_back(sdk_local: Any, demo_upstream: Any,
                                                               backend: Backend, database: str) -> None:
    from sidecar.sdk import current_trace_id, observe, shutdown

    tag = _tag()
    client = _client(demo_upstream)
    ids: list[str | None] = []

    @observe(name="ask")
    def ask() -> str:
        ids.append(current_trace_id())
        reply = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"{tag} write to {EMAIL}"}])
        return reply.choices[0].message.content or ""

    assert ask() == f"Echo: {tag} write to {EMAIL}"
    sent = seen(demo_upstream, tag)
    assert len(sent) == 1 and EMAIL not in json.dumps(sent[0]["body"])
    assert "<EMAIL_ADDRESS_1>" in sent[0]["body"]["messages"][0]["content"]
    shutdown()  # flushes the exporters
    assert ids[0] is not None
    rows = {r["path"]: r for r in traces(backend, database, ids[0])}
    call = rows["sdk/openai.chat.completions.create"]
    assert call["route"] == "chat" and call["decision"] == "mask" and call["status"] == 200
    assert call["output_text"] == f"Echo: {tag} write to <EMAIL_ADDRESS_1>"  # as the model wrote it
    assert call["parent_span_id"] == rows["sdk/ask"]["span_id"]


def test_a_toxic_answer_raises_without_text(sdk_local: Any, demo_upstream: Any) -> None:
    tag = _tag()
    with pytest.raises(GuardrailViolation) as err:
        _client(demo_upstream).chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"{tag} [[demo:toxic]] {EMAIL}"}])
    exc = err.value
    assert exc.action == "block" and exc.stage == "output"
    assert any(r.startswith("toxicity:") for r in exc.reasons)
    assert tag not in str(exc) and EMAIL not in str(exc) and exc.trace_id
    assert all(set(f) == {"detector", "label", "score", "start", "end", "action"} for f in exc.findings)


def test_an_input_secret_blocks_before_the_call(sdk_local: Any, demo_upstream: Any) -> None:
    tag = _tag()
    key = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0" * 2
    with pytest.raises(GuardrailViolation) as err:
        _client(demo_upstream).chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"{tag} my key {key}"}])
    assert err.value.stage == "input" and key not in str(err.value)
    assert seen(demo_upstream, tag) == []


def test_invalid_json_is_retried_with_the_corrective_instruction(sdk_local: Any, demo_upstream: Any) -> None:
    tag = _tag()
    reply = _client(demo_upstream).chat.completions.create(
        model="m", response_format={"type": "json_object"},
        messages=[{"role": "user", "content": f"{tag} [[demo:invalid_json_times=1]]"}])
    assert json.loads(reply.choices[0].message.content or "")["ok"] is True
    sent = seen(demo_upstream, tag)
    assert len(sent) == 2
    assert "rejected by an automatic check" in sent[1]["body"]["messages"][-1]["content"]


def test_a_streamed_leak_is_masked_and_a_toxic_stream_raises(sdk_local: Any, demo_upstream: Any) -> None:
    client = _client(demo_upstream)
    chunks = list(client.chat.completions.create(
        model="m", stream=True,
        messages=[{"role": "user", "content": f"{_tag()} [[demo:pii]] [[demo:chunk=3]]"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert CARD not in text and "<CREDIT_CARD_1>" in text
    received: list[str] = []
    with pytest.raises(GuardrailViolation):
        for chunk in client.chat.completions.create(
                model="m", stream=True,
                messages=[{"role": "user", "content": "tell me [[demo:toxic_midway]] [[demo:chunk=4]]"}]):
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert not any(word in "".join(received) for word in ("idiot", "moron", "stupid"))


def test_the_async_client_is_guarded_too(sdk_local: Any, demo_upstream: Any) -> None:
    from sidecar.sdk import wrap_openai

    async def go() -> tuple[str, str]:
        client = wrap_openai(openai.AsyncOpenAI(base_url=demo_upstream.url + "/v1", api_key="x",
                                                max_retries=0))
        reply = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"to {EMAIL}"}])
        stream = await client.chat.completions.create(
            model="m", stream=True, messages=[{"role": "user", "content": f"to {EMAIL} [[demo:chunk=2]]"}])
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return reply.choices[0].message.content or "", "".join(parts)

    unary, streamed = asyncio.run(go())
    assert unary == f"Echo: to {EMAIL}" and streamed == f"Echo: to {EMAIL}"
    assert EMAIL not in json.dumps([r["body"] for r in seen(demo_upstream, "demo:chunk=2")])


def test_guard_on_plain_functions_sync_async_and_generators(sdk_local: Any) -> None:
    from sidecar.sdk import guard

    received: list[str] = []

    @guard(input=["prompt"])
    def answer(prompt: str) -> str:
        received.append(prompt)
        return f"you said: {prompt}"

    @guard(input=["prompt"])
    async def aanswer(prompt: str) -> str:
        received.append(prompt)
        return f"you said: {prompt}"

    @guard(input=["prompt"])
    def pieces(prompt: str) -> Iterator[str]:
        received.append(prompt)
        yield from ("you ", "said: ", prompt[:6], prompt[6:])

    @guard(input=["prompt"])
    async def apieces(prompt: str) -> AsyncIterator[str]:
        received.append(prompt)
        for piece in ("you ", "said: ", prompt):
            yield piece

    async def collect() -> tuple[str, str]:
        return await aanswer(f"mail {EMAIL}"), "".join([p async for p in apieces(f"mail {EMAIL}")])

    assert answer(f"mail {EMAIL}") == f"you said: mail {EMAIL}"
    assert "".join(pieces(f"mail {EMAIL}")) == f"you said: mail {EMAIL}"
    assert asyncio.run(collect()) == (f"you said: mail {EMAIL}",) * 2
    assert received == ["mail <EMAIL_ADDRESS_1>"] * 4  # the function only ever saw placeholders

    @guard(input=["prompt"])
    def leaky(prompt: str) -> str:
        return f"card {CARD}"

    assert leaky("hi") == "card <CREDIT_CARD_1>"


def test_a_mask_that_cannot_be_applied_fails_closed(sdk_local: Any) -> None:
    from sidecar.sdk import guard

    called: list[str] = []

    @guard(input=lambda d: [d["text"]])  # read-only: the masked text has nowhere to go
    def by_dict(d: dict[str, str]) -> str:
        called.append(d["text"])
        return "ok"

    with pytest.raises(GuardrailViolation) as err:
        by_dict({"text": f"mail {EMAIL}"})
    assert err.value.reasons == ("railwatch:mask_not_applicable",) and called == []

    @guard(input=["prompt"], output=lambda r: r["text"])
    def dict_answer(prompt: str) -> dict[str, str]:
        return {"text": f"card {CARD}"}

    with pytest.raises(GuardrailViolation):  # a leak it cannot mask is never returned
        dict_answer("hi")


def test_text_that_passed_before_a_stop_is_given_out_before_the_violation(sdk_local: Any) -> None:
    """A stop step carries the text that passed before the violating window (then the
    cut event): ``items`` gives that text out and keeps the violation, which ``check``
    raises after it (it used to be raised at once, and the text was lost)."""
    from sidecar.pipeline._stream_windows import WindowVerdict
    from sidecar.pipeline.stream_guard import StreamStep
    from sidecar.sdk.api import LazyFunction, _open_stream, _shape_for, run_sync
    from sidecar.sdk.runtime import runtime

    def pieces(prompt: str) -> Iterator[str]:
        yield "unused"

    lazy = LazyFunction("pieces", pieces, _shape_for(pieces, ["prompt"], None), None, ())
    stream, _source = run_sync(_open_stream(lazy.get(), runtime(), ("hi",), {}))
    stream.adapter.encode("the caller's items are strings")
    data = (stream.adapter.encode("Second calm sentence here. ")
            + b'data: {"railwatch": {"cut": "block"}}\n\ndata: [DONE]\n\n')
    step = StreamStep(data, WindowVerdict("block", ("toxicity:toxicity",)), cut=True)
    assert stream.items(step) == ["Second calm sentence here. "]
    with pytest.raises(GuardrailViolation) as err:
        stream.check()
    assert err.value.action == "block" and err.value.reasons == ("toxicity:toxicity",)
    stream.finish()
    assert stream.ctx.decision == "block" and stream.ctx.status == 200


@pytest.mark.parametrize("policy_file", [POLICY.replace(
    "    retry: {times: 1}", "    retry: {times: 1}\n    stream: {mode: passthrough}")], indirect=True)
def test_a_passthrough_stream_is_delivered_whole_and_its_verdict_recorded(
        sdk_local: Any, backend: Backend, database: str) -> None:
    """``stream.mode: passthrough`` forwards everything and records the verdict: the SDK
    neither stops the stream nor raises (as the proxy), and the trace says ``block``."""
    from sidecar.sdk import current_trace_id, guard

    ids: list[str | None] = []
    parts = ("Hello there, a calm sentence. ", "You stupid idiot moron, I hate you. ", "Bye.")

    @guard(input=["prompt"])
    def pieces(prompt: str) -> Iterator[str]:
        ids.append(current_trace_id())
        yield from parts

    assert "".join(pieces("hi")) == "".join(parts)
    [row] = traces(backend, database, str(ids[0]))
    assert row["decision"] == "block" and row["status"] == 200


@pytest.mark.parametrize(("windows", "expected"), [
    ((), "mask"),  # nothing said in the answer: the input stage's mask
    (("flag",), "mask"),  # mask is more severe than flag
    (("retry",), "block"),  # a stop the caller never saw (it dropped the stream first)
    (("flag", "fallback"), "block"),
])
def test_a_stream_dropped_mid_way_settles_as_the_proxy_does(
        sdk_local: Any, windows: tuple[str, ...], expected: str) -> None:
    """``GuardedStream.finish`` records the delivered stream's decision: the input's and
    the windows' verdicts, or ``block`` when a window had decided to stop the stream (also
    when the caller dropped it before the violation reached it: the proxy's rule)."""
    from sidecar.policy import Decision
    from sidecar.sdk.api import LazyFunction, _open_stream, _shape_for, run_sync
    from sidecar.sdk.runtime import runtime

    def pieces(prompt: str) -> Iterator[str]:
        yield from ("one ", "two")

    lazy = LazyFunction("pieces", pieces, _shape_for(pieces, ["prompt"], None), None, ())
    stream, _source = run_sync(_open_stream(lazy.get(), runtime(), (f"mail {EMAIL}",), {}))
    assert stream.input_decision == "mask"
    for action in windows:  # what the window checks had decided when the caller left
        stream.decisions.append(Decision(action, (f"toxicity:{action}",)))
        stream.ctx.escalate(action)
    emitted: list[str] = []
    stream.on_end = lambda: emitted.append(stream.ctx.decision)
    stream.finish()
    assert emitted == [expected]


def test_fallback_functions_and_their_traces(sdk_local: Any, backend: Backend, database: str) -> None:
    from sidecar.sdk import current_trace_id, guard, observe, shutdown

    def backup(prompt: str) -> str:
        return "from the backup"

    @guard(input=["prompt"], fallback=[backup])
    def broken(prompt: str) -> str:
        raise ConnectionError("model down")

    seen_ids: list[str | None] = []

    @observe(name="handler")
    def handler() -> str:
        seen_ids.append(current_trace_id())
        return broken("hello") + " / " + broken("again")

    assert handler() == "from the backup / from the backup"
    shutdown()
    trace_id = seen_ids[0]
    assert trace_id is not None
    rows = traces(backend, database, trace_id)
    assert len(rows) == 3
    parent = next(r for r in rows if r["path"] == "sdk/handler")
    children = [r for r in rows if r is not parent]
    assert all(r["parent_span_id"] == parent["span_id"] for r in children)
    assert all(r["attributes"]["railwatch.source"] == "sdk" for r in rows)
    assert all(r["status"] == 200 and r["output_text"] == "from the backup" for r in children)


def test_a_function_that_keeps_failing_raises_its_own_error(sdk_local: Any) -> None:
    from sidecar.sdk import guard

    @guard(input=["prompt"])
    def broken(prompt: str) -> str:
        raise ConnectionError("model down")

    with pytest.raises(ConnectionError):
        broken("hello")


def test_otel_spans_of_the_app_are_the_parent(sdk_local: Any, backend: Backend, database: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from sidecar.sdk import current_trace_id, guard, shutdown

    ids: list[str | None] = []

    @guard(input=["prompt"])
    def answer(prompt: str) -> str:
        ids.append(current_trace_id())
        return "ok"

    tracer = TracerProvider().get_tracer("app")
    with tracer.start_as_current_span("request") as span:
        answer("hi")
        expected = format(span.get_span_context().trace_id, "032x")
        parent = format(span.get_span_context().span_id, "016x")
    assert ids == [expected]
    shutdown()
    rows = traces(backend, database, expected)
    assert [r["parent_span_id"] for r in rows] == [parent]


def _traced_call() -> str:
    """Trace id of one guarded call (the SDK configured by ``sdk_local``)."""
    from sidecar.sdk import current_trace_id, guard

    ids: list[str | None] = []

    @guard(input=["prompt"])
    def answer(prompt: str) -> str:
        ids.append(current_trace_id())
        return "ok"

    answer("hi")
    assert ids[0] is not None
    return ids[0]


def test_feedback_for_an_sdk_trace(sdk_local: Any, backend: Backend, database: str) -> None:
    from sidecar.sdk import record_feedback

    trace_id = _traced_call()
    record_feedback(trace_id, thumbs="down", comment="wrong")
    result = backend.admin.query(
        f"SELECT kind, value FROM {database}.feedback WHERE trace_id = %(t)s",
        parameters={"t": trace_id})
    assert [tuple(r) for r in result.result_rows] == [("thumbs", -1.0)]


@pytest.mark.parametrize("sdk_local", ["masked"], indirect=True)
def test_feedback_text_follows_the_privacy_setting(sdk_local: Any, backend: Backend,
                                                   database: str) -> None:
    """As on the sidecar's /v1/feedback: under ``capture: masked`` the comment is
    stored masked and the user as a pseudonym."""
    from sidecar.sdk import record_feedback

    trace_id = _traced_call()
    record_feedback(trace_id, thumbs="down", comment=f"write to {EMAIL}", user=EMAIL)
    result = backend.admin.query(
        f"SELECT comment, user FROM {database}.feedback WHERE trace_id = %(t)s",
        parameters={"t": trace_id})
    [(comment, user)] = [tuple(r) for r in result.result_rows]
    assert comment == "write to <EMAIL_ADDRESS_1>"
    assert EMAIL not in str(user) and str(user).startswith("h_")


@pytest.mark.parametrize("sdk_local", ["masked"], indirect=True)
def test_shutdown_right_after_calls_stores_their_text_masked(sdk_local: Any, backend: Backend,
                                                             database: str) -> None:
    """Shutdown flushes the records before it closes the detectors: a record still being
    finished keeps its masked text (a stream's was stored without text)."""
    from sidecar.sdk import current_trace_id, guard, shutdown

    ids: list[str | None] = []

    @guard(input=["prompt"])
    def answer(prompt: str) -> str:
        ids.append(current_trace_id())
        return f"noted: {prompt}"

    @guard(input=["prompt"])
    def pieces(prompt: str) -> Iterator[str]:
        ids.append(current_trace_id())
        yield from ("noted: ", prompt)

    answer(f"call: mail {EMAIL}")
    assert "".join(pieces(f"stream: mail {EMAIL}")) == f"noted: stream: mail {EMAIL}"
    shutdown()
    assert len(ids) == 2
    for trace_id in ids:
        assert trace_id is not None
        [row] = traces(backend, database, trace_id)
        assert "<EMAIL_ADDRESS_1>" in row["prompt_text"] and EMAIL not in row["prompt_text"]


def test_threads_and_tasks_share_one_runtime(sdk_local: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sidecar.sdk import guard
    from sidecar.sdk.runtime import runtime

    @guard(input=["prompt"])
    def answer(prompt: str) -> str:
        assert EMAIL not in prompt
        return f"got {prompt}"

    @guard(input=["prompt"])
    async def aanswer(prompt: str) -> str:
        await asyncio.sleep(0.001)
        assert EMAIL not in prompt
        return f"got {prompt}"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: answer(f"{i} {EMAIL}"), range(40)))
    assert results == [f"got {i} {EMAIL}" for i in range(40)]

    async def many() -> list[str]:
        return list(await asyncio.gather(*(aanswer(f"{i} {EMAIL}") for i in range(40))))

    assert asyncio.run(many()) == results
    first = runtime()
    with ThreadPoolExecutor(4) as pool:
        assert all(r is first for r in pool.map(lambda _: runtime(), range(8)))

