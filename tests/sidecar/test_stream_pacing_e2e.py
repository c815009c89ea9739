"""Streams that still stream: a model-paced upstream, direct vs through the guard.

The scripted upstream (tests/helpers/paced.py) sends a token every 10-20 ms, often
mid-word, and ignores ``include_usage`` (as llama.cpp's server does). Each test
measures the direct stream and the guarded one in its own run and compares their
structure; the only timing bound is the one the README documents, computed from
the upstream's own pacing: a client-side gap is at most ``max_hold_ms`` plus the
upstream's largest gap (plus one check, allowed for with a margin here).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import paced

POLICY = """
detectors:
  toxicity: {kind: toxicity, options: {backend: profanity}}
  pii: {kind: pii}
  format: {kind: format}
routes:
  - name: json-retry
    match: {models: ["*json*"]}
    output:
      - {detector: toxicity, action: block, threshold: 0.8}
      - {detector: format, action: retry}
    retry: {times: 2, corrective: false}
  - name: refusal
    match: {models: [toxic-first]}
    output: [{detector: toxicity, action: block, threshold: 0.8}]
    block: {mode: refusal}
  - name: chat
    output:
      - {detector: toxicity, action: block, threshold: 0.8}
      - {detector: pii, action: mask, labels: [CREDIT_CARD, US_SSN, IBAN_CODE]}
      - {detector: format, action: flag}
"""
HOLD_MS = 150.0  # the shipped max_hold_ms
CHECK_MARGIN_S = 0.15  # one check plus scheduling noise on a shared 2-core machine


@pytest.fixture
def paced_upstream(scripted_upstream: Callable[..., str]) -> str:
    return scripted_upstream({"/v1/chat/completions": paced.completions})


@pytest.fixture
def guarded(tmp_path: Path, start_sidecar: Any, paced_upstream: str) -> Any:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY)
    return start_sidecar(paced_upstream, guardrails={"enabled": True, "policy": str(p)},
                         upstream={"read_timeout_s": 0.5})


def _client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)


def _stream(base_url: str, model: str = "paced", **kw: Any) -> Any:
    return _client(base_url).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Tell me about rivers."}],
        stream=True, **kw)


def test_guarded_stream_keeps_the_upstream_chunks_and_pace(guarded: Any, paced_upstream: str) -> None:
    direct, t_direct = paced.timed_stream(_stream(paced_upstream + "/v1"))
    through, t_through = paced.timed_stream(_stream(guarded.base_url))
    assert direct == paced.tokens(paced.ANSWER)  # the scripted pieces, mid-word cuts included
    assert through == direct  # same chunks, none re-cut or merged
    bound = HOLD_MS / 1000 + paced.largest_gap(t_direct) + CHECK_MARGIN_S
    assert paced.largest_gap(t_through) <= bound, (paced.largest_gap(t_through), bound)
    rec = guarded.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.status == 200 and rec.decision in ("pass", "flag")
    assert rec.output_text == paced.ANSWER
    assert rec.ttft_ms is not None and rec.ttft_ms > 0 and rec.tpot_ms is not None and rec.tpot_ms > 0
    # llama.cpp-like: no usage chunk; both token counts are the sidecar's estimate
    assert rec.usage_source == "counted"
    assert rec.prompt_tokens is not None and rec.prompt_tokens > 0
    assert rec.completion_tokens == len(direct)


def test_streamed_json_is_judged_whole_and_passes(guarded: Any) -> None:
    through, _ = paced.timed_stream(
        _stream(guarded.base_url, "json", response_format={"type": "json_object"}))
    assert "".join(through) == paced.JSON_ANSWER and len(through) > 5
    rec = guarded.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.decision == "pass" and rec.retries == 0 and len(rec.attempts) == 1
    assert not [f for f in rec.findings if f.detector == "format"]


def test_broken_streamed_json_after_release_can_only_be_cut(guarded: Any) -> None:
    chunks = list(_stream(guarded.base_url, "broken-json", response_format={"type": "json_object"}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == paced.JSON_ANSWER[:-1]  # released as it came; only the end was held
    assert finishes == ["content_filter"]
    rec = guarded.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.attributes["railwatch.stream.cut"] == "1"
    assert rec.attributes["railwatch.stream.cut_action"] == "retry"
    assert any(f.detector == "format" and f.label == "json_invalid" for f in rec.findings)


def test_refusal_mode_answers_a_blocked_stream_with_a_streamed_refusal(guarded: Any) -> None:
    chunks = list(_stream(guarded.base_url, "toxic-first"))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The answer was withheld by the content policy."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] \
        == ["content_filter"]
    rec = guarded.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.status == 200 and rec.decision == "block"


def test_truncated_stream_is_marked_and_has_no_ttft(guarded: Any) -> None:
    assert list(_stream(guarded.base_url, "truncated"))  # the role chunk
    rec = guarded.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.status == 200 and rec.error_type == "upstream_truncated"
    assert rec.attributes["railwatch.stream.truncated"] == "1"
    assert rec.ttft_ms is None and rec.tpot_ms is None and not rec.finish_reasons


def test_stall_before_the_first_byte_is_a_504(guarded: Any) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        list(_stream(guarded.base_url, "stall"))
    assert err.value.status_code == 504
    assert err.value.body["code"] == "upstream_timeout"  # type: ignore[index]


def test_abandoned_stream_records_what_the_client_got(guarded: Any) -> None:
    got: list[str] = []
    body = {"model": "paced", "stream": True,
            "messages": [{"role": "user", "content": "Tell me about rivers."}]}
    with httpx.stream("POST", guarded.base_url + "/chat/completions", json=body) as resp:
        for line in resp.iter_lines():
            if '"content"' in line and '"content": ""' not in line:
                got.append(line)
            if len(got) >= 12:
                break  # the client leaves mid-answer
    rec = guarded.memory.wait_for(lambda rs: len(rs) == 1)[0]
    assert rec.client_disconnected
    assert rec.output_text and paced.ANSWER.startswith(rec.output_text)
    assert len(rec.output_text) < len(paced.ANSWER)
    assert rec.completion_tokens is not None and rec.completion_tokens >= 12
    assert rec.completion_tokens < len(paced.tokens(paced.ANSWER))
