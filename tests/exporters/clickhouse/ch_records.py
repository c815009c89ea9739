"""Trace records for the ClickHouse tests: every field set, or only the required ones."""

from __future__ import annotations

import time
from typing import Any

from sidecar.record import (
    AttemptRecord,
    DecisionRecord,
    DetectorRunRecord,
    FindingRecord,
    TraceRecord,
)

T0 = 1_790_000_040.0  # a fixed instant on a minute boundary (2026-09-21 13:34 UTC)


def full_record(i: int, *, started_at: float | None = None, **overrides: Any) -> TraceRecord:
    start = T0 + i * 0.001 if started_at is None else started_at
    fields: dict[str, Any] = {
        "request_id": f"{i:032x}",
        "trace_id": f"{i + 10**6:032x}",
        "span_id": f"{i:016x}",
        "parent_span_id": f"{i + 7:016x}",
        "started_at": start,
        "ended_at": start + 0.25,
        "method": "POST",
        "path": "/v1/chat/completions",
        "route": "chat",
        "upstream": "http://127.0.0.1:8000",
        "tenant": "acme",
        "user": "user-7",
        "conversation_id": "conv-1",
        "model_requested": "gpt-small",
        "model_served": "gpt-small-2024",
        "system_fingerprint": "fp_123",
        "response_id": f"chatcmpl-{i}",
        "finish_reasons": ("stop", "length"),
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 256,
        "n": 2,
        "stream": True,
        "status": 200,
        "error_type": None,
        "client_disconnected": False,
        "upstream_attempts": 2,
        "total_ms": 120.5 + i,
        "upstream_offset_ms": 12.75 + i,
        "trace_flags": "00",
        "upstream_ms": 100.25,
        "overhead_ms": 20.25 + i,
        "ttft_ms": 35.5,
        "tpot_ms": 4.125,
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "total_tokens": 1500,
        "usage_source": "upstream",
        "prompt_text": f"Bonjour ✓ naïve 日本語 🚀 request {i} <EMAIL_ADDRESS_1>",
        "output_text": f"Réponse {i}: ok \u2014 \"quoted\" \\ back\nslash",
        "text_masked": True,
        "findings": (
            FindingRecord("input", "pii", "EMAIL_ADDRESS", 0.95, 10, 28, "mask", 0.4),
            FindingRecord("output", "format", "invalid_json", 1.0, 0, 42, "retry", 1.25),
        ),
        "detector_runs": (
            DetectorRunRecord("input", "pii", 1.5, 0.4, findings=1, batch_size=8),
            DetectorRunRecord("input", "toxicity", 1.5, 50.0 + i % 7, error="timeout",
                              batch_size=1),
            DetectorRunRecord("output", "format", 110.25, 1.25, findings=1),
        ),
        "decisions": (
            DecisionRecord("input", "mask", ("pii:EMAIL_ADDRESS",)),
            DecisionRecord("output", "retry", ("format:invalid_json", "again")),
        ),
        "decision": "retry",
        "retries": 1,
        "attempts": (
            AttemptRecord("primary", "primary", "gpt-small", 12.75 + i, 40.5, status=200,
                          decision="retry"),
            AttemptRecord("retry", "primary", None, 60.0, 30.25, status=0,
                          error="upstream_timeout"),
            AttemptRecord("fallback", "backup-ü", "gpt-small-2024", 95.0, 20.0, status=200),
        ),
        "handoff_id": None,
        "attributes": {"gen_ai.system": "openai", "note": "ünïcode ✓"},
    }
    fields.update(overrides)
    return TraceRecord(**fields)


def minimal_record(i: int, **overrides: Any) -> TraceRecord:
    fields: dict[str, Any] = {
        "request_id": f"{i:032x}",
        "trace_id": f"{i + 10**6:032x}",
        "span_id": f"{i:016x}",
        "parent_span_id": None,
        "started_at": time.time(),
        "ended_at": time.time(),
        "method": "GET",
        "path": "/v1/models",
        "route": "models",
        "upstream": "http://u",
    }
    fields.update(overrides)
    return TraceRecord(**fields)
