"""Guardrails end to end: the official openai client -> sidecar (policy on) -> demo upstream."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from sidecar.record import TraceRecord
from tests.helpers.servers import RunningSidecar, seen

EMAIL = "alice.smith@example.org"


def _guarded(start_sidecar: Any, upstream: str, policy: str | None = None, **sections: Any) -> RunningSidecar:
    return start_sidecar(upstream, guardrails={"enabled": True, "policy": policy}, **sections)


def _client(sc: RunningSidecar) -> openai.OpenAI:
    return openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)


def _one(sc: RunningSidecar) -> TraceRecord:
    recs = sc.memory.wait_for(lambda rs: len(rs) >= 1)
    assert len(recs) == 1
    return recs[0]


def test_email_is_masked_upstream_and_restored_for_the_client(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _guarded(start_sidecar, demo_upstream.url)
    tag = "mask-unary-7f3a"
    reply = _client(sc).chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"{tag} write to {EMAIL} and {EMAIL}"}]
    )
    assert reply.choices[0].message.content == f"Echo: {tag} write to {EMAIL} and {EMAIL}"
    got = seen(demo_upstream, tag)
    assert len(got) == 1
    sent = got[0]["body"]["messages"][0]["content"]
    assert EMAIL not in sent
    assert sent == f"{tag} write to <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_1>"
    rec = _one(sc)
    assert rec.decision == "mask"
    assert [(f.stage, f.detector, f.label, f.action) for f in rec.findings] == [
        ("input", "pii", "EMAIL_ADDRESS", "mask")
    ] * 2
    assert rec.decisions[0].stage == "input" and rec.decisions[0].action == "mask"


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7])
def test_placeholder_split_across_stream_chunks_is_restored(start_sidecar: Any, demo_upstream: Any, chunk: int) -> None:
    sc = _guarded(start_sidecar, demo_upstream.url)
    stream = _client(sc).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": f"[[demo:chunk={chunk}]] mail {EMAIL} now"}],
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == f"Echo: mail {EMAIL} now"
    assert not any("<EMAIL" in p for p in pieces)


def test_toxic_output_is_blocked(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _guarded(start_sidecar, demo_upstream.url)
    with pytest.raises(openai.BadRequestError) as info:
        _client(sc).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "be rude [[demo:toxic]]"}]
        )
    err = info.value.body
    assert err["code"] == "content_blocked"  # type: ignore[index]
    assert "toxicity:" in err["message"]  # type: ignore[index]
    assert "idiot" not in err["message"]  # type: ignore[index]
    rec = _one(sc)
    assert rec.status == 400 and rec.decision == "block" and rec.error_type == "content_blocked"
    out = [f for f in rec.findings if f.stage == "output"]
    assert out and all(f.detector == "toxicity" and f.action == "block" for f in out)


def test_secret_in_prompt_is_blocked_before_the_upstream(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _guarded(start_sidecar, demo_upstream.url)
    key = "AKIA" + "IOSFODNN7EXAMPLE"  # AWS documentation example key id
    tag = "secret-block-19c"
    with pytest.raises(openai.BadRequestError):
        _client(sc).chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"{tag} my key is {key}"}]
        )
    assert seen(demo_upstream, tag) == []
    rec = _one(sc)
    assert rec.upstream_attempts == 0 and rec.decision == "block"
    assert rec.findings[0].detector == "secrets"


def test_output_pii_leak_is_masked(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _guarded(start_sidecar, demo_upstream.url)
    reply = _client(sc).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "leak [[demo:pii]]"}]
    )
    text = reply.choices[0].message.content or ""
    assert "4111 1111 1111 1111" not in text and "<CREDIT_CARD_1>" in text
    assert "jane.doe@example.com" in text  # e-mail leaks are not masked by the default policy
    # 123-45-6789 is an SSN the SSA never issues (as presidio, the detector rejects it)
    assert "123-45-6789" in text
    rec = _one(sc)
    assert {(f.label, f.action) for f in rec.findings if f.stage == "output"} == {("CREDIT_CARD", "mask")}
    # the user's own SSN is masked on the way in, so the model's echo of it is no leak
    ssn = _client(sc).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "[[demo:say=SSN on file: 536-22-8471.]]"}]
    )
    assert ssn.choices[0].message.content == "SSN on file: 536-22-8471."
    assert seen(demo_upstream, "SSN on file: <US_SSN_1>.")


def test_refusal_mode_and_policy_file(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "detectors:\n  deny: {kind: denylist, options: {keywords: [forbidden-word]}}\n"
        "routes:\n  - name: strict\n    match: {models: ['strict-*']}\n"
        "    output: [{detector: deny, action: block}]\n"
        "    block: {mode: refusal, message: 'I cannot help with that.'}\n"
    )
    sc = _guarded(start_sidecar, demo_upstream.url, str(policy))
    client = _client(sc)
    refused = client.chat.completions.create(
        model="strict-1", messages=[{"role": "user", "content": "say forbidden-word"}]
    )
    assert refused.choices[0].message.content == "I cannot help with that."
    assert refused.choices[0].finish_reason == "content_filter"
    # the route does not match this model: nothing checked
    ok = client.chat.completions.create(
        model="lenient", messages=[{"role": "user", "content": "say forbidden-word"}]
    )
    assert ok.choices[0].message.content == "Echo: say forbidden-word"


def test_fail_closed_detector_blocks(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        # inline_chars: 0 sends every batch to a thread, where a timeout can fire (a small
        # batch scored on the loop takes under a millisecond and cannot be interrupted)
        "detectors:\n  tox: {kind: toxicity, options: {backend: profanity, inline_chars: 0},"
        " run: {timeout_s: 0.000000001, on_error: fail_closed}}\n"
        "  tox_open: {kind: toxicity, options: {backend: profanity, inline_chars: 0},"
        " run: {timeout_s: 0.000000001, on_error: fail_open}}\n"
        "routes:\n  - name: closed\n    match: {models: [closed]}\n    input: [{detector: tox, action: flag}]\n"
        "  - name: open\n    match: {models: [open]}\n    input: [{detector: tox_open, action: flag}]\n"
    )
    sc = _guarded(start_sidecar, demo_upstream.url, str(policy))
    client = _client(sc)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="closed", messages=[{"role": "user", "content": "hi"}])
    ok = client.chat.completions.create(model="open", messages=[{"role": "user", "content": "hi"}])
    assert ok.choices[0].message.content == "Echo: hi"
    recs = sc.memory.wait_for(lambda rs: len(rs) == 2)
    assert recs[0].findings[0].label == "detector_error" and recs[0].decision == "block"
    assert recs[1].decision == "pass"
    assert recs[1].attributes["railwatch.detector.tox_open.error"] == "timeout"


def test_masked_privacy_keeps_no_raw_pii_in_traces(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _guarded(start_sidecar, demo_upstream.url, privacy={"capture": "masked"})
    _client(sc).chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"mail {EMAIL} from 10.0.0.1"}]
    )
    rec = _one(sc)
    assert rec.text_masked
    assert EMAIL not in (rec.prompt_text or "") and EMAIL not in (rec.output_text or "")
    assert "<EMAIL_ADDRESS_1>" in (rec.prompt_text or "")
    assert "<IP_ADDRESS_1>" in (rec.prompt_text or "")  # privacy masks every PII type


def test_guardrails_check_endpoint(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _guarded(start_sidecar, demo_upstream.url)

    async def post(body: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s:
            async with s.post(sc.url + "/v1/guardrails/check", json=body) as r:
                return r.status, await r.json()

    status, body = asyncio.run(post({"text": f"reach me at {EMAIL}", "stage": "input"}))
    assert status == 200
    assert body["decision"] == {"action": "mask", "reasons": ["pii:EMAIL_ADDRESS"]}
    pii = [f for f in body["findings"] if f["detector"] == "pii"]
    assert pii == [{"detector": "pii", "label": "EMAIL_ADDRESS", "score": pii[0]["score"],
                    "start": 12, "end": 12 + len(EMAIL), "action": "mask",
                    "metadata": pii[0]["metadata"]}]
    assert EMAIL not in str(pii[0]["metadata"])  # text-free
    assert body["masked_text"] == "reach me at <EMAIL_ADDRESS_1>"
    status, body = asyncio.run(post({"text": 5}))
    assert status == 400 and body["error"]["param"] == "text"
    status, body = asyncio.run(post({"text": "x", "route": "nope"}))
    assert status == 400 and body["error"]["code"] == "unknown_route"


def test_cli_check_json_and_table() -> None:
    cmd = [sys.executable, "-m", "sidecar.cli", "check", "--json", f"write to {EMAIL}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert body["decision"]["action"] == "mask"
    assert body["masked_text"] == "write to <EMAIL_ADDRESS_1>"
    res = subprocess.run([sys.executable, "-m", "sidecar.cli", "check", "-"], input="all fine here",
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "decision: pass" in res.stdout


@pytest.mark.parametrize("path", ["//v1/chat/completions", "/v1/chat/completions/",
                                  "/V1/Chat/Completions", "/v1//chat/completions"])
def test_path_variants_do_not_bypass_the_guardrails(start_sidecar: Any, demo_upstream: Any, path: str) -> None:
    sc = _guarded(start_sidecar, demo_upstream.url)
    key = "AKIA" + "IOSFODNN7EXAMPLE"

    async def go() -> int:
        async with aiohttp.ClientSession() as s:
            async with s.post(sc.url + path, json={
                    "model": "m", "messages": [{"role": "user", "content": f"key {key}"}]}) as r:
                return r.status

    assert asyncio.run(go()) == 400
    rec = _one(sc)
    assert rec.route == "chat" and rec.decision == "block" and rec.upstream_attempts == 0


def test_literal_placeholders_in_other_messages_are_never_issued(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _guarded(start_sidecar, demo_upstream.url)
    tag = "collide-3b1"
    _client(sc).chat.completions.create(model="m", messages=[
        {"role": "user", "content": f"{tag} my mail is {EMAIL}."},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "what does <EMAIL_ADDRESS_1> mean?"},
    ])
    sent = seen(demo_upstream, tag)[0]["body"]["messages"]
    assert "<EMAIL_ADDRESS_1>" not in sent[0]["content"]
    assert "<EMAIL_ADDRESS_2>" in sent[0]["content"]
