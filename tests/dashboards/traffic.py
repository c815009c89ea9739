"""Real traffic through a real sidecar, stored in real ClickHouse (chDB), for the
dashboard and rule tests.

One sidecar with the ClickHouse exporter, guardrails on (a policy close to the shipped
one, plus a format rule that retries and then hands off), hand-off and feedback on.
The traffic covers every kind of row the panels read: plain and streamed answers,
input masks, output masks, blocks (input and output), a stream cut, an upstream
error, a retry that ends in a hand-off (then resolved), embeddings, text
completions, and thumbs/score feedback.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai

from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter
from tests.helpers.servers import LoopThread, RunningSidecar, sidecar_settings, start_sidecar_async

TOKEN = "dashboard-token-for-tests-0123456789"
POLICY = """\
version: 1
detectors:
  secrets: {kind: secrets}
  pii: {kind: pii}
  toxicity: {kind: toxicity, options: {backend: auto}}
  format: {kind: format}
routes:
  - name: openai
    match: {paths: ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]}
    input:
      - {detector: secrets, action: block}
      - {detector: pii, action: mask, labels: [EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, US_SSN]}
      - {detector: toxicity, action: flag, threshold: 0.8}
    output:
      - {detector: toxicity, action: block, threshold: 0.8}
      - {detector: pii, action: mask, labels: [CREDIT_CARD, US_SSN]}
      - {detector: format, action: retry}
    retry: {times: 1, corrective: false}
    then: handoff
"""


@dataclass
class Traffic:
    sidecar: RunningSidecar
    database: str
    requests: int
    handoff_ids: list[str]
    metrics_text: str
    demo: Any  # the demo upstream behind the sidecar


DRIFT: dict[str, Any] = {
    "min_window_size": 10, "pod": "dash-test", "max_rows_per_s": 1e6, "schedule_s": 3600,
    "canaries": {"enabled": True, "interval_s": 1,
                 "prompts": [{"id": "capital", "prompt": "What is the capital of France?"}]},
}


async def _behave(url: str, **body: Any) -> None:
    async with aiohttp.ClientSession() as s, s.put(f"{url}/_demo/behaviour", json=body) as r:
        assert r.status == 200, await r.text()


def drive_drift(loop_thread: LoopThread, sc: RunningSidecar, demo: Any) -> None:
    """Two windows of chats, the second with longer answers from a new build, then the
    window job and three canary probes (the last one after the answers changed)."""
    from exporters.clickhouse.drift_store import DriftStore
    from sidecar.drift.analysis import Windows
    from sidecar.drift.service import run_job

    client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)

    def window(tag: str) -> tuple[float, float]:
        start = time.time()
        for i in range(24):
            client.chat.completions.create(model="demo-a", messages=[
                {"role": "system", "content": "You are a support assistant."},
                {"role": "user", "content": f"{tag} question number {i} about my order"}])
        return start, time.time() + 0.001

    ref = window("first")
    loop_thread.run(_behave(demo.url, pad_words=40, system_fingerprint="fp_new_build"))
    cur = window("second")
    for _ in range(2):
        assert sc.runtime.exports.force_flush(20)
    exporter = next(p.exporter for p in sc.runtime.exports.processors
                    if p.exporter.name == "clickhouse")
    store = exporter.store.run(lambda client_, db: DriftStore.for_client(client_, db))
    drift = sc.runtime.drift
    run_job(store, sc.runtime.settings.drift, drift.state, pod="dash-test", store_text=True,
            windows=Windows(ref, cur))
    now = time.time()
    loop_thread.run(drift.service.tick(now))  # the canary baseline
    loop_thread.run(_behave(demo.url, suffix=" Ask me about lasagna instead."))
    loop_thread.run(drift.service.tick(now + 2), timeout=60)  # changed
    loop_thread.run(_behave(demo.url, pad_words=0, suffix="", system_fingerprint=""))


def _chat(client: openai.OpenAI, content: str, model: str = "demo-a", **kw: Any) -> Any:
    try:
        return client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": content}], **kw)
    except openai.APIStatusError as exc:
        return exc


def _drain(stream: Any) -> None:
    try:
        for _ in stream:
            pass
    except openai.APIError:
        pass


def drive(client: openai.OpenAI) -> int:
    """Send the scripted traffic; returns how many proxied requests were made."""
    n = 0
    for i in range(6):
        _chat(client, f"hello number {i}")
        n += 1
    _chat(client, "mail me at jane@example.com please", model="demo-b")  # input mask
    _chat(client, "tell me [[demo:pii]]")  # output mask
    _chat(client, "be rude [[demo:toxic]]")  # output block
    _chat(client, "key " + "AKIA" + "IOSFODNN7EXAMPLE")  # input block (secrets)
    _chat(client, "fail [[demo:status=500]]")  # upstream error
    r = _chat(client, "need JSON [[demo:invalid_json]]",  # retry, then hand-off
              response_format={"type": "json_object"})
    n += 6
    assert not isinstance(r, Exception), r
    for content in ("stream one", "stream two [[demo:pii]]", "then rude [[demo:toxic_midway]]"):
        _drain(client.chat.completions.create(
            model="demo-a", stream=True, messages=[{"role": "user", "content": content}]))
        n += 1
    client.completions.create(model="demo-b", prompt="complete me")
    client.embeddings.create(model="demo-embed", input="embed me")
    return n + 2


async def _post_feedback(url: str, trace_ids: list[str]) -> None:
    async with aiohttp.ClientSession() as s:
        for trace_id, body in zip(trace_ids, ({"thumbs": "up"}, {"thumbs": "down"}, {"score": 4}),
                                  strict=False):
            async with s.post(url + "/v1/feedback", json={"trace_id": trace_id, **body}) as r:
                assert r.status == 201, await r.text()


async def _scrape(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        assert r.status == 200
        return await r.text()


def run_traffic(loop_thread: LoopThread, dsn: str, database: str, tmp: Path) -> Traffic:
    """Start the sidecar, drive the traffic, wait until ClickHouse holds every row."""
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    clickhouse = ClickHouseExporter(ClickHouseConfig(
        dsn=dsn, database=database, data_dir=tmp / "data", spill_dir=tmp / "spill",
        insert_max_age_s=0.05, ttl_text_days=None,
        prices={"demo-a": {"input": 1.0, "output": 2.0}},
    ))
    from sidecar.demo.upstream import start_demo_upstream

    demo = loop_thread.run(start_demo_upstream(host="127.0.0.1", port=0))
    settings = sidecar_settings(
        demo.url,
        guardrails={"enabled": True, "policy": str(policy)},
        handoff={"enabled": True, "review": {"token": TOKEN}},
        drift=DRIFT,
    )
    sc = loop_thread.run(start_sidecar_async(settings, [clickhouse]))
    client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)
    n = drive(client)
    records = sc.memory.wait_for(lambda rs: len(rs) >= n, timeout_s=30)
    handoff_ids = [r.handoff_id for r in records if r.handoff_id]
    assert handoff_ids, "the traffic must hand off"
    handoff = sc.runtime.handoff
    loop_thread.run(handoff.resolve(handoff_ids[0], "edit", '{"answer": "human"}', "alice"))
    loop_thread.run(_post_feedback(sc.url, [r.trace_id for r in records[:3]]))
    sc.runtime.exports.force_flush(10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = clickhouse.store.run(
            lambda c, db: c.query(f"SELECT count() FROM {db}.traces").result_rows[0][0])
        if got >= n:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"ClickHouse holds {got} of {n} traces")
    drive_drift(loop_thread, sc, demo)
    metrics_text = asyncio.run(_scrape(sc.url))
    return Traffic(sc, database, n, handoff_ids, metrics_text, demo)


def stop_traffic(loop_thread: LoopThread, traffic: Traffic) -> None:
    loop_thread.run(traffic.sidecar.runner.cleanup())
    loop_thread.run(traffic.demo.close())
