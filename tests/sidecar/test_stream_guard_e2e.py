"""Streaming guardrails end to end: official openai client -> sidecar -> demo upstream."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import openai

from sidecar.demo import _script as demo

POLICY = """
detectors:
  toxicity: {kind: toxicity, options: {backend: profanity}}
  pii: {kind: pii}
  format: {kind: format}
routes:
  - name: buffered-json
    match: {models: [json-*]}
    output: [{detector: format, action: retry}]
    retry: {times: 1, corrective: false}
    stream: {mode: buffered}
  - name: chat
    input: [{detector: pii, action: mask, labels: [EMAIL_ADDRESS]}]
    output:
      - {detector: toxicity, action: block, threshold: 0.8}
      - {detector: pii, action: mask, labels: [CREDIT_CARD]}
    stream: {mode: windowed, window_chars: 32, overlap_chars: 16}
"""


def _sidecar(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> Any:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY)
    return start_sidecar(demo_upstream.url, guardrails={"enabled": True, "policy": str(p)})


def _stream(sc: Any, content: str, model: str = "m", **kw: Any) -> list[Any]:
    client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)
    return list(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], stream=True, **kw))


def test_stream_turning_toxic_is_cut_with_content_filter(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _sidecar(tmp_path, start_sidecar, demo_upstream)
    # paced like a model, so the benign windows pass (and leave) before the insult arrives
    chunks = _stream(sc, "tell me [[demo:toxic_midway]] [[demo:chunk=4]] [[demo:pace_ms=5]]")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Echo: tell me")  # benign windows were released as they passed
    assert demo.BENIGN_FILLER[:40] in text
    for word in ("idiot", "moron", "stupid", "hate you"):
        assert word not in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["content_filter"]
    events = [c.model_extra.get("railwatch") for c in chunks if c.model_extra and c.model_extra.get("railwatch")]
    assert events and events[0]["action"] == "block"
    assert any(r.startswith("toxicity:") for r in events[0]["reasons"])
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.status == 200 and rec.decision == "block" and rec.stream
    assert rec.attributes["railwatch.stream.cut"] == "1"
    assert any(f.stage == "output" and f.detector == "toxicity" and f.action == "block" for f in rec.findings)


def test_pii_split_across_chunks_is_masked_in_the_stream(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _sidecar(tmp_path, start_sidecar, demo_upstream)
    chunks = _stream(sc, "details please [[demo:pii]] [[demo:chunk=3]]")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "4111 1111 1111 1111" not in text and "<CREDIT_CARD_1>" in text
    assert "jane.doe@example.com" in text  # only cards are masked on output by this policy
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_usage_is_known_without_showing_the_client_an_extra_chunk(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _sidecar(tmp_path, start_sidecar, demo_upstream)
    chunks = _stream(sc, "count my tokens")
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)  # no usage-only chunk the client did not ask for
    asked = _stream(sc, "count my tokens again", stream_options={"include_usage": True})
    assert asked[-1].usage is not None and not asked[-1].choices
    recs = sc.memory.wait_for(lambda rs: len(rs) == 2)
    assert recs[0].usage_source == "upstream" and recs[0].completion_tokens
    assert recs[0].ttft_ms is not None and recs[0].ttft_ms <= recs[0].total_ms


def test_buffered_stream_is_retried_before_the_first_byte(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _sidecar(tmp_path, start_sidecar, demo_upstream)
    tag = uuid.uuid4().hex[:8]
    chunks = _stream(sc, f"{tag} [[demo:invalid_json_times=1]]", model="json-model",
                     response_format={"type": "json_object"})
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text)["ok"] is True
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.retries == 1
    assert [(a.kind, a.decision) for a in rec.attempts] == [("primary", "retry"), ("retry", "pass")]


def test_input_placeholders_restored_in_windowed_stream(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _sidecar(tmp_path, start_sidecar, demo_upstream)
    chunks = _stream(sc, "write to bob.jones@example.net soon [[demo:chunk=2]]")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: write to bob.jones@example.net soon"


def test_stream_fallback_verdict_without_targets_applies_then(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text(
        "detectors:\n  deny: {kind: denylist, options: {keywords: [forbidden]}}\n"
        "routes:\n  - name: r\n    output: [{detector: deny, action: fallback}]\n"
        "    retry: {times: 2}\n    then: block\n    stream: {mode: buffered}\n"
    )
    sc = start_sidecar(demo_upstream.url, guardrails={"enabled": True, "policy": str(p)})
    client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)
    try:
        list(client.chat.completions.create(model="m", stream=True,
                                            messages=[{"role": "user", "content": "say forbidden"}]))
        raise AssertionError("expected the block response")
    except openai.BadRequestError as exc:
        assert exc.body["code"] == "content_blocked"  # type: ignore[index]
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.decision == "block" and len(rec.attempts) == 1  # retries skipped
    assert rec.finish_reasons == ()  # the discarded attempt left nothing on the trace


def test_stream_broken_before_the_first_byte_is_retried(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text(
        "detectors:\n  deny: {kind: denylist, options: {keywords: [forbidden]}}\n"
        "routes:\n  - name: r\n    output: [{detector: deny, action: block}]\n"
        "    retry: {times: 1}\n    stream: {mode: buffered}\n"
    )
    sc = start_sidecar(demo_upstream.url, guardrails={"enabled": True, "policy": str(p)})
    tag = uuid.uuid4().hex[:8]
    chunks = _stream(sc, f"{tag} [[demo:fail_times=1]] [[demo:status=500]]")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Echo: {tag}"
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert [(a.kind, a.status) for a in rec.attempts] == [("primary", 500), ("retry", 200)]
    assert rec.finish_reasons == ("stop",)


def test_stream_broken_before_any_release_is_an_upstream_failure(tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    p = tmp_path / "policy.yaml"
    p.write_text(
        "detectors:\n  deny: {kind: denylist, options: {keywords: [forbidden]}}\n"
        "routes:\n  - name: r\n    output: [{detector: deny, action: block}]\n"
        "    retry: {times: 1}\n    stream: {mode: buffered}\n"
    )
    sc = start_sidecar(demo_upstream.url, guardrails={"enabled": True, "policy": str(p)})
    client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)
    try:
        list(client.chat.completions.create(model="m", stream=True, messages=[
            {"role": "user", "content": "a long enough answer to break [[demo:break]]"}]))
        raise AssertionError("expected an error")
    except openai.APIStatusError as exc:
        assert exc.status_code == 502 and exc.body["code"] == "upstream_stream_broken"  # type: ignore[index]
    rec = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert [(a.kind, a.error) for a in rec.attempts] == [
        ("primary", "upstream_stream_broken"), ("retry", "upstream_stream_broken")]
