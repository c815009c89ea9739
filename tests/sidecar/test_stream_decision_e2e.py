"""A guarded stream's recorded decision is the delivered attempt's, as for unary calls.

Official ``openai`` client -> sidecar -> a real upstream on loopback: the demo server
(a JSON answer broken the first time) or the paced scripted model of
``tests/helpers/paced.py`` (``toxic-first`` insults in its first tokens; any other model
name answers :data:`~tests.helpers.paced.ANSWER`, whose word "levees" comes late in
the stream, well after its first windows went out). A discarded attempt's verdict
(``retry``, ``fallback``) is on its attempt record, never the request's decision; the
delivered attempt's windows count up to the end of its stream; a cut stays ``block``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from sidecar import semconv
from sidecar.record import TraceRecord
from tests.helpers import paced

DETECTORS = """
detectors:
  toxicity: {kind: toxicity, options: {backend: profanity}}
  deny: {kind: denylist, options: {keywords: [levees]}}
  format: {kind: format}
routes:
"""
WINDOWED = "    stream: {mode: windowed, window_chars: 32, overlap_chars: 8}\n"


@pytest.fixture
def paced_upstream(scripted_upstream: Callable[..., str]) -> str:
    return scripted_upstream({"/v1/chat/completions": paced.completions})


def _sidecar(tmp_path: Path, start_sidecar: Any, upstream: str, route: str) -> Any:
    p = tmp_path / "policy.yaml"
    p.write_text(DETECTORS + route)
    return start_sidecar(upstream, guardrails={"enabled": True, "policy": str(p)})


def _stream(sc: Any, model: str, content: str = "tell me about rivers", **kw: Any) -> str:
    client = openai.OpenAI(base_url=sc.base_url, api_key="x", max_retries=0)
    chunks = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], stream=True, **kw)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _record(sc: Any) -> TraceRecord:
    rec: TraceRecord = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    return rec


def test_a_retried_stream_that_then_passes_is_recorded_pass(
        tmp_path: Path, start_sidecar: Any, demo_upstream: Any) -> None:
    sc = _sidecar(tmp_path, start_sidecar, demo_upstream.url,
                  "  - name: json\n    output: [{detector: format, action: retry}]\n"
                  "    retry: {times: 1, corrective: false}\n    stream: {mode: buffered}\n")
    text = _stream(sc, "json-model", "give json [[demo:invalid_json_times=1]]",
                   response_format={"type": "json_object"})
    assert '"ok": true' in text.replace('":true', '": true')
    rec = _record(sc)
    assert [(a.kind, a.decision) for a in rec.attempts] == [("primary", "retry"), ("retry", "pass")]
    assert [(d.stage, d.action) for d in rec.decisions] == [("output", "retry"), ("output", "pass")]
    assert rec.status == 200 and rec.decision == "pass"


def test_a_fallback_that_passes_is_recorded_pass(
        tmp_path: Path, start_sidecar: Any, paced_upstream: str) -> None:
    sc = _sidecar(tmp_path, start_sidecar, paced_upstream,
                  "  - name: r\n    output: [{detector: toxicity, action: fallback, threshold: 0.8}]\n"
                  "    fallback: [{model: paced}]\n" + WINDOWED)
    assert _stream(sc, "toxic-first") == paced.ANSWER
    rec = _record(sc)
    assert [(a.kind, a.decision) for a in rec.attempts] == [("primary", "fallback"),
                                                            ("fallback", "pass")]
    assert rec.decision == "pass"


def test_a_late_flag_in_the_delivered_attempt_is_recorded_flag(
        tmp_path: Path, start_sidecar: Any, paced_upstream: str) -> None:
    sc = _sidecar(tmp_path, start_sidecar, paced_upstream,
                  "  - name: r\n    output:\n"
                  "      - {detector: toxicity, action: fallback, threshold: 0.8}\n"
                  "      - {detector: deny, action: flag}\n"
                  "    fallback: [{model: paced}]\n" + WINDOWED)
    assert _stream(sc, "toxic-first") == paced.ANSWER  # a flag lets the text through
    rec = _record(sc)
    # "levees" is judged after the stream was committed: it still is the delivered
    # attempt's verdict, and the primary's "fallback" is not the request's
    assert [(a.kind, a.decision) for a in rec.attempts] == [("primary", "fallback"),
                                                            ("fallback", "flag")]
    assert rec.decision == "flag"
    assert any(f.detector == "deny" and f.action == "flag" for f in rec.findings)


def test_an_exhausted_retry_delivered_with_then_pass_is_recorded_flag(
        tmp_path: Path, start_sidecar: Any, paced_upstream: str) -> None:
    sc = _sidecar(tmp_path, start_sidecar, paced_upstream,
                  "  - name: r\n    output: [{detector: toxicity, action: retry, threshold: 0.8}]\n"
                  "    retry: {times: 0}\n    then: pass\n" + WINDOWED)
    assert _stream(sc, "toxic-first") == paced.TOXIC_FIRST  # nothing left to try: delivered
    rec = _record(sc)
    assert rec.decision == "flag"  # as a unary answer in the same case
    assert rec.attributes[semconv.ATTR_EXHAUSTED] == "1"


@pytest.mark.parametrize("late", ["block", "fallback"])
def test_a_stream_cut_midway_after_a_fallback_stays_block(
        tmp_path: Path, start_sidecar: Any, paced_upstream: str, late: str) -> None:
    # a late "fallback" cannot move on any more (bytes left, no target left): it cuts too
    sc = _sidecar(tmp_path, start_sidecar, paced_upstream,
                  "  - name: r\n    output:\n"
                  "      - {detector: toxicity, action: fallback, threshold: 0.8}\n"
                  f"      - {{detector: deny, action: {late}}}\n"
                  "    fallback: [{model: paced}]\n" + WINDOWED)
    text = _stream(sc, "toxic-first")
    assert text and paced.ANSWER.startswith(text) and "levees" not in text  # cut midway
    rec = _record(sc)
    assert rec.status == 200 and rec.attributes[semconv.ATTR_STREAM_CUT] == "1"
    assert rec.attempts[-1].decision == late and rec.decision == "block"
