"""The railwatch demo upstream: a scripted OpenAI-compatible server, not a language model.

Use it to try the sidecar without a model, and in tests to drive guardrails with known
behaviour (``[[demo:...]]`` directives). See :mod:`sidecar.demo.upstream`.
"""

from __future__ import annotations

from .upstream import (
    DEMO_MODEL_ID,
    DEMO_OWNED_BY,
    DEMO_SERVED_MODEL,
    DEMO_SYSTEM_FINGERPRINT,
    DIRECTIVES,
    PII_SENTENCE,
    TOXIC_SENTENCE,
    DemoUpstream,
    create_app,
    run_demo_upstream,
    start_demo_upstream,
)

__all__ = [
    "DEMO_MODEL_ID",
    "DEMO_OWNED_BY",
    "DEMO_SERVED_MODEL",
    "DEMO_SYSTEM_FINGERPRINT",
    "DIRECTIVES",
    "PII_SENTENCE",
    "TOXIC_SENTENCE",
    "DemoUpstream",
    "create_app",
    "run_demo_upstream",
    "start_demo_upstream",
]
