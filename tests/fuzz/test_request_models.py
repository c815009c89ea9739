"""Bad inputs, generated: hypothesis over the request models against the real sidecar.

Bodies of ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` are
drawn from strategies that mix well-formed fields with wrong types, odd nesting,
huge numbers, control characters, lone surrogates (as JSON escapes), invalid UTF-8
and non-standard JSON (``NaN``). Every answer must come back in time (no hang),
never be a 5xx, and every error must have the OpenAI shape. The sidecar runs with
its default guardrail policy in front of the demo upstream, as a user would run it.

Bounded: ``max_examples`` per route keeps the suite fast (about 10 s in all).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.servers import LoopThread, RunningSidecar

EXAMPLES = 40
TIMEOUT_S = 20.0
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
texts = st.text(max_size=300) | st.sampled_from([
    "mail jane@example.com, card 4111 1111 1111 1111", "\x00\x01\u202e", "[[demo:unknown]]",
    "a" * 5000, "\ud800"[:0] + "emoji \U0001f600", "{\"json\": true}",
])
content_parts = st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_audio", "bogus"]) | json_values},
    optional={"text": texts | json_values, "image_url": json_values}), max_size=3)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool", "developer"]) | json_values},
    optional={"content": texts | content_parts | json_values, "name": json_values,
              "tool_calls": json_values, "tool_call_id": json_values},
)
sampling = {
    "stream": st.booleans() | json_values,
    "temperature": st.floats(-1, 3) | json_values,
    "max_tokens": st.integers(-5, 64) | json_values,
    "n": st.integers(-2, 4) | json_values,
    "user": texts | json_values,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": json_values})
    | json_values,
    "response_format": st.sampled_from([{"type": "json_object"}, {"type": "text"},
                                        {"type": "json_schema", "json_schema": {"schema": 5}}])
    | json_values,
    "metadata": json_values,
}
models = st.sampled_from(["m", "railwatch-demo"]) | st.text(max_size=30) | json_values

chat_bodies = st.fixed_dictionaries(
    {"model": models, "messages": st.lists(message, max_size=4) | json_values},
    optional=sampling)
completion_bodies = st.fixed_dictionaries(
    {"model": models, "prompt": texts | st.lists(texts, max_size=3) | json_values},
    optional=sampling)
embedding_bodies = st.fixed_dictionaries(
    {"model": models, "input": texts | st.lists(texts, max_size=3) | json_values},
    optional={"encoding_format": json_values, "dimensions": json_values, "user": json_values})


def raw_bodies(valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """Bytes that are not quite JSON: truncated, NaN-laden, bad UTF-8, deep nesting."""
    encoded = valid.map(_encode)
    return st.one_of(
        encoded,
        encoded.flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
        encoded.map(lambda b: b.replace(b"null", b"NaN", 1).replace(b"true", b"-Infinity", 1)),
        st.binary(max_size=200),
        st.just(b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}'),
        st.just(b'{"model": "m", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        st.just(b'{"model": "m", "prompt": "\xff\xfe"}'),
    )


def _encode(body: Any) -> bytes:
    """stdlib JSON: integers past 64 bits are valid JSON and must be tried too."""
    return json.dumps(body).encode()


async def _send(url: str, body: bytes) -> tuple[int, str, bytes]:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as s, s.post(
            url, data=body, headers={"Content-Type": "application/json"}) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


def check_answer(status: int, content_type: str, body: bytes) -> None:
    """No 5xx; errors in the OpenAI shape; streams end."""
    assert status < 500, (status, body[:300])
    if status >= 400:
        doc = orjson.loads(body)
        assert set(doc["error"]) >= {"message", "type", "param", "code"}, doc
        assert isinstance(doc["error"]["message"], str)
    elif content_type.startswith("text/event-stream"):
        assert body.rstrip().endswith(b"data: [DONE]"), body[-200:]
    else:
        orjson.loads(body)


@pytest.fixture
def fuzz_sidecar(start_sidecar: Any, demo_upstream: Any) -> RunningSidecar:
    sidecar: RunningSidecar = start_sidecar(
        demo_upstream.url, guardrails={"enabled": True}, server={"max_in_flight": 64})
    return sidecar


def _run(loop_thread: LoopThread, url: str, body: bytes) -> None:
    status, content_type, answer = loop_thread.run(_send(url, body), timeout=TIMEOUT_S + 5)
    check_answer(status, content_type, answer)


@FUZZ
@given(body=chat_bodies)
def test_chat_bodies(loop_thread: LoopThread, fuzz_sidecar: RunningSidecar,
                     body: dict[str, Any]) -> None:
    _run(loop_thread, fuzz_sidecar.url + "/v1/chat/completions", _encode(body))


@FUZZ
@given(body=completion_bodies)
def test_completion_bodies(loop_thread: LoopThread, fuzz_sidecar: RunningSidecar,
                           body: dict[str, Any]) -> None:
    _run(loop_thread, fuzz_sidecar.url + "/v1/completions", _encode(body))


@FUZZ
@given(body=embedding_bodies)
def test_embedding_bodies(loop_thread: LoopThread, fuzz_sidecar: RunningSidecar,
                          body: dict[str, Any]) -> None:
    _run(loop_thread, fuzz_sidecar.url + "/v1/embeddings", _encode(body))


@FUZZ
@given(route=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]),
       body=raw_bodies(chat_bodies))
def test_raw_bytes(loop_thread: LoopThread, fuzz_sidecar: RunningSidecar, route: str,
                   body: bytes) -> None:
    _run(loop_thread, fuzz_sidecar.url + route, body)


def test_the_sidecar_is_still_healthy_after_fuzzing(
    loop_thread: LoopThread, fuzz_sidecar: RunningSidecar
) -> None:
    async def health() -> int:
        async with aiohttp.ClientSession() as s, s.get(fuzz_sidecar.url + "/healthz") as r:
            return r.status

    for body in (b"{" * 100_000, b'{"model": "m", "messages": [' + b'{"role": "user"},' * 20_000):
        _run(loop_thread, fuzz_sidecar.url + "/v1/chat/completions", body)
    assert loop_thread.run(health()) == 200
    assert loop_thread.run(asyncio.sleep(0, result=fuzz_sidecar.runtime.proxy.in_flight)) == 0
