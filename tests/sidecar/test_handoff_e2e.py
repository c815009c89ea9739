"""Hand-off end to end: exhausted retries -> hand-off stored in ClickHouse -> webhook ->
a reviewer resolves it through the review UI's real forms -> the client's poll gets the answer."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import openai
from aiohttp import web

from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter

TOKEN = "review-token-for-tests-0123456789"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _csrf(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no csrf field in the page"
    return match.group(1)


def test_exhausted_retries_hand_off_to_a_person(
    tmp_path: Path, backend: Any, database: str, loop_thread: Any, start_sidecar: Any,
    demo_upstream: Any,
) -> None:  # (fixture order: the database outlives the sidecar that writes to it)
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=200)

    async def start_receiver() -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, "http://{}:{}/hook".format(*runner.addresses[0][:2])

    receiver, hook_url = loop_thread.run(start_receiver())
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "detectors:\n  format: {kind: format}\n"
        "routes:\n  - name: r\n    output: [{detector: format, action: retry}]\n"
        "    retry: {times: 1, corrective: false}\n    then: handoff\n"
    )
    clickhouse = ClickHouseExporter(ClickHouseConfig(
        dsn=backend.dsn, database=database, data_dir=tmp_path / "data",
        spill_dir=tmp_path / "spill", insert_max_age_s=0.05, ttl_text_days=None,
    ))
    sc = start_sidecar(
        demo_upstream.url,
        exporters=[clickhouse],
        guardrails={"enabled": True, "policy": str(policy)},
        handoff={"enabled": True, "webhook_url": hook_url, "review": {"token": TOKEN}},
    )
    try:
        client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="m", response_format={"type": "json_object"},
            messages=[{"role": "user", "content": "need JSON [[demo:invalid_json]]"}],
        )
        handoff_id = raw.headers["x-railwatch-handoff-id"]
        poll_token = raw.headers["x-railwatch-handoff-token"]
        reply = raw.parse()
        assert "follow up" in (reply.choices[0].message.content or "").lower()
        assert reply.model_extra and reply.model_extra["railwatch"]["handoff_id"] == handoff_id
        assert reply.model_extra["railwatch"]["poll_token"] == poll_token
        rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
        assert rec.handoff_id == handoff_id and rec.decision == "handoff" and rec.retries == 1

        async def flow() -> dict[str, Any]:
            for _ in range(100):  # the webhook is posted in the background
                if received:
                    break
                await asyncio.sleep(0.05)
            async with aiohttp.ClientSession() as anon:
                async with anon.get(sc.url + "/review", allow_redirects=False) as r:
                    assert r.status in (302, 303, 401)
                async with anon.post(sc.url + f"/review/{handoff_id}/resolve", allow_redirects=False,
                                     data={"action": "approve"}) as r:
                    assert r.status in (302, 303, 401, 403)
            jar = aiohttp.CookieJar(unsafe=True)
            async with aiohttp.ClientSession(cookie_jar=jar) as http:
                async with http.get(sc.url + "/review/login") as r:
                    nonce = _csrf(await r.text())
                async with http.post(sc.url + "/review/login", allow_redirects=False,
                                     data={"csrf": nonce, "token": TOKEN, "next": "/review"}) as r:
                    assert r.status in (302, 303)
                async with http.get(sc.url + "/review") as r:
                    assert r.status == 200 and handoff_id in await r.text()
                async with http.get(sc.url + f"/review/{handoff_id}") as r:
                    page = await r.text()
                    assert r.status == 200 and "need JSON" in page
                async with http.post(sc.url + f"/review/{handoff_id}/resolve", allow_redirects=False,
                                     data={"csrf": _csrf(page), "action": "edit",
                                           "answer": '{"answer": "from a human"}'}) as r:
                    assert r.status in (200, 302, 303)
            async with aiohttp.ClientSession() as poller:
                async with poller.get(sc.url + f"/v1/handoffs/{handoff_id}") as r:
                    assert r.status == 401  # the id alone is not enough
                async with poller.get(sc.url + f"/v1/handoffs/{handoff_id}",
                                      headers={"x-railwatch-handoff-token": "x" * 43}) as r:
                    assert r.status == 404
                async with poller.get(sc.url + f"/v1/handoffs/{handoff_id}",
                                      headers={"x-railwatch-handoff-token": poll_token}) as r:
                    assert r.status == 200
                    return await r.json()

        polled = asyncio.run(flow())
        assert polled["status"] == "resolved"
        assert polled["answer"] == '{"answer": "from a human"}'
        assert received and received[0]["type"] == "railwatch.handoff.created"
        assert received[0]["handoff"]["id"] == handoff_id
        assert received[0]["handoff"]["trace_id"] == rec.trace_id
        assert "need JSON" not in json.dumps(received[0])  # webhooks carry no conversation text
        rows = backend.admin.query(
            f"SELECT status, resolution FROM {database}.handoffs FINAL WHERE id = {{id:String}}",
            parameters={"id": handoff_id},
        ).result_rows
        assert rows and rows[0][0] == "resolved"
        prefs = backend.admin.query(
            f"SELECT kind, corrected_answer FROM {database}.feedback WHERE kind = 'preference'"
        ).result_rows
        assert prefs == [("preference", '{"answer": "from a human"}')]
    finally:
        loop_thread.run(receiver.cleanup())


def test_feedback_api_on_the_sidecar(start_sidecar: Any, demo_upstream: Any) -> None:
    feedback_token = "feedback-credential-0123456789"
    sc = start_sidecar(demo_upstream.url, feedback={"token": feedback_token})
    client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "rate me"}])
    trace_id = raw.headers["x-railwatch-trace-id"]

    async def post(body: Any, **headers: str) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s:
            async with s.post(sc.url + "/v1/feedback", json=body, headers=headers) as r:
                return r.status, await r.json()

    status, body = asyncio.run(post({"trace_id": trace_id, "thumbs": "up"}))
    assert status == 201 and body["known_trace"] is True
    # a trace id this sidecar never issued: refused, unless the caller holds the credential
    status, body = asyncio.run(post({"trace_id": "f" * 32, "score": 4, "comment": "ok"}))
    assert status == 404 and body["error"]["code"] == "unknown_trace"
    status, body = asyncio.run(post({"trace_id": "f" * 32, "score": 4},
                                    Authorization="Bearer wrong-credential-000000"))
    assert status == 404
    status, body = asyncio.run(post({"trace_id": "f" * 32, "score": 4, "comment": "ok"},
                                    Authorization=f"Bearer {feedback_token}"))
    assert status == 201 and body["known_trace"] is False
    status, body = asyncio.run(post({"trace_id": trace_id, "score": 9}))
    assert status == 400 and body["error"]["param"] == "score"


def test_regeneration_is_recorded(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url)
    client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)
    for _ in range(2):
        client.chat.completions.create(model="m", user="u-1",
                                       messages=[{"role": "user", "content": "same question"}])
    recs = sc.memory.wait_for(lambda rs: len(rs) == 2)
    assert "railwatch.signal.regeneration" not in recs[0].attributes
    assert recs[1].attributes["railwatch.signal.regeneration"] == "1"


def _chat(sc: Any, messages: list[dict[str, str]], **headers: str) -> tuple[int, dict[str, str], Any]:
    async def go() -> tuple[int, dict[str, str], Any]:
        async with aiohttp.ClientSession() as s:
            async with s.post(sc.url + "/v1/chat/completions", headers=headers,
                              json={"model": "m", "messages": messages}) as r:
                return r.status, dict(r.headers), await r.json()

    return asyncio.run(go())


def test_conversation_triggers_hand_off(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "detectors:\n  deny: {kind: denylist, options: {keywords: [forbidden]}}\n"
        "routes:\n  - name: r\n    input: [{detector: deny, action: block}]\n"
    )
    sc = start_sidecar(
        demo_upstream.url,
        guardrails={"enabled": True, "policy": str(policy)},
        handoff={"enabled": True, "max_turns": 3, "max_failures": 2,
                 "review": {"token": TOKEN}},
    )
    # the client asks for a person
    status, headers, body = _chat(sc, [{"role": "user", "content": "hi"}],
                                  **{"x-railwatch-handoff": "true"})
    assert status == 200 and "x-railwatch-handoff-id" in headers
    # a conversation longer than max_turns
    user = [{"role": "user", "content": f"turn {i}"} for i in range(4)]
    status, headers, _ = _chat(sc, user, **{"x-railwatch-conversation-id": "long-one"})
    assert "x-railwatch-handoff-id" in headers
    status, headers, _ = _chat(sc, user[:1], **{"x-railwatch-conversation-id": "short-one"})
    assert status == 200 and "x-railwatch-handoff-id" not in headers
    # repeated guardrail failures in one conversation: blocked first, then handed off
    conv = {"x-railwatch-conversation-id": "failing-one"}
    first, _, _ = _chat(sc, [{"role": "user", "content": "forbidden"}], **conv)
    assert first == 400
    status, headers, _ = _chat(sc, [{"role": "user", "content": "forbidden again"}], **conv)
    assert status == 200 and "x-railwatch-handoff-id" in headers
    recs = sc.memory.wait_for(lambda rs: len(rs) == 5)
    assert [r.decision for r in recs] == ["handoff", "handoff", "pass", "block", "handoff"]
