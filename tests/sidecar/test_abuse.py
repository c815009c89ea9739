"""Abuse on a running sidecar: rate limits, feedback floods, junk model names (issue 9)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import openai
import pytest

from sidecar import semconv
from sidecar.demo.upstream import DEMO_MODEL_ID
from sidecar.ratelimit import BucketSpec, RateLimiter, RateLimitSettings, TokenBuckets
from tests.helpers.metrics import sample, scrape

API_KEY = "sk-live-abuse-test-key-0123456789"


async def _chats(url: str, n: int, **headers: str) -> list[tuple[int, dict[str, str], Any]]:
    out = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.post(url + "/v1/chat/completions", headers=headers, json={
                    "model": "m", "messages": [{"role": "user", "content": "hi"}]}) as r:
                out.append((r.status, dict(r.headers), await r.json()))
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_and_is_bounded() -> None:
    clock = Clock()
    buckets = TokenBuckets(max_keys=100, clock=clock)
    spec = BucketSpec(rate_per_s=2, burst=3)
    for _ in range(3):
        assert buckets.wait_s(7, spec) == 0.0
        buckets.take(7)
    assert buckets.wait_s(7, spec) == pytest.approx(0.5)
    clock.now += 0.5
    assert buckets.wait_s(7, spec) == 0.0
    for i in range(10_000):
        buckets.wait_s(1000 + i, spec)
    assert len(buckets) == 100 and buckets.evicted >= 9_900


def test_a_refused_request_charges_no_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimitSettings(
        enabled=True, per_client=BucketSpec(rate_per_s=1, burst=10),
        per_api_key=BucketSpec(rate_per_s=1, burst=1)), clock=clock)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    assert limiter.check("chat", client="c", headers=headers, tenant=None) is None
    refused = limiter.check("chat", client="c", headers=headers, tenant=None)
    assert refused is not None and refused.dimension == "api_key"
    # the client bucket paid only for the admitted request: 9 left
    for _ in range(9):
        assert limiter.check("chat", client="c", headers={}, tenant=None) is None
    assert limiter.check("chat", client="c", headers={}, tenant=None) is not None
    assert API_KEY not in repr(limiter.buckets._buckets)


def test_rate_limits_answer_429_in_the_openai_shape(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url, rate_limits={
        "enabled": True,
        "per_api_key": {"rate_per_s": 0.01, "burst": 2},
        "per_tenant": {"rate_per_s": 0.01, "burst": 3},
    })
    auth = {"Authorization": f"Bearer {API_KEY}"}
    answers = asyncio.run(_chats(sc.url, 3, **auth))
    assert [status for status, _, _ in answers] == [200, 200, 429]
    _, headers, body = answers[2]
    assert body["error"]["type"] == "requests" and body["error"]["code"] == "rate_limit_exceeded"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert int(headers["Retry-After"]) >= 1 and headers[semconv.HEADER_TRACE_ID]
    # another key has its own bucket; the tenant bucket is shared across keys
    first = {"Authorization": "Bearer sk-other-key", semconv.HEADER_TENANT: "acme"}
    second = {"Authorization": "Bearer sk-third-key", semconv.HEADER_TENANT: "acme"}
    assert [s for s, _, _ in asyncio.run(_chats(sc.url, 2, **first))] == [200, 200]
    assert [s for s, _, _ in asyncio.run(_chats(sc.url, 2, **second))] == [200, 429]
    client = openai.OpenAI(base_url=sc.base_url, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    records = sc.memory.wait_for(lambda rs: len(rs) == 8)
    limited = [r for r in records if r.status == 429]
    assert len(limited) == 3
    assert {r.attributes[semconv.RAILWATCH_RATE_LIMIT_DIMENSION] for r in limited} == {
        "api_key", "tenant"}
    assert all(r.error_type == "rate_limit_exceeded" for r in limited)
    sc.runtime.intake.force_flush(5)
    fams = scrape(sc.url)
    assert sample(fams, semconv.METRIC_RATE_LIMITED, dimension="api_key") == 2
    assert sample(fams, semconv.METRIC_RATE_LIMITED, dimension="tenant") == 1
    assert sample(fams, semconv.METRIC_RATE_LIMIT_KEYS) == 4  # three keys, one tenant
    scraped = str([s for f in fams.values() for s in f.samples])
    assert API_KEY not in scraped and "sk-other-key" not in scraped
    assert all(API_KEY not in str(r.attributes) for r in records)


def test_route_overrides_and_per_client(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url, rate_limits={
        "enabled": True, "per_client": {"rate_per_s": 100, "burst": 100},
        "routes": {"embeddings": {"per_client": {"rate_per_s": 0.01, "burst": 1}}},
    })

    async def embed() -> list[int]:
        async with aiohttp.ClientSession() as s:
            statuses = []
            for _ in range(2):
                async with s.post(sc.url + "/v1/embeddings",
                                  json={"model": "m", "input": "hello"}) as r:
                    statuses.append(r.status)
            return statuses

    assert asyncio.run(embed()) == [200, 429]
    assert [s for s, _, _ in asyncio.run(_chats(sc.url, 3))] == [200, 200, 200]


def test_feedback_for_random_trace_ids_is_refused_then_limited(
    start_sidecar: Any, demo_upstream: Any
) -> None:
    sc = start_sidecar(demo_upstream.url, rate_limits={"public": {"rate_per_s": 1, "burst": 20}})

    async def flood() -> list[int]:
        async with aiohttp.ClientSession() as s:
            statuses = []
            for _ in range(60):
                async with s.post(sc.url + "/v1/feedback", json={
                        "trace_id": secrets.token_hex(16), "thumbs": "down"}) as r:
                    statuses.append(r.status)
                    if r.status == 429:
                        assert int(r.headers["Retry-After"]) >= 1
            return statuses

    statuses = asyncio.run(flood())
    assert set(statuses) <= {404, 429} and statuses.count(429) >= 35
    assert statuses[:20] == [404] * 20
    assert sc.runtime.feedback_store.feedback == {}  # nothing stored
    fams = scrape(sc.url)
    assert sample(fams, semconv.METRIC_FEEDBACK_REJECTED, reason="unknown_trace") == 20
    assert sample(fams, semconv.METRIC_FEEDBACK_REJECTED, reason="rate_limited") >= 35


def test_junk_model_names_do_not_take_the_label_slots(start_sidecar: Any, demo_upstream: Any
                                                      ) -> None:
    sc = start_sidecar(demo_upstream.url, metrics={"max_models": 5})

    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            for i in range(50):
                async with s.post(sc.url + "/v1/chat/completions", json={
                        "model": f"junk-model-{i}",
                        "messages": [{"role": "user", "content": "hi"}]}) as r:
                    assert r.status == 200

    asyncio.run(go())
    sc.memory.wait_for(lambda rs: len(rs) == 50)
    sc.runtime.intake.force_flush(5)
    fams = scrape(sc.url)
    models = {s.labels["model"] for s in fams[semconv.METRIC_REQUESTS].samples}
    assert len(models) == 1 and not any("junk" in m for m in models)  # what was served
    assert models <= {DEMO_MODEL_ID, DEMO_MODEL_ID + "-scripted"}
    for _ in range(100):  # the upstream's /v1/models is learned in the background
        if DEMO_MODEL_ID in sc.runtime.metrics._model._seen and sc.runtime.metrics._model._reserved:
            break
        asyncio.run(asyncio.sleep(0.05))
    assert sc.runtime.metrics._model._reserved == 1


def test_the_handoff_poll_is_rate_limited(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url, rate_limits={"public": {"rate_per_s": 0.01, "burst": 2}},
                       handoff={"enabled": True, "review": {"token": "review-token-0123456789"}})

    async def poll() -> list[int]:
        async with aiohttp.ClientSession() as s:
            statuses = []
            for _ in range(4):
                handoff_id = secrets.token_hex(16)
                async with s.get(f"{sc.url}/v1/handoffs/{handoff_id}",
                                 headers={"x-railwatch-handoff-token": "guess"}) as r:
                    statuses.append(r.status)
            return statuses

    assert asyncio.run(poll()) == [404, 404, 429, 429]
