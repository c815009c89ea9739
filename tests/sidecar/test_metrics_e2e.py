"""GET /metrics on a running sidecar: metric names from semconv, bounded labels, live gauges."""

from __future__ import annotations

from typing import Any

import openai

from sidecar import semconv
from tests.helpers.metrics import scrape


def test_metrics_after_traffic(start_sidecar: Any, demo_upstream: Any) -> None:
    sc = start_sidecar(demo_upstream.url, guardrails={"enabled": True})
    client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)
    client.chat.completions.create(model="demo-model", messages=[{"role": "user", "content": "mail a@example.com"}])
    try:
        client.chat.completions.create(model="demo-model", messages=[{"role": "user", "content": "[[demo:toxic]]"}])
    except openai.BadRequestError:
        pass
    sc.memory.wait_for(lambda rs: len(rs) == 2)
    sc.runtime.intake.force_flush(5)
    fams = scrape(sc.url)
    requests = fams[semconv.METRIC_REQUESTS]
    samples = {(s.labels["route"], s.labels["status"], s.labels["decision"]): s.value
               for s in requests.samples if s.name.endswith("_total")}
    assert samples[("chat", "200", "mask")] == 1
    assert samples[("chat", "400", "block")] == 1
    triggers = [s for s in fams[semconv.METRIC_GUARDRAIL_TRIGGERS].samples if s.name.endswith("_total")]
    assert {(s.labels["detector"], s.labels["action"]) for s in triggers} >= {("pii", "mask"), ("toxicity", "block")}
    overhead = fams[semconv.METRIC_OVERHEAD]
    bounds = {s.labels["le"] for s in overhead.samples if s.name.endswith("_bucket")}
    assert "0.0001" in bounds or "0.0001" in {b.rstrip("0") for b in bounds}  # sub-ms resolution
    assert fams[semconv.METRIC_IN_FLIGHT].samples[0].value == 0
    info = list(fams[semconv.METRIC_DETECTOR_INFO].samples)
    assert any(s.labels.get("detector") == "toxicity" and s.labels.get("backend") == "profanity" for s in info)
    text_labels = {v for f in fams.values() for s in f.samples for v in s.labels.values()}
    assert not any("a@example.com" in v or "demo:toxic" in v for v in text_labels)
    assert not any(len(v) == 32 and all(c in "0123456789abcdef" for c in v) for v in text_labels)
