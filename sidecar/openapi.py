"""The sidecar's own OpenAPI 3.0 document, served at ``GET /openapi.json``.

It describes what the sidecar itself answers: the OpenAI routes it guards (their
bodies as far as the sidecar validates them; unknown fields pass through to the
upstream), the guardrail check, feedback, the hand-off poll, health, readiness and
metrics. Every error the sidecar writes has the OpenAI shape (``Error``). The
document is built once per process (:func:`document`); it is pure data.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sidecar import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}
_JSON = "application/json"


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed or invalid body (the error names the parameter).",
            401: "Credentials required.", 404: "Not found.",
            413: "Body over the size limit.", 429: "Rate limited (Retry-After).",
            502: "The upstream failed.", 503: "Overloaded or a dependency is down (Retry-After).",
            504: "The upstream timed out.", 409: "Conflict."}
    return {str(c): {"description": text[c], "content": {_JSON: {"schema": _ERROR}}}
            for c in codes}


_PROXY_ERRORS = (400, 413, 429, 502, 503, 504)

_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant",
                                            "tool", "function"]},
        "content": {"nullable": True, "oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "object"}},
        ]},
        "name": {"type": "string"},
    },
}

_COMMON = {
    "model": {"type": "string"},
    "stream": {"type": "boolean"},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "max_tokens": {"type": "integer", "minimum": 1},
    "n": {"type": "integer", "minimum": 1, "maximum": 8},
    "user": {"type": "string"},
}


def _proxy_op(summary: str, body: dict[str, Any], stream: bool) -> dict[str, Any]:
    ok: dict[str, Any] = {_JSON: {"schema": {"type": "object"}}}
    if stream:
        ok["text/event-stream"] = {"schema": {}}  # events: chunk objects, then [DONE]
    return {
        "summary": summary,
        "requestBody": {"required": True, "content": {_JSON: {"schema": body}}},
        "responses": {"200": {"description": "The upstream's answer, checked.", "content": ok},
                      **_errors(*_PROXY_ERRORS)},
    }


def _body(required: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": {**_COMMON, **extra}}


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 document (the same object on every call: do not mutate it)."""
    strings = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    paths: dict[str, Any] = {
        "/v1/chat/completions": {"post": _proxy_op(
            "Chat completion through the guardrails.",
            _body(["model", "messages"], {"messages": {"type": "array", "items": _MESSAGE}}),
            stream=True)},
        "/v1/completions": {"post": _proxy_op(
            "Text completion through the guardrails.",
            _body(["model", "prompt"], {"prompt": strings}), stream=True)},
        "/v1/embeddings": {"post": _proxy_op(
            "Embeddings; the input side is checked.",
            _body(["model", "input"], {"input": strings}), stream=False)},
        "/v1/models": {"get": {
            "summary": "The upstream's model list, passed through.",
            "responses": {"200": {"description": "Models.",
                                  "content": {_JSON: {"schema": {"type": "object"}}}},
                          **_errors(429, 502, 503, 504)}}},
        "/v1/guardrails/check": {"post": {
            "summary": "Run a stage's detectors and the policy on one text.",
            "requestBody": {"required": True, "content": {_JSON: {"schema": {
                "type": "object", "required": ["text"],
                "properties": {"text": {"type": "string"},
                               "stage": {"type": "string", "enum": ["input", "output"]},
                               "route": {"type": "string"},
                               "response_format": {"type": "object"}}}}}},
            "responses": {"200": {"description": "Findings and the decision.",
                                  "content": {_JSON: {"schema": {"type": "object"}}}},
                          **_errors(400, 404, 413)}}},
        "/v1/feedback": {"post": {
            "summary": "Thumbs or a score for a trace this service answered.",
            "requestBody": {"required": True, "content": {_JSON: {"schema": {
                "type": "object", "required": ["trace_id"], "additionalProperties": False,
                "properties": {
                    "trace_id": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"},
                    "thumbs": {"type": "string", "enum": ["up", "down"]},
                    "score": {"type": "integer", "minimum": 1, "maximum": 5},
                    "comment": {"type": "string"},
                    "corrected_answer": {"type": "string"},
                    "user": {"type": "string", "maxLength": 256}}}}}},
            "responses": {"201": {"description": "Stored.", "content": {_JSON: {"schema": {
                "type": "object", "required": ["id", "trace_id", "known_trace"],
                "properties": {"id": {"type": "string"}, "trace_id": {"type": "string"},
                               "known_trace": {"type": "boolean"}}}}}},
                          **_errors(400, 404, 413, 429, 503)}}},
        "/v1/handoffs/{id}": {"get": {
            "summary": "The client's poll of a hand-off: status and the reviewer's answer.",
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "x-railwatch-handoff-token", "in": "header", "required": False,
                 "schema": {"type": "string"},
                 "description": "The poll token returned with the hand-off."}],
            "responses": {"200": {"description": "Status and answer.",
                                  "content": {_JSON: {"schema": {"type": "object"}}}},
                          **_errors(401, 404, 429, 503)}}},
        "/healthz": {"get": {"summary": "Liveness.", "responses": {"200": {
            "description": "Alive.", "content": {_JSON: {"schema": {
                "type": "object", "required": ["status"],
                "properties": {"status": {"type": "string"}}}}}}}}},
        "/readyz": {"get": {"summary": "Readiness, per component.", "responses": {
            "200": {"description": "Ready.", "content": {_JSON: {"schema": {"type": "object"}}}},
            "503": {"description": "Not ready.",
                    "content": {_JSON: {"schema": {"type": "object"}}}}}}},
        "/metrics": {"get": {"summary": "Prometheus exposition.", "responses": {
            "200": {"description": "Metrics.", "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}}}},
            "404": {"description": "Metrics are disabled.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "railwatch sidecar", "version": __version__,
                 "description": "Guardrails and observability in front of an "
                                "OpenAI-compatible server. Paths not listed are passed "
                                "through to the upstream, traced."},
        "paths": paths,
        "components": {"schemas": {"Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["message", "type", "param", "code"],
                "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                               "param": {"type": "string", "nullable": True},
                               "code": {"type": "string", "nullable": True}}}}}}},
    }
