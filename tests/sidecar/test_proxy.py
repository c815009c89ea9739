"""The sidecar proxy end to end: real demo upstream and real sidecar on loopback.

The client side is the official ``openai`` package where a user would use it, and
raw HTTP (aiohttp) for inputs the client would refuse to send.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from sidecar.demo._handlers import redacted
from sidecar.record import TraceRecord
from tests.helpers.servers import RunningSidecar


def _record(sc: RunningSidecar, trace_id: str, timeout: float = 5.0) -> TraceRecord:
    recs = sc.memory.wait_for(lambda rs: any(r.trace_id == trace_id for r in rs), timeout)
    matches = [r for r in recs if r.trace_id == trace_id]
    assert len(matches) == 1, f"expected exactly one record, got {len(matches)}"
    return matches[0]


def _only_record(sc: RunningSidecar, timeout: float = 5.0) -> TraceRecord:
    recs = sc.memory.wait_for(lambda rs: len(rs) >= 1, timeout)
    assert len(recs) == 1, [r.route for r in recs]
    return recs[0]


def _client(sc: RunningSidecar, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=sc.base_url, api_key="sk-test-secret", max_retries=0, **kw)


def _raw(sc: RunningSidecar, method: str, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
    async def go() -> tuple[int, dict[str, str], bytes]:
        async with aiohttp.ClientSession() as s:
            async with s.request(method, sc.url + path, **kw) as r:
                return r.status, dict(r.headers), await r.read()

    return asyncio.run(go())


def _demo_requests(demo: Any) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as s:
            async with s.get(demo.url + "/_demo/requests") as r:
                data = await r.json()
                return data["data"] if isinstance(data, dict) else data

    return asyncio.run(go())


CHAT = "/v1/chat/completions"


# --- the openai client through the sidecar ----------------------------------------------


def test_chat_non_streaming_is_forwarded_and_traced(sidecar: RunningSidecar) -> None:
    client = _client(sidecar)
    raw = client.chat.completions.with_raw_response.create(
        model="railwatch-demo",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        temperature=0.2,
        max_tokens=50,
    )
    trace_id = raw.headers["x-railwatch-trace-id"]
    reply = raw.parse()
    assert reply.choices[0].message.content == "Echo: hello there"
    rec = _record(sidecar, trace_id)
    assert rec.route == "chat" and rec.method == "POST" and rec.path == "/v1/chat/completions"
    assert rec.status == 200 and rec.error_type is None and not rec.stream
    assert rec.model_requested == "railwatch-demo"
    assert rec.model_served == reply.model
    assert rec.system_fingerprint == reply.system_fingerprint
    assert rec.response_id == reply.id
    assert rec.finish_reasons == ("stop",)
    assert rec.temperature == 0.2 and rec.max_tokens == 50
    assert reply.usage is not None
    assert (rec.prompt_tokens, rec.completion_tokens, rec.total_tokens) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
        reply.usage.total_tokens,
    )
    assert rec.usage_source == "upstream"
    assert rec.prompt_text == "system: be brief\nuser: hello there"
    assert rec.output_text == "Echo: hello there"
    assert rec.upstream_attempts == 1
    assert rec.upstream_ms is not None and rec.total_ms >= rec.upstream_ms
    assert rec.overhead_ms is not None and rec.overhead_ms >= 0
    assert rec.ttft_ms is None  # not a stream
    assert len(rec.request_id) == 32 and len(rec.span_id) == 16


async def test_async_client_chat(sidecar: RunningSidecar) -> None:
    client = openai.AsyncOpenAI(base_url=sidecar.base_url, api_key="x", max_retries=0)
    reply = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "async hello"}]
    )
    assert reply.choices[0].message.content == "Echo: async hello"
    await client.close()


def test_chat_streaming_with_usage(sidecar: RunningSidecar) -> None:
    client = _client(sidecar)
    stream = client.chat.completions.create(
        model="railwatch-demo",
        messages=[{"role": "user", "content": "stream this text please [[demo:chunk=3]]"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, ids = [], None, set()
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
    text = "".join(pieces)
    assert text == "Echo: stream this text please"
    assert len(pieces) > 5  # really streamed in small pieces
    assert usage is not None
    rec = _only_record(sidecar)
    assert rec.stream and rec.status == 200 and rec.error_type is None
    assert rec.output_text == text
    assert rec.completion_tokens == usage.completion_tokens and rec.usage_source == "upstream"
    assert rec.ttft_ms is not None and 0 < rec.ttft_ms <= rec.total_ms
    assert rec.tpot_ms is not None and rec.tpot_ms >= 0
    assert rec.finish_reasons == ("stop",)
    assert rec.response_id in ids


def test_streaming_without_usage_counts_tokens(sidecar: RunningSidecar) -> None:
    client = _client(sidecar)
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "count me [[demo:chunk=4]]"}], stream=True
    )
    deltas = sum(1 for c in stream for ch in c.choices if ch.delta.content)
    rec = _only_record(sidecar)
    assert rec.usage_source == "counted"
    assert rec.completion_tokens == deltas


def test_tools_and_n(sidecar: RunningSidecar) -> None:
    client = _client(sidecar)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city", "days"],
                },
            },
        }
    ]
    reply = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "weather?"}], tools=tools
    )
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) >= {"city", "days"}
    assert reply.choices[0].finish_reason == "tool_calls"

    two = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "twice"}], n=2
    )
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].message.content != two.choices[1].message.content
    recs = sidecar.memory.wait_for(lambda rs: len(rs) == 2)
    assert recs[0].finish_reasons == ("tool_calls",)
    assert recs[1].n == 2 and recs[1].finish_reasons == ("stop", "stop")

    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "twice streamed"}], n=2, stream=True
    )
    by_index: dict[int, str] = {}
    for chunk in stream:
        for ch in chunk.choices:
            by_index[ch.index] = by_index.get(ch.index, "") + (ch.delta.content or "")
    assert by_index[0] == two.choices[0].message.content.replace("twice", "twice streamed")
    assert set(by_index) == {0, 1}


def test_completions_embeddings_models(sidecar: RunningSidecar) -> None:
    client = _client(sidecar)
    comp = client.completions.create(model="m", prompt="complete me")
    assert comp.choices[0].text == "Echo: complete me"
    text = "".join(
        c.choices[0].text for c in client.completions.create(model="m", prompt="stream me", stream=True)
        if c.choices
    )
    assert text == "Echo: stream me"
    emb = client.embeddings.create(model="m", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    models = client.models.list()
    assert any(m.id == "railwatch-demo" for m in models.data)
    recs = sidecar.memory.wait_for(lambda rs: len(rs) == 4)
    assert [r.route for r in recs] == ["text_completion", "text_completion", "embeddings", "models"]
    assert recs[1].stream and recs[1].output_text == "Echo: stream me"
    assert recs[2].prompt_text == "a\nb"
    assert all(r.status == 200 for r in recs)


# --- headers and trace context ------------------------------------------------------------


def test_traceparent_headers_and_unknown_fields(sidecar: RunningSidecar, demo_upstream: Any) -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    body = {"model": "m", "messages": [{"role": "user", "content": "hdrs"}], "vendor_extra": {"k": [1, 2]}}
    status, headers, _ = _raw(
        sidecar,
        "POST",
        CHAT,
        json=body,
        headers={
            "traceparent": f"00-{trace_id}-{parent}-01",
            "Authorization": "Bearer sk-forward-me",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "drop me",
            "Keep-Alive": "timeout=5",
            "X-End-To-End": "keep me",
        },
    )
    assert status == 200
    assert headers["x-railwatch-trace-id"] == trace_id
    rec = _record(sidecar, trace_id)
    assert rec.parent_span_id == parent
    seen = [r for r in _demo_requests(demo_upstream) if r["body"] and r["body"].get("vendor_extra")]
    assert seen, "the upstream did not receive the request"
    got = {k.lower(): v for k, v in seen[-1]["headers"].items()}
    assert seen[-1]["body"]["vendor_extra"] == {"k": [1, 2]}  # unknown fields kept
    assert got["authorization"] == redacted("Bearer sk-forward-me")  # the demo keeps a digest
    assert got["x-end-to-end"] == "keep me"
    assert "x-hop" not in got and "keep-alive" not in got
    assert got["traceparent"] == f"00-{trace_id}-{rec.span_id}-01"


def test_invalid_traceparent_starts_a_new_trace(sidecar: RunningSidecar) -> None:
    status, headers, _ = _raw(
        sidecar, "POST", CHAT, json={"messages": [{"role": "user", "content": "x"}]},
        headers={"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
    )
    assert status == 200
    rec = _record(sidecar, headers["x-railwatch-trace-id"])
    assert rec.parent_span_id is None and rec.trace_id != "0" * 32


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"", "empty_body", None),
        (b"[1, 2]", "invalid_json", None),
        (b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}', "invalid_encoding", None),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "invalid_type", "model"),
        (b'{"model": "m", "messages": "hello"}', "invalid_type", "messages"),
        (b'{"model": "m", "messages": []}', "invalid_type", "messages"),
        (b'{"model": "m", "messages": [{"role": "user", "content": 7}]}', "invalid_type", "messages[0].content"),
        (b'{"model": "m", "messages": [{"content": "x"}]}', "invalid_type", "messages[0].role"),
        (b'{"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}', "invalid_type", "stream"),
        (b'{"model": "m", "temperature": "hot", "messages": [{"role": "user", "content": "x"}]}', "invalid_type", "temperature"),
        (b'{"model": "m", "n": 0, "messages": [{"role": "user", "content": "x"}]}', "invalid_type", "n"),
        (b'{"model": "m", "max_tokens": 1.5, "messages": [{"role": "user", "content": "x"}]}', "invalid_type", "max_tokens"),
    ],
)
def test_bad_chat_bodies_get_400(sidecar: RunningSidecar, body: bytes, code: str, param: str | None) -> None:
    status, headers, raw = _raw(
        sidecar, "POST", CHAT, data=body, headers={"Content-Type": "application/json"}
    )
    assert status == 400
    err = json.loads(raw)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["code"] == code and err["param"] == param
    assert "\xff" not in err["message"] and "hot" not in err["message"]  # no request text echoed
    rec = _record(sidecar, headers["x-railwatch-trace-id"])
    assert (rec.status, rec.error_type, rec.upstream_attempts) == (400, code, 0)


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"model": "m", "prompt": 5}, "prompt"),
        ("/v1/completions", {"model": "m", "prompt": ["a", 1]}, "prompt"),
        ("/v1/embeddings", {"model": "m", "input": {"a": 1}}, "input"),
        ("/v1/embeddings", {"model": "m", "input": []}, "input"),
    ],
)
def test_bad_completion_and_embedding_bodies(sidecar: RunningSidecar, path: str, body: dict[str, Any], param: str) -> None:
    status, _, raw = _raw(sidecar, "POST", path, json=body)
    assert status == 400
    assert json.loads(raw)["error"]["param"] == param


def test_oversize_body_gets_413(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url, server={"max_body_bytes": 2048})
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 4096}]}
    status, headers, raw = _raw(sc, "POST", CHAT, json=big)
    assert status == 413
    assert json.loads(raw)["error"]["code"] == "payload_too_large"
    # also when the length is not announced up front (chunked upload)
    async def chunks() -> Any:
        for _ in range(8):
            yield b"x" * 1024

    status2, headers2, _ = _raw(sc, "POST", CHAT, data=chunks())
    assert status2 == 413
    for h in (headers, headers2):
        assert _record(sc, h["x-railwatch-trace-id"]).status == 413


def test_unknown_path_is_passed_through_and_traced(sidecar: RunningSidecar) -> None:
    status, headers, raw = _raw(sidecar, "GET", "/v2/not-a-route?x=1")
    assert status == 404  # the upstream's answer, passed through
    rec = _record(sidecar, headers["x-railwatch-trace-id"])
    assert rec.route == "passthrough" and rec.status == 404 and rec.path == "/v2/not-a-route"
    assert rec.error_type == "upstream_client_error"
    status, headers, raw = _raw(sidecar, "GET", "/healthz")
    assert status == 200 and json.loads(raw)["status"] == "ok"


# --- upstream failures ------------------------------------------------------------------------


def test_upstream_down_gets_502(start_sidecar: Any, closed_port: int) -> None:
    sc = start_sidecar(f"http://127.0.0.1:{closed_port}")
    client = _client(sc)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_unavailable"  # type: ignore[index]
    rec = _only_record(sc)
    assert (rec.status, rec.error_type, rec.upstream_attempts) == (502, "upstream_unavailable", 1)
    status, _, raw = _raw(sc, "GET", "/readyz")
    ready = json.loads(raw)
    assert status == 503 and ready["components"]["upstream"]["state"] == "unreachable"


def test_upstream_slow_past_timeout_gets_504(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url, upstream={"read_timeout_s": 0.3, "total_timeout_s": 0.5})
    status, headers, raw = _raw(
        sc, "POST", CHAT, json={"messages": [{"role": "user", "content": "[[demo:slow=2]]"}]}
    )
    assert status == 504 and json.loads(raw)["error"]["code"] == "upstream_timeout"
    assert _record(sc, headers["x-railwatch-trace-id"]).error_type == "upstream_timeout"


def test_upstream_error_status_and_body_pass_through(sidecar: RunningSidecar) -> None:
    status, headers, raw = _raw(
        sidecar, "POST", CHAT, json={"messages": [{"role": "user", "content": "[[demo:status=503]]"}]}
    )
    assert status == 503 and "error" in json.loads(raw)
    assert "retry-after" in {k.lower() for k in headers}
    rec = _record(sidecar, headers["x-railwatch-trace-id"])
    assert (rec.status, rec.error_type) == (503, "upstream_server_error")


def test_upstream_breaking_mid_stream(sidecar: RunningSidecar) -> None:
    client = _client(sidecar)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "a long answer to break [[demo:break]] [[demo:chunk=2]]"}],
            stream=True,
        ):
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert received, "some chunks arrived before the break"
    rec = _only_record(sidecar)
    assert rec.status == 200 and rec.error_type == "upstream_stream_broken" and rec.stream


def test_upstream_breaking_mid_body_gets_502(sidecar: RunningSidecar) -> None:
    status, headers, raw = _raw(
        sidecar, "POST", CHAT, json={"messages": [{"role": "user", "content": "x [[demo:break]]"}]}
    )
    assert status == 502
    assert json.loads(raw)["error"]["code"] == "upstream_broken_response"


def test_upstream_dropping_connection_gets_502(sidecar: RunningSidecar) -> None:
    status, headers, _ = _raw(
        sidecar, "POST", CHAT, json={"messages": [{"role": "user", "content": "x [[demo:drop]]"}]}
    )
    assert status == 502
    assert _record(sidecar, headers["x-railwatch-trace-id"]).error_type == "upstream_unavailable"


# --- client disconnect and overload -------------------------------------------------------------


@pytest.fixture
def slow_stream_upstream(loop_thread: Any) -> Any:
    """A scripted upstream that streams forever and records when its client went away."""
    state: dict[str, Any] = {"cancelled": asyncio.Event, "events": []}

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for i in range(600):
                chunk = {"id": "x", "object": "chat.completion.chunk", "model": "slow",
                         "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                await asyncio.sleep(0.02)
        except (ConnectionResetError, asyncio.CancelledError):
            state["events"].append("client_gone")
            raise
        return resp

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner

    runner = loop_thread.run(start())
    state["url"] = "http://{}:{}".format(*runner.addresses[0][:2])
    yield state
    loop_thread.run(runner.cleanup())


def test_client_disconnect_mid_stream_cancels_upstream(start_sidecar: Any, slow_stream_upstream: Any) -> None:
    sc = start_sidecar(slow_stream_upstream["url"])

    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            resp = await s.post(sc.url + CHAT, json={"stream": True, "messages": [{"role": "user", "content": "x"}]})
            await resp.content.readany()
            resp.close()  # drop the connection mid-stream

    asyncio.run(go())
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1, 5)[0]
    assert rec.client_disconnected and rec.stream
    assert rec.attributes.get("railwatch.signal.abandoned") == "1"  # implicit feedback
    # the upstream saw its client (the sidecar) go away, long before its 12 s stream ended
    deadline = asyncio.run(_wait_until(lambda: "client_gone" in slow_stream_upstream["events"], 5))
    assert deadline


async def _wait_until(cond: Any, timeout: float) -> bool:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


def test_too_many_in_flight_gets_503_with_retry_after(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url, server={"max_in_flight": 1, "retry_after_s": 3})

    async def go() -> tuple[int, dict[str, str], bytes]:
        async with aiohttp.ClientSession() as s:
            slow = asyncio.create_task(
                s.post(sc.url + CHAT, json={"messages": [{"role": "user", "content": "[[demo:slow=2]]"}]})
            )
            await asyncio.sleep(0.5)
            async with s.post(sc.url + CHAT, json={"messages": [{"role": "user", "content": "x"}]}) as r:
                out = (r.status, dict(r.headers), await r.read())
            (await slow).close()
            return out

    status, headers, raw = asyncio.run(go())
    assert status == 503 and headers["Retry-After"] == "3"
    assert json.loads(raw)["error"]["code"] == "overloaded"
    recs = sc.memory.wait_for(lambda rs: len(rs) == 2)
    assert sorted(r.status for r in recs) == [200, 503]


def test_readyz_lists_components(sidecar: RunningSidecar) -> None:
    status, _, raw = _raw(sidecar, "GET", "/readyz")
    body = json.loads(raw)
    assert status == 200 and body["status"] == "ready"
    assert body["components"]["upstream"]["state"] == "ok"
    assert body["components"]["exporters"]["memory"]["worker_alive"] is True
    assert body["components"]["lifecycle"]["upstream_client"] == "ok"
