"""Answers the output detectors must still read: NaN/Infinity, and answers they cannot read.

Python model servers write ``-Infinity`` log-probabilities by default and the official
``openai`` client accepts them; an answer that the sidecar could not parse used to
pass unchecked. Now it is parsed as the client would, checked, and written back with
its non-finite numbers intact; an answer that is not JSON at all follows the route's
``unchecked`` setting (block by default) instead of passing silently.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.helpers.servers import RunningSidecar

CARD = "4111 1111 1111 1111"


def _answer(content: str, stream: bool) -> bytes:
    if stream:
        events = [
            {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": content},
                 "logprobs": {"content": [{"token": "x", "logprob": float("-inf")}]},
                 "finish_reason": None}]},
            {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [
                {"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    doc = {"id": "c1", "object": "chat.completion", "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content},
         "logprobs": {"content": [{"token": "x", "logprob": float("-inf"), "p": float("nan")}]},
         "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}
    return json.dumps(doc).encode()  # json.dumps writes -Infinity and NaN


@pytest.fixture
def nonfinite_upstream(scripted_upstream: Any) -> Any:
    """Answers with ``say`` (a header of the request) inside a body holding -Infinity/NaN;
    ``broken`` answers 200 with a body that is not JSON."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        said = body["messages"][-1]["content"]
        if said == "broken":
            return web.Response(body=b'{"choices": [{"message": ', content_type="application/json")
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(_answer(said, True))
            await resp.write_eof()
            return resp
        return web.Response(body=_answer(said, False), content_type="application/json")

    return scripted_upstream({"/v1/chat/completions": chat})


def _policy(tmp_path: Path, extra: str = "") -> str:
    p = tmp_path / f"policy-{uuid.uuid4().hex[:6]}.yaml"
    p.write_text(
        "detectors:\n  pii: {kind: pii}\n"
        "routes:\n  - name: r\n"
        "    output: [{detector: pii, action: mask, labels: [CREDIT_CARD]}]\n" + extra
    )
    return str(p)


def _client(sc: RunningSidecar) -> openai.OpenAI:
    return openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)


def test_a_nonfinite_unary_answer_is_checked_and_keeps_its_numbers(
    tmp_path: Path, start_sidecar: Any, nonfinite_upstream: str
) -> None:
    sc = start_sidecar(nonfinite_upstream, guardrails={"enabled": True, "policy": _policy(tmp_path)})
    raw = _client(sc).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": f"card {CARD} here"}])
    text = raw.http_response.text
    assert CARD not in text and "<CREDIT_CARD_1>" in text
    assert "-Infinity" in text and "NaN" in text  # written back as the upstream wrote them
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.decision == "mask"


def test_a_nonfinite_stream_is_checked(
    tmp_path: Path, start_sidecar: Any, nonfinite_upstream: str
) -> None:
    sc = start_sidecar(nonfinite_upstream, guardrails={"enabled": True, "policy": _policy(tmp_path)})
    chunks = _client(sc).chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": f"card {CARD} here"}])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert CARD not in text and "<CREDIT_CARD_1>" in text


@pytest.mark.parametrize(("unchecked", "status"), [("block", 400), ("flag", 200)])
def test_an_unparseable_answer_follows_the_route(
    tmp_path: Path, start_sidecar: Any, nonfinite_upstream: str, unchecked: str, status: int
) -> None:
    policy = _policy(tmp_path, f"    retry: {{times: 0}}\n    unchecked: {unchecked}\n")
    sc = start_sidecar(nonfinite_upstream, guardrails={"enabled": True, "policy": policy})
    raw = _client(sc).chat.completions.with_raw_response
    if status == 400:
        with pytest.raises(openai.BadRequestError) as err:
            raw.create(model="m", messages=[{"role": "user", "content": "broken"}])
        assert err.value.code == "content_blocked"
    else:
        resp = raw.create
        try:
            resp(model="m", messages=[{"role": "user", "content": "broken"}])
        except openai.APIError:
            pass  # the client cannot parse it either; what matters is that it was let through flagged
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.status == status
    assert rec.attributes.get("railwatch.output.unchecked") == "unparsed"
