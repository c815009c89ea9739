"""The runtime of one sidecar: its built services, their lifecycle states, readiness.

:func:`sidecar.app.create_app` builds every service first and passes each to the
constructors that need it; the :class:`Runtime` only holds them (typed) for the
routes, the lifespan and tests. Nothing here imports :mod:`sidecar.app` or
:mod:`sidecar.routes`: both import this module.

Readiness (``/readyz``) has three answers:

- ``ready`` (200): everything started and the upstream answers;
- ``degraded`` (200, reasons in ``degraded``): an upstream endpoint's circuit
  breaker is open (other endpoints and fallbacks still serve), or traces are at risk: an exporter lost records in the last
  ``DEGRADED_WINDOW_S`` seconds (ClickHouse's spill log full or off), ClickHouse
  is unreachable (rows are spilling to disk), or the crash journal is full
  (records are not crash-safe). Serving stays on: guardrails still work, and a
  503 would take every replica out at once when a shared ClickHouse goes down;
- ``not_ready`` (503): a component did not start, or the upstream does not answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from exporters.batch import ExportPipeline
from exporters.journal import RecordIntake
from sidecar.feedback import ImplicitSignals
from sidecar.handoff.store import ReviewStore
from sidecar.pipeline.actions import UpstreamSet
from sidecar.pipeline.emit import Emitter
from sidecar.pipeline.guard import Guard
from sidecar.pipeline.proxy import Proxy
from sidecar.privacy import StoragePrivacy
from sidecar.settings import Settings

if TYPE_CHECKING:
    from exporters.clickhouse.exporter import ClickHouseExporter
    from exporters.prometheus.exporter import PrometheusExporter
    from sidecar.drift.assembly import DriftParts
    from sidecar.handoff.auth import ReviewAuth
    from sidecar.handoff.service import HandoffService

DEGRADED_WINDOW_S = 60.0  # a loss of records keeps /readyz degraded this long


@dataclass
class Runtime:
    """The built components of one sidecar; held by the app under ``RUNTIME``."""

    settings: Settings
    upstreams: UpstreamSet
    exports: ExportPipeline
    intake: RecordIntake
    privacy: StoragePrivacy
    emitter: Emitter
    proxy: Proxy
    signals: ImplicitSignals
    feedback_store: ReviewStore  # where POST /v1/feedback writes
    guard: Guard | None = None
    metrics: PrometheusExporter | None = None  # serves /metrics when enabled
    clickhouse: ClickHouseExporter | None = None  # the trace exporter owning the store
    handoff: HandoffService | None = None
    review_auth: ReviewAuth | None = None  # the /review UI's, when hand-off is enabled
    drift: DriftParts | None = None  # drift tracking's worker and scheduler, when it runs
    components: dict[str, str] = field(default_factory=dict)  # name -> "starting" | "ok" | ...


RUNTIME: web.AppKey[Runtime] = web.AppKey("railwatch_runtime", Runtime)


def degraded_reasons(runtime: Runtime, now: float | None = None) -> list[str]:
    """Why traces are at risk now (empty when they are not). Cheap; no I/O."""
    now = time.monotonic() if now is None else now
    reasons = []
    for snap in runtime.exports.snapshots():
        if snap.last_loss_at is not None and now - snap.last_loss_at <= DEGRADED_WINDOW_S:
            reasons.append(
                f"exporter {snap.name} lost records in the last {DEGRADED_WINDOW_S:.0f} s "
                f"({snap.failed} failed, {snap.dropped} dropped since start)"
            )
    ch = runtime.clickhouse
    if ch is not None:
        snap_ch = ch.snapshot()
        if not snap_ch.ready:
            reasons.append("clickhouse is unavailable; rows are spilling to disk")
        elif snap_ch.backlog_rows:
            reasons.append(f"clickhouse spill log holds {snap_ch.backlog_rows} rows to replay")
    intake = runtime.intake.stats
    if intake.dropped:
        reasons.append(f"record intake dropped {intake.dropped} records since start "
                       "(its queue was full: masking or the journal lag behind)")
    if intake.unjournaled:
        reasons.append(f"crash journal refused {intake.unjournaled} records since start "
                       "(full or failing): they are not crash-safe")
    return reasons


def readiness(runtime: Runtime, upstream_state: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(ready, JSON body) for ``/readyz``; degraded counts as ready (see the module doc)."""
    components: dict[str, Any] = {
        "upstream": upstream_state,
        "upstreams": runtime.upstreams.state(),
        "pipeline": {"state": "ok", **runtime.proxy.state()},
        "exporters": runtime.exports.state(),
        "intake": runtime.intake.state(),
    }
    if runtime.guard is not None:
        components["detectors"] = runtime.guard.runner.state()
    started = all(state == "ok" for state in runtime.components.values())
    ready = started and upstream_state.get("state") == "ok"
    for name, state in runtime.components.items():
        components.setdefault("lifecycle", {})[name] = state
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "components": components}
    if ready:
        # open circuit breakers: other endpoints and fallbacks still serve
        reasons = [f"circuit open: {where}" for where in runtime.upstreams.degraded()]
        reasons += degraded_reasons(runtime)
        if reasons:
            body["status"] = "degraded"
            body["degraded"] = reasons
    return ready, body
