"""Actions stage: carrying out ``retry``, ``fallback`` and the route's ``then`` for unary answers.

For one request the stage runs *attempts* in rounds:

1. the primary upstream with the model the client asked for;
2. up to ``retry.times`` retry rounds on the primary, each with ``retry.parallel``
   concurrent attempts of which the first acceptable answer wins (the others are
   cancelled, which closes their upstream connections). A round happens after an
   output verdict ``retry`` or, with ``retry.on_upstream_error``, after a connect
   error, a timeout or a 5xx. After a format failure, ``retry.corrective`` appends a
   user message naming the rule that failed (JSON path and reason, never the
   answer's content);
3. the ``fallback`` chain, one attempt per target (another upstream, another
   model, or both), after a ``fallback`` verdict, an open circuit, or spent retries.

An attempt is *final* when its answer is acceptable (verdict pass, flag or mask),
blocked (verdict ``block``), handed off (verdict ``handoff``), or a 4xx from the
upstream (the client's fault: retrying cannot help). When every round is spent,
the route's ``then`` applies to the last answer: ``block`` (the block response, or
the upstream error itself when there was no answer), ``pass`` (the last answer,
flagged ``railwatch.exhausted``), or ``handoff``.

Each attempt becomes an :class:`~sidecar.record.AttemptRecord` on the trace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from sidecar.context import RequestContext
from sidecar.errors import RequestError, UpstreamError
from sidecar.pipeline.circuit import CircuitBreaker, CircuitSettings
from sidecar.pipeline.upstream import UpstreamClient
from sidecar.policy import PASS, Decision, FallbackTarget, Route
from sidecar.record import AttemptRecord

ACCEPTABLE = frozenset({"pass", "flag", "mask"})


@dataclass(slots=True)
class Upstream:
    """A named upstream: its pooled client and its circuit breaker."""

    name: str
    client: UpstreamClient
    breaker: CircuitBreaker
    label: str  # public URL, for records


class UpstreamSet:
    """The primary upstream and the named fallbacks; started and closed together."""

    def __init__(
        self,
        primary: UpstreamClient,
        fallbacks: Mapping[str, UpstreamClient],
        circuit: CircuitSettings,
        label: Callable[[str], str],
    ) -> None:
        self.primary = Upstream("primary", primary, CircuitBreaker("primary", circuit),
                                label(primary.base_url))
        self.fallbacks = {
            name: Upstream(name, client, CircuitBreaker(name, circuit), label(client.base_url))
            for name, client in fallbacks.items()
        }

    def get(self, name: str | None) -> Upstream:
        if name is None or name == "primary":
            return self.primary
        return self.fallbacks[name]

    def all(self) -> list[Upstream]:
        return [self.primary, *self.fallbacks.values()]

    async def start(self) -> None:
        for upstream in self.all():
            await upstream.client.start()

    async def close(self) -> None:
        for upstream in self.all():
            await upstream.client.close()

    def state(self) -> dict[str, Any]:
        return {u.name: {"url": u.label, "circuit": u.breaker.snapshot()} for u in self.all()}


@dataclass(slots=True)
class Attempt:
    kind: str  # "primary" | "retry" | "fallback"
    upstream: Upstream
    model: str | None  # override, None: as requested
    extra_messages: list[dict[str, Any]] = field(default_factory=list)
    # results
    status: int = 0
    raw: bytes = b""
    headers: Any = None
    doc: dict[str, Any] | None = None
    changed: bool = False
    decision: Decision = PASS
    error: RequestError | None = None
    started: float = 0.0
    ended: float = 0.0

    @property
    def failed_upstream(self) -> bool:
        return self.error is not None or self.status >= 500

    @property
    def final(self) -> bool:
        if self.failed_upstream:
            return False
        if self.status != 200:
            return True  # a 4xx: the client's fault
        return self.decision.action in ACCEPTABLE or self.decision.action in ("block", "handoff")


Send = Callable[[Attempt, bytes], Awaitable[None]]


def corrective_message(decision: Decision) -> dict[str, Any] | None:
    """A user message naming what a format check rejected (paths and rules, no content)."""
    problems = []
    for t in decision.triggered:
        f = t.finding
        if t.action != "retry":
            continue
        meta = f.metadata
        where = meta.get("path") if isinstance(meta.get("path"), str) else None
        reason = meta.get("reason") if isinstance(meta.get("reason"), str) else None
        problem = f.label.replace("_", " ")
        if where:
            problem += f" at {where}"
        if reason:
            problem += f": {reason}"
        problems.append(problem)
    if not problems:
        return None
    listed = "; ".join(dict.fromkeys(problems))
    return {
        "role": "user",
        "content": "Your previous answer was rejected by an automatic check (" + listed
        + "). Answer again, following the requested format exactly.",
    }


class ActionRunner:
    """Runs the attempts of one request; ``send`` does one attempt (upstream + output guard)."""

    def __init__(self, ctx: RequestContext, route: Route, upstreams: UpstreamSet, send: Send,
                 body: dict[str, Any], raw: bytes) -> None:
        self.ctx = ctx
        self.route = route
        self.upstreams = upstreams
        self.send = send
        self.body = body
        self.raw = raw
        self.last: Attempt | None = None

    def payload(self, attempt: Attempt) -> bytes:
        if attempt.model is None and not attempt.extra_messages:
            return self.raw
        body = dict(self.body)
        if attempt.model is not None:
            body["model"] = attempt.model
        if attempt.extra_messages and isinstance(body.get("messages"), list):
            body["messages"] = [*body["messages"], *attempt.extra_messages]
        return orjson.dumps(body)

    async def _one(self, attempt: Attempt) -> Attempt:
        ctx = self.ctx
        attempt.started = time.perf_counter()
        breaker = attempt.upstream.breaker
        try:
            if not breaker.allow():
                attempt.error = UpstreamError("the upstream's circuit is open", code="circuit_open")
            else:
                try:
                    await self.send(attempt, self.payload(attempt))
                except UpstreamError as exc:
                    attempt.error = exc
                except BaseException:  # cancelled (client gone, a sibling won): no verdict
                    breaker.abandon()
                    attempt.error = UpstreamError("the attempt was cancelled", code="cancelled")
                    raise
                if attempt.failed_upstream:
                    breaker.failure()
                else:
                    breaker.success()
        finally:
            attempt.ended = time.perf_counter()
            ctx.attempts.append(
                AttemptRecord(
                    kind=attempt.kind,
                    upstream=attempt.upstream.name,
                    model=attempt.model or ctx.model_requested,
                    offset_ms=round((attempt.started - ctx.t0) * 1000, 4),
                    duration_ms=round((attempt.ended - attempt.started) * 1000, 4),
                    status=attempt.status,
                    error=attempt.error.code if attempt.error is not None else None,
                    decision=attempt.decision.action,
                )
            )
            if attempt.kind == "retry":
                ctx.retries += 1
        return attempt

    async def _round(self, attempts: list[Attempt]) -> Attempt:
        if len(attempts) == 1:
            return await self._one(attempts[0])
        tasks = [asyncio.ensure_future(self._one(a)) for a in attempts]
        best: Attempt | None = None
        try:
            for fut in asyncio.as_completed(tasks):
                done = await fut
                if done.final and (done.decision.action in ACCEPTABLE or done.status != 200):
                    return done
                best = done if best is None or _better(done, best) else best
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert best is not None
        return best

    def _wants_retry(self, attempt: Attempt) -> bool:
        if attempt.failed_upstream:
            circuit_open = attempt.error is not None and attempt.error.code == "circuit_open"
            return self.route.retry.on_upstream_error and not circuit_open
        return attempt.decision.action == "retry"

    async def run(self) -> Attempt:
        """Run rounds until one is final or all are spent; returns the deciding attempt."""
        primary = self.upstreams.primary
        attempt = await self._round([Attempt("primary", primary, None)])
        if attempt.final:
            return attempt
        spec = self.route.retry
        for _ in range(spec.times):
            if not self._wants_retry(attempt):
                break
            extra: list[dict[str, Any]] = []
            if spec.corrective and attempt.decision.action == "retry" and self.ctx.route == "chat":
                message = corrective_message(attempt.decision)
                if message is not None:
                    extra = [message]
            attempt = await self._round(
                [Attempt("retry", primary, None, list(extra)) for _ in range(spec.parallel)]
            )
            if attempt.final:
                return attempt
        for target in self.route.fallback:
            attempt = await self._round([self._fallback_attempt(target)])
            if attempt.final:
                return attempt
        return attempt

    def _fallback_attempt(self, target: FallbackTarget) -> Attempt:
        return Attempt("fallback", self.upstreams.get(target.upstream), target.model)


def _better(a: Attempt, b: Attempt) -> bool:
    """Of two non-final attempts, prefer one with an answer over an upstream failure."""
    return b.failed_upstream and not a.failed_upstream


def release_quietly(resp: aiohttp.ClientResponse | None) -> None:
    if resp is not None:
        resp.release()
