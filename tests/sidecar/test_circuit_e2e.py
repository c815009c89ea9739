"""One failing endpoint opens only its own breaker; /readyz says degraded, not down."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web


@pytest.fixture
def no_embeddings_upstream(scripted_upstream: Any) -> Any:
    """Like llama.cpp without ``--embedding``: chat works, /v1/embeddings answers 500."""

    async def chat(request: web.Request) -> web.Response:
        return web.json_response({
            "id": "c", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hello"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    async def embeddings(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "not served", "type": "server_error"}},
                                 status=500)

    return scripted_upstream({"/v1/chat/completions": chat, "/v1/embeddings": embeddings})


def test_a_failing_endpoint_does_not_lock_out_the_others(start_sidecar: Any, no_embeddings_upstream: str) -> None:
    sc = start_sidecar(no_embeddings_upstream, guardrails={"enabled": True},
                       circuit={"min_requests": 3, "failure_rate": 0.5, "open_s": 60})
    client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)
    codes = []
    for _ in range(4):
        try:
            client.embeddings.create(model="m", input="hello")
        except openai.APIStatusError as exc:
            codes.append((exc.status_code, exc.code))
    assert codes[-1] == (502, "circuit_open")  # the embeddings breaker opened
    for _ in range(5):  # chat goes on
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "hello"

    async def ready() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.get(sc.url + "/readyz") as r:
            return r.status, await r.json()

    status, body = asyncio.run(ready())
    assert status == 200 and body["status"] == "degraded"
    assert body["degraded"] == ["circuit open: primary /v1/embeddings"]
    circuit = body["components"]["upstreams"]["primary"]["circuit"]
    assert circuit["endpoints"]["/v1/chat/completions"]["state"] == "closed"
