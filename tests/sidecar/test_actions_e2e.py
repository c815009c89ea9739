"""Retries, fallbacks, circuit breakers and `then`, end to end against the demo upstream."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from tests.helpers.servers import RunningSidecar, seen

JSON_FORMAT = {"type": "json_object"}


def _policy(tmp_path: Path, route_extra: str, output: str = "[{detector: format, action: retry}]") -> str:
    p = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
    p.write_text(
        "detectors:\n  format: {kind: format}\n"
        f"routes:\n  - name: r\n    output: {output}\n" + route_extra
    )
    return str(p)


def _client(sc: RunningSidecar) -> openai.OpenAI:
    return openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)


def _tag() -> str:
    return f"tag-{uuid.uuid4().hex[:10]}"


def test_invalid_json_is_retried_with_a_corrective_instruction(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url, guardrails={"enabled": True, "policy": _policy(tmp_path, "    retry: {times: 2}\n")})
    tag = _tag()
    reply = _client(sc).chat.completions.create(
        model="m", response_format=JSON_FORMAT,
        messages=[{"role": "user", "content": f"{tag} [[demo:invalid_json_times=1]]"}],
    )
    assert json.loads(reply.choices[0].message.content or "")["ok"] is True
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.retries == 1 and rec.status == 200 and rec.decision == "pass"
    assert [(a.kind, a.decision) for a in rec.attempts] == [("primary", "retry"), ("retry", "pass")]
    sent = seen(demo_upstream, tag)
    assert len(sent) == 2
    corrective = sent[1]["body"]["messages"][-1]
    assert corrective["role"] == "user" and "rejected by an automatic check" in corrective["content"]
    assert "json invalid" in corrective["content"]
    assert tag not in corrective["content"]  # names the rule, never the answer


def test_a_stream_retry_carries_the_corrective_instruction(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    # a buffered stream is judged whole before anything leaves, so it can still retry
    policy = _policy(tmp_path, "    retry: {times: 1}\n    stream: {mode: buffered}\n")
    sc = start_sidecar(demo_upstream.url, guardrails={"enabled": True, "policy": policy})
    tag = _tag()
    chunks = _client(sc).chat.completions.create(
        model="m", response_format=JSON_FORMAT, stream=True,
        messages=[{"role": "user", "content": f"{tag} [[demo:invalid_json_times=1]]"}],
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text)["ok"] is True
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert [(a.kind, a.decision) for a in rec.attempts] == [("primary", "retry"), ("retry", "pass")]
    sent = seen(demo_upstream, tag)
    assert len(sent) == 2 and sent[0]["body"]["messages"] != sent[1]["body"]["messages"]
    corrective = sent[1]["body"]["messages"][-1]
    assert "rejected by an automatic check" in corrective["content"] and "json invalid" in corrective["content"]


def test_parallel_retries_take_the_first_passing_answer(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url, guardrails={"enabled": True, "policy": _policy(tmp_path, "    retry: {times: 1, parallel: 3, corrective: false}\n")})
    tag = _tag()
    reply = _client(sc).chat.completions.create(
        model="m", response_format=JSON_FORMAT,
        messages=[{"role": "user", "content": f"{tag} [[demo:invalid_json_times=2]]"}],
    )
    assert json.loads(reply.choices[0].message.content or "")["ok"] is True
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    kinds = [a.kind for a in rec.attempts]
    assert kinds[0] == "primary" and kinds.count("retry") >= 1
    assert rec.attempts[0].decision == "retry"
    assert any(a.kind == "retry" and a.decision == "pass" for a in rec.attempts)
    # the round sent up to 3 at once (primary + retries); losers are cancelled once one
    # passes, possibly before a slow one left the sidecar
    assert 3 <= len(seen(demo_upstream, tag)) <= 4


def test_dead_primary_falls_back_to_another_upstream(tmp_path: Path, start_sidecar: Any, demo_upstream: Any, closed_port: int) -> None:
    policy = _policy(tmp_path, "    retry: {times: 1}\n    fallback: [{upstream: backup, model: backup-model}]\n")
    sc = start_sidecar(
        f"http://127.0.0.1:{closed_port}",
        guardrails={"enabled": True, "policy": policy},
        fallback_upstreams={"backup": {"url": demo_upstream.url}},
    )
    tag = _tag()
    reply = _client(sc).chat.completions.create(model="m", messages=[{"role": "user", "content": tag}])
    assert reply.choices[0].message.content == f"Echo: {tag}"
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert [(a.kind, a.upstream, a.error) for a in rec.attempts] == [
        ("primary", "primary", "upstream_unavailable"),
        ("retry", "primary", "upstream_unavailable"),
        ("fallback", "backup", None),
    ]
    assert rec.upstream == demo_upstream.url and rec.status == 200
    assert seen(demo_upstream, tag)[0]["body"]["model"] == "backup-model"


def test_upstream_5xx_falls_back_to_another_model(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    policy = _policy(tmp_path, "    retry: {times: 0}\n    fallback: [{model: smaller-model}]\n")
    sc = start_sidecar(demo_upstream.url, guardrails={"enabled": True, "policy": policy})
    tag = _tag()
    reply = _client(sc).chat.completions.create(
        model="big-model", messages=[{"role": "user", "content": f"{tag} [[demo:fail_times=1]]"}]
    )
    assert reply.choices[0].message.content == f"Echo: {tag}"
    models = [r["body"]["model"] for r in seen(demo_upstream, tag)]
    assert models == ["big-model", "smaller-model"]
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert [(a.kind, a.status) for a in rec.attempts] == [("primary", 500), ("fallback", 200)]


def test_circuit_opens_after_consecutive_failures(tmp_path: Path, start_sidecar: Any, demo_upstream: Any, closed_port: int) -> None:
    policy = _policy(tmp_path, "    retry: {times: 0}\n    fallback: [{upstream: backup}]\n")
    sc = start_sidecar(
        f"http://127.0.0.1:{closed_port}",
        guardrails={"enabled": True, "policy": policy},
        fallback_upstreams={"backup": {"url": demo_upstream.url}},
        circuit={"failure_threshold": 2, "open_s": 60},
    )
    client = _client(sc)
    for i in range(3):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"c{i}"}])
    recs = sc.memory.wait_for(lambda rs: len(rs) == 3)
    errors = [r.attempts[0].error for r in recs]
    assert errors == ["upstream_unavailable", "upstream_unavailable", "circuit_open"]
    assert all(r.attempts[-1].upstream == "backup" and r.status == 200 for r in recs)

    async def ready() -> Any:
        async with aiohttp.ClientSession() as s:
            async with s.get(sc.url + "/readyz") as r:
                return await r.json()

    state = asyncio.run(ready())["components"]["upstreams"]
    assert state["primary"]["circuit"]["state"] == "open"
    assert state["backup"]["circuit"]["state"] == "closed"


@pytest.mark.parametrize(("then", "status"), [("block", 400), ("pass", 200)])
def test_exhausted_rounds_apply_then(tmp_path: Path, start_sidecar: Any, demo_upstream: Any, then: str, status: int) -> None:
    # corrective off: the demo reads its directives from the last user message
    policy = _policy(tmp_path, f"    retry: {{times: 1, corrective: false}}\n    then: {then}\n")
    sc = start_sidecar(demo_upstream.url, guardrails={"enabled": True, "policy": policy})

    async def go() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s:
            async with s.post(sc.url + "/v1/chat/completions", json={
                "model": "m", "response_format": JSON_FORMAT,
                "messages": [{"role": "user", "content": f"{_tag()} [[demo:invalid_json]]"}]}) as r:
                return r.status, await r.json()

    got, body = asyncio.run(go())
    assert got == status
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.retries == 1 and len(rec.attempts) == 2
    assert rec.attributes["railwatch.exhausted"] == "1"
    if then == "block":
        assert body["error"]["code"] == "content_blocked" and rec.decision == "block"
    else:
        assert rec.decision == "flag" and "choices" in body


def test_client_errors_are_not_retried(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url, guardrails={"enabled": True, "policy": _policy(tmp_path, "    retry: {times: 3}\n")})
    tag = _tag()
    with pytest.raises(openai.BadRequestError):
        _client(sc).chat.completions.create(model="m", messages=[{"role": "user", "content": f"{tag} [[demo:status=400]]"}])
    assert len(seen(demo_upstream, tag)) == 1


def test_unknown_fallback_upstream_fails_at_start(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    from sidecar.errors import ConfigError

    policy = _policy(tmp_path, "    fallback: [{upstream: nowhere}]\n")
    with pytest.raises(ConfigError, match="routes.0.fallback.0.upstream"):
        start_sidecar(demo_upstream.url, guardrails={"enabled": True, "policy": policy})


@pytest.fixture
def garbage_upstream(loop_thread: Any) -> Any:
    """An upstream that answers with bytes that are not HTTP."""

    async def start() -> Any:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)
            writer.write(b"NOT-HTTP garbage\r\n\r\n")
            await writer.drain()
            writer.close()

        return await asyncio.start_server(handle, "127.0.0.1", 0)

    server = loop_thread.run(start())
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_upstream_answers_get_502_in_openai_shape(start_sidecar: Any, garbage_upstream: str, stream: bool) -> None:
    sc = start_sidecar(garbage_upstream)

    async def go() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s:
            async with s.post(sc.url + "/v1/chat/completions", json={
                    "model": "m", "stream": stream, "messages": [{"role": "user", "content": "x"}]}) as r:
                return r.status, await r.json()

    status, body = asyncio.run(go())
    assert status == 502 and body["error"]["code"] == "upstream_bad_response"


def test_credentials_in_upstream_urls_are_refused() -> None:
    from sidecar.errors import ConfigError
    from sidecar.settings import load_settings

    with pytest.raises(ConfigError, match="credentials"):
        load_settings(env={"RAILWATCH_UPSTREAM__URL": "http://user:secret@127.0.0.1:9"})


def test_a_200_with_an_error_body_is_retried(tmp_path: Path, start_sidecar: Any, scripted_upstream: Any) -> None:
    from aiohttp import web

    calls: list[int] = []

    async def chat(request: web.Request) -> web.Response:
        calls.append(1)
        if len(calls) == 1:
            return web.json_response({"error": {"message": "overloaded", "type": "server_error"}})
        return web.json_response({"id": "x", "object": "chat.completion", "model": "m",
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": "ok"}}]})

    url = scripted_upstream({"/v1/chat/completions": chat})
    sc = start_sidecar(url, guardrails={"enabled": True, "policy": _policy(tmp_path, "    retry: {times: 1}\n")})
    reply = _client(sc).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert reply.choices[0].message.content == "ok"
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert [(a.kind, a.error) for a in rec.attempts] == [("primary", "upstream_error_body"), ("retry", None)]
