"""railwatch's Python SDK: the sidecar's guardrails and traces inside an app.

Quick start::

    from openai import OpenAI
    from sidecar.sdk import wrap_openai
    client = wrap_openai(OpenAI())          # every create() is now guarded and traced

or ``@guard`` / ``@observe`` on your own functions, ``record_feedback`` for thumbs,
``configure(...)`` for the settings and policy files (or a remote sidecar). Importing
this package loads nothing heavy: detectors and exporters start on first use, or on
``start()``; ``shutdown()`` (also run at exit) flushes the traces.
"""

from __future__ import annotations

from typing import Any

from sidecar.errors import GuardrailViolation, SdkRemoteError

__all__ = [
    "GuardrailViolation", "SdkRemoteError", "configure", "current_trace_id", "guard",
    "observe", "record_feedback", "shutdown", "start", "wrap_openai",
]

_LAZY = {
    "guard": "sidecar.sdk.api", "observe": "sidecar.sdk.api",
    "current_trace_id": "sidecar.sdk.tracing", "wrap_openai": "sidecar.sdk.openai_client",
    "record_feedback": "sidecar.sdk.feedback", "configure": "sidecar.sdk.runtime",
    "start": "sidecar.sdk.runtime", "shutdown": "sidecar.sdk.runtime",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sidecar.sdk' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
