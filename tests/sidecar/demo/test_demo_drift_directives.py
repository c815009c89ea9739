"""Demo upstream directives and behaviour that script drift (issue 12)."""

from __future__ import annotations


import aiohttp
import pytest
from openai import AsyncOpenAI

from sidecar.demo import DEMO_SYSTEM_FINGERPRINT, DemoUpstream


async def _ask(client: AsyncOpenAI, text: str) -> tuple[str, str | None, int]:
    r = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": text}])
    assert r.usage is not None
    return r.choices[0].message.content or "", r.system_fingerprint, r.usage.completion_tokens


async def test_pad_words_and_fingerprint_directives(client: AsyncOpenAI) -> None:
    plain, fp, tokens = await _ask(client, "hello")
    assert (plain, fp) == ("Echo: hello", DEMO_SYSTEM_FINGERPRINT)
    padded, _, more = await _ask(client, "hello [[demo:pad_words=10]]")
    assert padded.startswith("Echo: hello ") and len(padded.split()) == 12
    assert more == tokens + 10
    _, fp2, _ = await _ask(client, "hello [[demo:fingerprint=fp_other]]")
    assert fp2 == "fp_other"


async def test_behaviour_applies_to_every_later_answer(
    upstream: DemoUpstream, client: AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    url = f"{upstream.url}/_demo/behaviour"
    async with http.put(url, json={"pad_words": 3, "suffix": " (v2)",
                                   "system_fingerprint": "fp_v2",
                                   "served_model": "other-model"}) as r:
        assert r.status == 200
    text, fp, _ = await _ask(client, "hi")
    assert text == "Echo: hi and then more (v2)" and fp == "fp_v2"
    async with http.get(url) as r:
        assert (await r.json())["served_model"] == "other-model"
    for bad in ({"pad_words": -1}, {"pad_words": True}, {"nope": 1}, {"suffix": 3}):
        async with http.put(url, json=bad) as r:
            assert r.status == 400


@pytest.mark.parametrize("stream", [False, True])
async def test_fingerprint_directive_reaches_streams(client: AsyncOpenAI, stream: bool) -> None:
    if not stream:
        _, fp, _ = await _ask(client, "x [[demo:fingerprint=fp_s]]")
        assert fp == "fp_s"
        return
    chunks = await client.chat.completions.create(
        model="m", stream=True, messages=[{"role": "user", "content": "x [[demo:fingerprint=fp_s]]"}])
    fps = {c.system_fingerprint async for c in chunks}
    assert fps == {"fp_s"}
