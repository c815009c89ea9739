"""schemathesis against the sidecar's own OpenAPI document (``GET /openapi.json``).

The document is fetched from a running sidecar (default guardrail policy, the demo
upstream, the review UI on), and every operation in it is called with generated
valid and invalid requests. Checks: no 5xx from the sidecar itself, documented
status codes and content types, responses that match their schemas. Bounded by
``max_examples`` per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers.servers import LoopThread, RunningSidecar, sidecar_settings, start_sidecar_async

EXAMPLES = 15
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def openapi_sidecar(loop_thread: LoopThread, demo_upstream: Any) -> Iterator[RunningSidecar]:
    settings_ = sidecar_settings(
        demo_upstream.url, guardrails={"enabled": True},
        handoff={"enabled": True, "review": {"token": "review-token-0123456789"}},
        rate_limits={"public": {"rate_per_s": 1000, "burst": 1000}},
    )
    sc = loop_thread.run(start_sidecar_async(settings_))
    yield sc
    loop_thread.run(sc.runner.cleanup())


@pytest.fixture(scope="module")
def api_schema(loop_thread: LoopThread, openapi_sidecar: RunningSidecar) -> Any:
    async def fetch() -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(openapi_sidecar.url + "/openapi.json") as r:
            assert r.status == 200 and r.content_type == "application/json"
            doc: dict[str, Any] = await r.json()
            return doc

    return schemathesis.openapi.from_dict(loop_thread.run(fetch()))


def _operations(api_schema: Any) -> list[Any]:
    return [result.ok() for result in api_schema.get_all_operations()]


def test_the_document_lists_the_sidecars_routes(api_schema: Any) -> None:
    paths = set(api_schema.raw_schema["paths"])
    assert paths == {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
                     "/v1/guardrails/check", "/v1/feedback", "/v1/handoffs/{id}", "/healthz",
                     "/readyz", "/metrics"}


# schemathesis's pytest plugin does not load under pytest 9; its strategies are driven
# through hypothesis directly, one operation and generation mode at a time
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation(api_schema: Any, openapi_sidecar: RunningSidecar, mode: GenerationMode) -> None:
    for operation in _operations(api_schema):

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: Any) -> None:
            case.call_and_validate(base_url=openapi_sidecar.url, timeout=20, checks=CHECKS)

        try:
            call()
        except Unsatisfiable:
            # no invalid request exists for an operation without inputs (GET /healthz)
            assert mode is GenerationMode.NEGATIVE and not operation.get_request_payload_content_types()
