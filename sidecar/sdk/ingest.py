"""The sidecar's side of the SDK's remote mode: its policy, and trace ingestion.

- ``GET /v1/guardrails/policy``: the policy's routes (matching, rules, retries,
  ``then``, streams) and detector names and kinds, without detector options, so a
  remote SDK runs the same attempt engine with the same route settings.
- ``POST /v1/sdk/traces``: ``{"records": [TraceRecord as a dict, ...]}`` from an SDK
  in remote mode, with ``Authorization: Bearer <sdk.ingest_token>``; 404 when no
  token is configured, 401 for a wrong one (compared in constant time), 400 for a
  record that does not validate (naming its index, never its content), 413 past
  ``server.max_body_bytes`` or ``sdk.max_records``. Records are marked
  ``railwatch.source=sdk``, stored under this sidecar's privacy setting, and their trace
  ids are accepted by ``POST /v1/feedback`` like those the sidecar issued itself.
"""

from __future__ import annotations

import hmac
from dataclasses import replace
from types import MappingProxyType
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from sidecar import semconv
from sidecar.errors import (
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RequestError,
    UnauthorizedError,
)
from sidecar.pipeline.emit import Emitter
from sidecar.pipeline.guard import Guard
from sidecar.pipeline.ingress import parse_json_object, read_body
from sidecar.pipeline.responses import plain_error_response
from sidecar.record import TraceRecord
from sidecar.settings import Settings

_RECORD = TypeAdapter(TraceRecord)


def policy_view(guard: Guard | None) -> dict[str, Any]:
    if guard is None:
        raise NotFoundError("guardrails are disabled on this sidecar", code="guardrails_disabled")
    doc: dict[str, Any] = guard.policy.model_dump(mode="json")
    for spec in doc.get("detectors", {}).values():
        spec["options"] = {}  # model paths and the like stay on the sidecar
    return doc


def parse_records(body: dict[str, Any], max_records: int) -> list[TraceRecord]:
    records = body.get("records")
    if not isinstance(records, list):
        raise BadRequestError("'records' must be an array", param="records", code="invalid_type")
    if len(records) > max_records:
        raise PayloadTooLargeError(f"at most {max_records} records per request")
    out = []
    for i, item in enumerate(records):
        try:
            record = _RECORD.validate_python(item)
        except ValidationError:
            raise BadRequestError(f"records[{i}] is not a valid trace record",
                                  param=f"records[{i}]", code="invalid_value") from None
        attributes = {str(k)[:128]: str(v)[:1024] for k, v in dict(record.attributes).items()}
        attributes[semconv.ATTR_SOURCE] = "sdk"
        out.append(replace(record, attributes=MappingProxyType(attributes)))
    return out


def setup_sdk_routes(app: web.Application, settings: Settings, guard: Guard | None,
                     emitter: Emitter, issued: Callable[[str], None] | None = None) -> None:
    """``issued`` is told each ingested trace id, so feedback for an SDK call is accepted
    like feedback for a request this sidecar answered."""

    async def get_policy(_request: web.Request) -> web.Response:
        try:
            return web.json_response(policy_view(guard))
        except RequestError as exc:
            return plain_error_response(exc)

    async def post_traces(request: web.Request) -> web.Response:
        token = settings.sdk.ingest_token
        try:
            if token is None:
                raise NotFoundError("trace ingestion is off (set sdk.ingest_token)",
                                    code="ingestion_disabled")
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise UnauthorizedError("a valid sdk.ingest_token is required")
            body = parse_json_object(await read_body(request, settings.server.max_body_bytes))
            records = parse_records(body, settings.sdk.max_records)
        except RequestError as exc:
            return plain_error_response(exc)
        for record in records:
            emitter.emit_record(record)
            if issued is not None:
                issued(record.trace_id)
        return web.json_response({"accepted": len(records)})

    app.router.add_get("/v1/guardrails/policy", get_policy)
    app.router.add_post("/v1/sdk/traces", post_traces)
