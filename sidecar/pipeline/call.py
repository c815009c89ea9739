"""One guarded call, described once: what every attempt of the engine needs to know.

A :class:`GuardedCall` is built after the input guard ran and is never changed: the
request line, the headers to forward, the (possibly masked) body and its bytes, the
policy route, the request's masker, the restorer of its input placeholders and the
input stage's decision.
``payload(spec)`` gives the bytes of one attempt (another model, a corrective
message) without touching the original.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from sidecar.context import RequestContext
from sidecar.masking import Masker
from sidecar.pipeline.engine import AttemptSpec
from sidecar.policy import Route


@dataclass(frozen=True, slots=True)
class GuardedCall:
    request: web.Request
    ctx: RequestContext
    headers: CIMultiDict[str]
    body: dict[str, Any]
    raw: bytes  # ``body`` as forwarded
    route: Route
    masker: Masker
    restore: Callable[[str], str] | None  # input placeholders -> values; None: nothing masked
    endpoint: str  # the canonical path: scopes the circuit breakers
    input_decision: str = "pass"  # the input stage's action: settled with the delivered answer's

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def path_qs(self) -> str:
        return self.request.path_qs

    def payload(self, spec: AttemptSpec, body: dict[str, Any] | None = None,
                raw: bytes | None = None) -> bytes:
        """The bytes one attempt sends (``body``/``raw`` override the call's own)."""
        body = self.body if body is None else body
        raw = self.raw if raw is None else raw
        if spec.model is None and not spec.extra_messages:
            return raw
        out = dict(body)
        if spec.model is not None:
            out["model"] = spec.model
        if spec.extra_messages and isinstance(out.get("messages"), list):
            out["messages"] = [*out["messages"], *spec.extra_messages]
        return orjson.dumps(out)
