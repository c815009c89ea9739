"""railwatch: an observability and guardrails sidecar for LLM inference."""

from __future__ import annotations

__version__ = "0.1.0"
