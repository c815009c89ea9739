"""The demo upstream, run as a real loopback server and driven as a user would.

The official ``openai`` client checks the wire format where it would hide nothing;
raw ``aiohttp`` requests check what the client would hide (status codes, error
bodies, broken and dropped connections, raw SSE framing).
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import struct
import sys
import time
from typing import Any

import aiohttp
import jsonschema
import openai
import orjson
import pytest
from openai import AsyncOpenAI

from sidecar.demo import (
    DEMO_MODEL_ID,
    DEMO_OWNED_BY,
    DEMO_SERVED_MODEL,
    DEMO_SYSTEM_FINGERPRINT,
    DIRECTIVES,
    PII_SENTENCE,
    TOXIC_SENTENCE,
    DemoUpstream,
    create_app,
    start_demo_upstream,
)
from sidecar.demo._handlers import redacted
from sidecar.demo._schema import example_for_schema
from sidecar.demo._script import (
    DirectiveError,
    broken_json,
    count_tokens,
    parse_directives,
    truncate_tokens,
)

# --------------------------------------------------------------------------- fixtures


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": DEMO_MODEL_ID, "messages": user(text), **extra}


async def post(
    http: aiohttp.ClientSession, upstream: DemoUpstream, body: Any, path: str = "/v1/chat/completions"
) -> tuple[int, dict[str, str], bytes]:
    if isinstance(body, bytes):
        kwargs: dict[str, Any] = {"data": body, "headers": {"Content-Type": "application/json"}}
    else:
        kwargs = {"json": body}
    async with http.post(upstream.url + path, **kwargs) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def sse_events(raw: bytes) -> tuple[list[dict[str, Any]], bool]:
    """Split a raw SSE body into its JSON events, and whether it ended with [DONE]."""
    assert raw.endswith(b"\n\n") or not raw
    frames = raw.split(b"\n\n")[:-1] if raw else []
    done = bool(frames) and frames[-1] == b"data: [DONE]"
    events = []
    for frame in frames[:-1] if done else frames:
        assert frame.startswith(b"data: "), frame
        events.append(json.loads(frame[len(b"data: ") :]))
    return events, done


def assert_error_shape(raw: bytes) -> dict[str, Any]:
    body = json.loads(raw)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


# --------------------------------------------------------------------------- chat


async def test_chat_echoes_last_user_message_with_usage(client: AsyncOpenAI) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Hello, world!"},
    ]
    r = await client.chat.completions.create(model=DEMO_MODEL_ID, messages=messages)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.created > 1_700_000_000
    assert r.model == DEMO_SERVED_MODEL
    assert r.system_fingerprint == DEMO_SYSTEM_FINGERPRINT
    [choice] = r.choices
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: Hello, world!"
    # "Be brief." 3 + "First question" 2 + "First answer" 2 + "Hello, world!" 4
    assert r.usage is not None
    assert r.usage.prompt_tokens == 11
    assert r.usage.completion_tokens == 6  # Echo : Hello , world !
    assert r.usage.total_tokens == 17


async def test_chat_is_deterministic_but_ids_differ(client: AsyncOpenAI) -> None:
    first = await client.chat.completions.create(model="any-model", messages=user("same"))
    second = await client.chat.completions.create(model="any-model", messages=user("same"))
    assert first.choices[0].message.content == second.choices[0].message.content == "Echo: same"
    assert first.id != second.id


async def test_chat_content_parts_are_echoed(client: AsyncOpenAI) -> None:
    content = [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]
    r = await client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=[{"role": "user", "content": content}]
    )
    assert r.choices[0].message.content == "Echo: part one\npart two"


async def test_chat_stream_with_include_usage(client: AsyncOpenAI) -> None:
    text = "Stream this sentence back to me, please."
    stream = await client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=user(text),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == f"Echo: {text}"
    assert len(pieces) > 3 and all(len(p) <= 8 for p in pieces)
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == count_tokens(f"Echo: {text}")
    assert usage_chunk.usage.prompt_tokens == count_tokens(text)
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])


async def test_chat_stream_raw_framing(http: aiohttp.ClientSession, upstream: DemoUpstream) -> None:
    async with http.post(
        upstream.url + "/v1/chat/completions", json=chat_body("raw", stream=True)
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        raw = await resp.read()
    events, done = sse_events(raw)
    assert done
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert events[-1]["choices"][0] == {
        "index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"
    }
    assert all("usage" not in e for e in events)  # only with include_usage
    assert all(e["model"] == DEMO_SERVED_MODEL for e in events)
    assert all(e["system_fingerprint"] == DEMO_SYSTEM_FINGERPRINT for e in events)


async def test_chat_n2_distinct_choices(client: AsyncOpenAI) -> None:
    r = await client.chat.completions.create(model=DEMO_MODEL_ID, messages=user("hi"), n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert [c.message.content for c in r.choices] == ["Echo: hi", "Echo: hi (choice 2)"]
    assert r.usage is not None
    assert r.usage.completion_tokens == count_tokens("Echo: hi") + count_tokens(
        "Echo: hi (choice 2)"
    )


async def test_chat_n2_stream_interleaves_indexes(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=user("interleave me please"), n=2, stream=True
    )
    texts = {0: "", 1: ""}
    order = []
    finishes = {}
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                texts[choice.index] += choice.delta.content
                order.append(choice.index)
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: "Echo: interleave me please", 1: "Echo: interleave me please (choice 2)"}
    assert finishes == {0: "stop", 1: "stop"}
    assert order[:4] == [0, 1, 0, 1]


async def test_chat_max_tokens_cuts_with_length(client: AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=user("one two three four five"), max_tokens=3
    )
    assert r.choices[0].message.content == "Echo: one"
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 3


# --------------------------------------------------------------------------- tools

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "detailed": {"type": "boolean"},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
BOOKING = {
    "type": "object",
    "properties": {
        "guests": {"type": "array", "items": {"type": "string", "format": "email"}, "minItems": 2},
        "nights": {"type": "number", "exclusiveMinimum": 0},
    },
    "required": ["guests", "nights"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "book_room", "parameters": BOOKING}},
]


async def test_tools_call_first_function_with_valid_arguments(client: AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=user("Weather in Paris?"), tools=TOOLS
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER)
    assert set(WEATHER["required"]) <= set(args)
    assert args["city"] == "Echo: Weather in Paris?"


async def test_tools_forced_choice_and_none(client: AsyncOpenAI) -> None:
    forced = await client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=user("book it"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "book_room"}},
    )
    [call] = forced.choices[0].message.tool_calls or []
    assert call.function.name == "book_room"
    jsonschema.validate(json.loads(call.function.arguments), BOOKING)
    none = await client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=user("just talk"), tools=TOOLS, tool_choice="none"
    )
    assert none.choices[0].message.content == "Echo: just talk"
    assert none.choices[0].message.tool_calls is None


async def test_tools_after_tool_result_answers_text(client: AsyncOpenAI) -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function",
                            "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    r = await client.chat.completions.create(model=DEMO_MODEL_ID, messages=messages, tools=TOOLS)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == "Echo: Weather?"


async def test_tools_unknown_forced_function_is_400(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=DEMO_MODEL_ID,
            messages=user("x"),
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    assert info.value.status_code == 400


async def test_tools_stream_deltas(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=user("Weather in Rome?"), tools=TOOLS, stream=True
    )
    name = call_id = None
    arguments = ""
    finish = None
    deltas = 0
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                assert call.index == 0
                if call.id:
                    call_id, name = call.id, call.function.name
                arguments += call.function.arguments or ""
                deltas += 1
            finish = choice.finish_reason or finish
    assert call_id and name == "get_weather"
    assert deltas > 2
    assert finish == "tool_calls"
    jsonschema.validate(json.loads(arguments), WEATHER)


# --------------------------------------------------------------------------- response_format


async def test_response_format_json_object(client: AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=user("as json"), response_format={"type": "json_object"}
    )
    assert json.loads(r.choices[0].message.content or "") == {"echo": "Echo: as json", "ok": True}


SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 3, "maxLength": 40},
            "age": {"type": "integer", "minimum": 18, "maximum": 120},
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2,
                     "uniqueItems": True},
            "kind": {"enum": ["a", "b"]},
            "address": {
                "type": "object",
                "properties": {"zip": {"type": "string", "maxLength": 5}, "when": {
                    "type": "string", "format": "date-time"}},
                "required": ["zip"],
                "additionalProperties": False,
            },
            "maybe": {"type": ["null", "boolean"]},
        },
        "required": ["name", "age", "score", "tags", "kind", "address", "maybe"],
        "additionalProperties": False,
    },
    {"type": "array", "items": {"type": "integer", "multipleOf": 5, "minimum": 7}, "minItems": 3},
    {"type": "string", "enum": ["red", "green"]},
    {"type": "boolean"},
    {"type": "number", "minimum": 10, "maximum": 10},
    {
        "$defs": {"item": {"type": "object", "properties": {"id": {"type": "integer"}},
                           "required": ["id"]}},
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"}}},
        "required": ["items"],
    },
    {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"x": {"const": 3}},
                                  "required": ["x"]}]},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
               {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
    {"type": "object", "required": ["free"], "minProperties": 3},
    {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": False},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: json.dumps(s)[:40])
def test_schema_examples_validate(schema: dict[str, Any]) -> None:
    value = example_for_schema(schema, "Echo: hi")
    jsonschema.Draft202012Validator(schema).validate(value)
    assert example_for_schema(schema, "Echo: hi") == value  # deterministic


async def test_response_format_json_schema(client: AsyncOpenAI) -> None:
    schema = SCHEMAS[0]
    r = await client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=user("a person"),
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    value = json.loads(r.choices[0].message.content or "")
    jsonschema.Draft202012Validator(schema).validate(value)
    assert value["name"] == "Echo: a person"


async def test_response_format_json_schema_streamed(client: AsyncOpenAI) -> None:
    schema = SCHEMAS[1]
    stream = await client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=user("numbers"),
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    jsonschema.validate(json.loads(text), schema)


# --------------------------------------------------------------------------- completions


async def test_text_completion(client: AsyncOpenAI) -> None:
    r = await client.completions.create(model=DEMO_MODEL_ID, prompt="Say hi")
    assert r.object == "text_completion"
    assert r.model == DEMO_SERVED_MODEL
    assert r.system_fingerprint == DEMO_SYSTEM_FINGERPRINT
    assert r.choices[0].text == "Echo: Say hi"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens == 2 and r.usage.completion_tokens == 4


async def test_text_completion_prompt_list_and_n(client: AsyncOpenAI) -> None:
    r = await client.completions.create(model=DEMO_MODEL_ID, prompt=["a", "b"], n=2)
    assert [(c.index, c.text) for c in r.choices] == [
        (0, "Echo: a"), (1, "Echo: a (choice 2)"), (2, "Echo: b"), (3, "Echo: b (choice 2)")
    ]


async def test_text_completion_stream(client: AsyncOpenAI) -> None:
    stream = await client.completions.create(
        model=DEMO_MODEL_ID,
        prompt="Stream a completion please",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "Echo: Stream a completion please"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == count_tokens("Stream a completion please") + count_tokens(text)


async def test_text_completion_bad_prompt_is_400(
    http: aiohttp.ClientSession, upstream: DemoUpstream
) -> None:
    status, _, raw = await post(http, upstream, {"model": "m", "prompt": 3}, "/v1/completions")
    assert status == 400
    assert assert_error_shape(raw)["param"] == "prompt"


# --------------------------------------------------------------------------- embeddings, models


async def test_embeddings_deterministic_unit_vectors(client: AsyncOpenAI) -> None:
    r = await client.embeddings.create(model=DEMO_MODEL_ID, input=["alpha", "beta", "alpha"])
    vectors = [d.embedding for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2]
    assert all(len(v) == 16 for v in vectors)
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-5 for v in vectors)
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    assert r.usage.prompt_tokens == 3
    floats = await client.embeddings.create(
        model=DEMO_MODEL_ID, input="alpha", dimensions=8, encoding_format="float"
    )
    again = await client.embeddings.create(
        model=DEMO_MODEL_ID, input="alpha", dimensions=8, encoding_format="float"
    )
    assert len(floats.data[0].embedding) == 8
    assert floats.data[0].embedding == again.data[0].embedding


async def test_embeddings_base64_matches_float(
    http: aiohttp.ClientSession, upstream: DemoUpstream
) -> None:
    body = {"model": "m", "input": "gamma", "dimensions": 4}
    _, _, raw_f = await post(http, upstream, {**body, "encoding_format": "float"}, "/v1/embeddings")
    _, _, raw_b = await post(http, upstream, {**body, "encoding_format": "base64"}, "/v1/embeddings")
    floats = json.loads(raw_f)["data"][0]["embedding"]
    packed = base64.b64decode(json.loads(raw_b)["data"][0]["embedding"])
    assert list(struct.unpack("<4f", packed)) == pytest.approx(floats, rel=1e-6)


async def test_models_and_health(
    client: AsyncOpenAI, http: aiohttp.ClientSession, upstream: DemoUpstream
) -> None:
    page = await client.models.list()
    assert [(m.id, m.owned_by) for m in page.data] == [(DEMO_MODEL_ID, DEMO_OWNED_BY)]
    model = await client.models.retrieve(DEMO_MODEL_ID)
    assert model.id == DEMO_MODEL_ID
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-nope")
    async with http.get(upstream.url + "/healthz") as resp:
        assert resp.status == 200 and await resp.json() == {"status": "ok"}


async def test_unknown_path_is_404_and_recorded(
    http: aiohttp.ClientSession, upstream: DemoUpstream
) -> None:
    status, _, raw = await post(http, upstream, {"x": 1}, "/v1/not/a/route")
    assert status == 404
    assert assert_error_shape(raw)["type"] == "not_found_error"
    assert upstream.recorded_requests()[-1]["path"] == "/v1/not/a/route"


# --------------------------------------------------------------------------- scripted failures


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "invalid_request_error"), (500, "server_error"), (503, "server_error"),
     (429, "rate_limit_error")],
)
async def test_status_directive(
    http: aiohttp.ClientSession, upstream: DemoUpstream, status: int, kind: str
) -> None:
    code, headers, raw = await post(http, upstream, chat_body(f"x [[demo:status={status}]]"))
    assert code == status
    error = assert_error_shape(raw)
    assert error["type"] == kind
    if status in (429, 503):
        assert headers["Retry-After"] == "1"
    else:
        assert "Retry-After" not in headers


async def test_status_429_through_openai_client(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(
            model=DEMO_MODEL_ID, messages=user("[[demo:status=429]][[demo:retry_after=7]]")
        )
    assert info.value.response.headers["retry-after"] == "7"


async def test_status_on_stream_request_is_plain_error(
    http: aiohttp.ClientSession, upstream: DemoUpstream
) -> None:
    code, headers, raw = await post(http, upstream, chat_body("[[demo:status=502]]", stream=True))
    assert code == 502 and headers["Content-Type"].startswith("application/json")
    assert_error_shape(raw)


async def test_slow_sleeps_before_answering(client: AsyncOpenAI) -> None:
    started = time.monotonic()
    r = await client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=user("wait [[demo:slow=0.3]]")
    )
    assert time.monotonic() - started >= 0.3
    assert r.choices[0].message.content == "Echo: wait"


async def test_break_mid_stream(http: aiohttp.ClientSession, upstream: DemoUpstream) -> None:
    body = chat_body("a long enough message to make many chunks [[demo:break]]", stream=True)
    lines: list[bytes] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(upstream.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            async for line in resp.content:
                lines.append(line)
    received = b"".join(lines)
    assert b"[DONE]" not in received
    assert b'"finish_reason":"stop"' not in received
    assert received.count(b'"content":') >= 3  # role chunk + content chunks got through


async def test_break_non_streaming(http: aiohttp.ClientSession, upstream: DemoUpstream) -> None:
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(
            upstream.url + "/v1/chat/completions", json=chat_body("[[demo:break]] hi")
        ) as resp:
            assert resp.status == 200
            await resp.read()


async def test_break_through_openai_client(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(
            model=DEMO_MODEL_ID, messages=user("[[demo:break]] cut me")
        )


async def test_drop_closes_without_response(
    http: aiohttp.ClientSession, upstream: DemoUpstream
) -> None:
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, upstream, chat_body("[[demo:drop]]"))
    # the server is fine afterwards
    status, _, _ = await post(http, upstream, chat_body("after drop"))
    assert status == 200


async def test_fail_times_sequence(http: aiohttp.ClientSession, upstream: DemoUpstream) -> None:
    body = chat_body("flaky [[demo:fail_times=2]]")
    statuses = [(await post(http, upstream, body))[0] for _ in range(3)]
    assert statuses == [500, 500, 200]
    other = chat_body("other flaky [[demo:fail_times=1]][[demo:status=503]]")
    assert [(await post(http, upstream, other))[0] for _ in range(2)] == [503, 200]
    # counters are per prompt, and can be reset
    async with http.delete(upstream.url + "/_demo/counters") as resp:
        assert resp.status == 200
    assert (await post(http, upstream, body))[0] == 500


async def test_invalid_json(client: AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=user("[[demo:invalid_json]] data"),
        response_format={"type": "json_object"},
    )
    content = r.choices[0].message.content or ""
    assert content.startswith('{"echo":"Echo: data"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    tool = await client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=user("[[demo:invalid_json]] call"), tools=TOOLS
    )
    [call] = tool.choices[0].message.tool_calls or []
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.function.arguments)


async def test_invalid_json_times(client: AsyncOpenAI) -> None:
    async def ask() -> str:
        r = await client.chat.completions.create(
            model=DEMO_MODEL_ID,
            messages=user("[[demo:invalid_json_times=1]] retry me"),
            response_format={"type": "json_object"},
        )
        return r.choices[0].message.content or ""

    with pytest.raises(json.JSONDecodeError):
        json.loads(await ask())
    assert json.loads(await ask()) == {"echo": "Echo: retry me", "ok": True}


async def test_toxic(client: AsyncOpenAI) -> None:
    r = await client.chat.completions.create(model=DEMO_MODEL_ID, messages=user("[[demo:toxic]]"))
    assert r.choices[0].message.content == TOXIC_SENTENCE
    assert "idiot" in TOXIC_SENTENCE and "hate you" in TOXIC_SENTENCE


async def test_toxic_midway_turns_late(client: AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=user("tell me [[demo:toxic_midway]]"), stream=True
    )
    pieces = [c.choices[0].delta.content async for c in stream
              if c.choices and c.choices[0].delta.content]
    text = "".join(pieces)
    assert text.startswith("Echo: tell me ") and text.endswith(TOXIC_SENTENCE)
    first_toxic = next(i for i, p in enumerate(pieces) if "".join(pieces[: i + 1]).count("stupid"))
    assert first_toxic >= 10  # many benign chunks first


async def test_pii(client: AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=user("contact? [[demo:pii]]")
    )
    content = r.choices[0].message.content or ""
    assert content == f"Echo: contact? {PII_SENTENCE}"
    for needle in ("jane.doe@example.com", "+1 415-555-0132", "4111 1111 1111 1111", "123-45-6789"):
        assert needle in content
    digits = [int(d) for d in "4111111111111111"]
    luhn = sum(digits[-1::-2]) + sum(sum(divmod(2 * d, 10)) for d in digits[-2::-2])
    assert luhn % 10 == 0


async def test_say_and_combined_content(client: AsyncOpenAI) -> None:
    r = await client.chat.completions.create(
        model=DEMO_MODEL_ID, messages=user("[[demo:say=Custom reply.]] [[demo:pii]]")
    )
    assert r.choices[0].message.content == f"Custom reply. {PII_SENTENCE}"


async def test_chunk_and_pace(client: AsyncOpenAI) -> None:
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model=DEMO_MODEL_ID,
        messages=user("abcdefghij [[demo:chunk=3]] [[demo:pace_ms=20]]"),
        stream=True,
    )
    chunks = [c async for c in stream]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert pieces == ["Ech", "o: ", "abc", "def", "ghi", "j"]
    assert time.monotonic() - started >= 0.02 * (len(chunks) - 1)


@pytest.mark.parametrize(
    "text",
    ["[[demo:nonsense]]", "[[demo:status=abc]]", "[[demo:status=200]]", "[[demo:slow]]",
     "[[demo:toxic=1]]", "[[demo:chunk=0]]", "unclosed [[demo:slow=1"],
)
async def test_bad_directive_is_400(
    http: aiohttp.ClientSession, upstream: DemoUpstream, text: str
) -> None:
    status, _, raw = await post(http, upstream, chat_body(text))
    assert status == 400
    error = assert_error_shape(raw)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_demo_directive"
    assert error["param"] == "messages"


@pytest.mark.parametrize(
    ("raw_body", "param"),
    [(b"{not json", None), (b"", None), (b"[1, 2]", None), (b'{"model": "m"}', "messages"),
     (b'{"messages": [{"role": "user", "content": "x"}], "n": 0}', "n"),
     (b'{"messages": [{"content": "x"}]}', "messages"),
     (b'{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "xml"}}',
      "response_format.type")],
)
async def test_malformed_requests_are_400(
    http: aiohttp.ClientSession, upstream: DemoUpstream, raw_body: bytes, param: str | None
) -> None:
    async with http.post(
        upstream.url + "/v1/chat/completions",
        data=raw_body,
        headers={"Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
        error = assert_error_shape(await resp.read())
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_directives_in_completions_and_embeddings(
    http: aiohttp.ClientSession, upstream: DemoUpstream, client: AsyncOpenAI
) -> None:
    r = await client.completions.create(model=DEMO_MODEL_ID, prompt="[[demo:toxic]]")
    assert r.choices[0].text == TOXIC_SENTENCE
    status, _, _ = await post(
        http, upstream, {"model": "m", "input": "x [[demo:status=500]]"}, "/v1/embeddings"
    )
    assert status == 500


# --------------------------------------------------------------------------- request log


async def test_requests_log_records_bodies_and_headers(
    http: aiohttp.ClientSession, upstream: DemoUpstream
) -> None:
    oai = AsyncOpenAI(
        base_url=upstream.url + "/v1", api_key="sk-forwarded-123", max_retries=0,
        default_headers={"X-Tenant": "acme"},
    )
    try:
        await oai.chat.completions.create(
            model=DEMO_MODEL_ID, messages=user("mail <EMAIL_ADDRESS_1> [[demo:slow=0]]"),
            temperature=0, extra_body={"custom_field": [1, 2]},
        )
    finally:
        await oai.close()
    async with http.get(upstream.url + "/_demo/requests") as resp:
        log = await resp.json()
    last = log["data"][-1]
    assert last["method"] == "POST" and last["path"] == "/v1/chat/completions"
    # credentials are never kept, even here: only a digest that proves what arrived
    assert last["headers"]["authorization"] == redacted("Bearer sk-forwarded-123")
    assert "sk-forwarded-123" not in orjson.dumps(log).decode()
    assert last["headers"]["x-tenant"] == "acme"
    assert last["body"]["messages"] == user("mail <EMAIL_ADDRESS_1> [[demo:slow=0]]")
    assert last["body"]["custom_field"] == [1, 2]
    assert last["body"]["temperature"] == 0
    assert log["total_seen"] == last["seq"] == 1
    async with http.delete(upstream.url + "/_demo/requests") as resp:
        assert (await resp.json()) == {"cleared": 1}
    async with http.get(upstream.url + "/_demo/requests") as resp:
        assert (await resp.json())["data"] == []


async def test_requests_log_is_bounded(http: aiohttp.ClientSession) -> None:
    async with await start_demo_upstream(request_log_size=3) as small:
        for i in range(5):
            await post(http, small, chat_body(f"m{i}"))
        await post(http, small, b"{broken")
        async with http.get(small.url + "/_demo/requests?limit=2") as resp:
            log = await resp.json()
    assert log["total_seen"] == 6
    assert [e["seq"] for e in log["data"]] == [5, 6]
    assert log["data"][0]["body"]["messages"] == user("m4")
    assert log["data"][1]["body"] == "{broken"  # the raw text of a body that is not JSON


# --------------------------------------------------------------------------- options, CLI entry


async def test_create_app_options(http: aiohttp.ClientSession) -> None:
    with pytest.raises(ValueError):
        create_app(default_chunk_chars=0)
    async with await start_demo_upstream(
        default_chunk_chars=4, served_model="other-model", system_fingerprint="fp_x"
    ) as up:
        status, _, raw = await post(http, up, chat_body("abcdefgh", stream=True))
    events, done = sse_events(raw)
    assert status == 200 and done
    pieces = [e["choices"][0]["delta"].get("content") for e in events[1:-1]]
    assert pieces == ["Echo", ": ab", "cdef", "gh"]
    assert {(e["model"], e["system_fingerprint"]) for e in events} == {("other-model", "fp_x")}


async def test_run_demo_upstream_serves_until_sigterm(http: aiohttp.ClientSession) -> None:
    code = (
        "from sidecar.demo import run_demo_upstream\n"
        "run_demo_upstream('127.0.0.1', 0, chunk_delay_ms=1,"
        " on_started=lambda up: print(up.url, flush=True))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with http.get(url + "/healthz") as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("text", "rest", "fields"),
    [
        ("plain", "plain", {}),
        ("Hi [[demo:slow=1.5]] there", "Hi there", {"slow_s": 1.5}),
        ("[[demo:status=429]][[demo:retry_after=3]]x", "x", {"status": 429, "retry_after": 3}),
        ("[[demo:break]] [[demo:drop]]", "", {"break_": True, "drop": True}),
        ("[[demo:say=a = b]] q", "q", {"say": "a = b"}),
        ("[[demo:fail_times=2]][[demo:invalid_json_times=1]]", "",
         {"fail_times": 2, "invalid_json_times": 1}),
        ("[[demo:chunk=3]][[demo:pace_ms=2.5]]", "", {"chunk_chars": 3, "pace_ms": 2.5}),
    ],
)
def test_parse_directives(text: str, rest: str, fields: dict[str, Any]) -> None:
    got_rest, script = parse_directives(text)
    assert got_rest == rest
    for name, value in fields.items():
        assert getattr(script, name) == value


@pytest.mark.parametrize("text", ["[[demo:what]]", "[[demo:slow=-1]]", "[[demo:slow=nan]]",
                                  "[[demo:pii=yes]]", "[[demo:fail_times]]", "[[demo:x"])
def test_parse_directives_rejects(text: str) -> None:
    with pytest.raises(DirectiveError):
        parse_directives(text)


def test_every_directive_is_documented_and_parses() -> None:
    for name, (syntax, meaning) in DIRECTIVES.items():
        assert syntax.startswith(f"[[demo:{name}") and meaning
        example = syntax.replace("CODE", "500").replace("SECONDS", "1").replace("MS", "1")
        example = example.replace("CHARS", "2").replace("=N]]", "=1]]").replace("TEXT", "t")
        parse_directives(example)


@pytest.mark.parametrize("valid", ['{"a":1}', "[1,2,3]", '"s"', "1", "12", "true", "null", "{}"])
def test_broken_json_is_not_json(valid: str) -> None:
    json.loads(valid)
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken_json(valid))


@pytest.mark.parametrize(
    ("text", "tokens"), [("", 0), ("Hello, world!", 4), ("don't", 3), ("a  b\nc", 3)]
)
def test_count_tokens(text: str, tokens: int) -> None:
    assert count_tokens(text) == tokens


def test_truncate_tokens() -> None:
    assert truncate_tokens("Echo: one two", 3) == "Echo: one"
    assert truncate_tokens("Echo: one", 3) is None
