"""The drift job and its schedule: one answer for N pods.

:func:`run_job` computes the last complete window for every (model, route) from
ClickHouse (every pod's rows), stores the results, and stores and logs a
``window_drift`` event for each alarm. ``railwatch drift run`` calls it once (a
Kubernetes CronJob); :class:`DriftService` calls it on a schedule inside the sidecar,
only while it holds the lease ``drift`` kept in ClickHouse, and then also runs the
canary probes, so N pods probe and compute once. Pods without the lease refresh their
``railwatch_drift_*`` gauges from the stored results, so any pod's ``/metrics`` shows
the fleet's answer. With embedded chDB there is one process, which always holds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from exporters.clickhouse.drift_store import DriftEvent, DriftStore, WindowResult
from sidecar import semconv as sc
from sidecar.drift.analysis import Windows, analyze, current_windows
from sidecar.drift.canary import CanaryProber
from sidecar.drift.changes import event_id
from sidecar.drift.config import DriftSettings
from sidecar.drift.state import DriftState
from sidecar.timestamps import epoch_seconds

logger = logging.getLogger(__name__)

LEASE = "drift"


def window_events(results: list[WindowResult], pod: str) -> list[DriftEvent]:
    return [
        DriftEvent(
            event_id=event_id(sc.DRIFT_EVENT_WINDOW, r.model, r.route, r.metric,
                              str(r.window_end)),
            ts=r.window_end, kind=sc.DRIFT_EVENT_WINDOW, model=r.model, route=r.route,
            upstream="", subject=r.metric, old_value="", new_value=f"{r.value:.4g}",
            detail=f"{r.statistic} p={r.p_value:.3g} < {r.threshold:.3g}; {r.explanation}",
            pod=pod)
        for r in results if r.drifted
    ]


def run_job(store: DriftStore, settings: DriftSettings, state: DriftState, *, pod: str,
            store_text: bool, now: float | None = None,
            windows: Windows | None = None) -> list[WindowResult]:
    """Analyse the last complete window (or ``windows``), store results and events. Blocks."""
    w = windows or current_windows(time.time() if now is None else now, settings.window_s)
    results = analyze(store, settings, w, store_text=store_text)
    events = window_events(results, pod)
    store.insert_events(events)
    state.record_windows(results)
    state.note_events(events)
    return results


class DriftService:
    """Runs :func:`run_job` every ``settings.every_s`` under the lease, and the canaries."""

    def __init__(self, settings: DriftSettings, store: DriftStore, state: DriftState, *,
                 pod: str, store_text: bool, canary: CanaryProber | None = None) -> None:
        self.settings = settings
        self.store = store
        self.state = state
        self.pod = pod
        self.store_text = store_text
        self.canary = canary
        self.holder = f"{pod}/{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None
        self._done_window = 0.0

    async def start(self) -> None:
        if self.canary is not None:
            await self.canary.start()
        self._task = asyncio.create_task(self._loop(), name="railwatch-drift")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.canary is not None:
            await self.canary.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.every_s)
            try:
                await self.tick()
            except Exception as exc:  # noqa: BLE001 - the schedule survives a bad run
                self.state.bump(self.state.runs, "error")
                logger.error("drift run failed: %s", type(exc).__name__)

    async def tick(self, now: float | None = None) -> list[WindowResult]:
        """One scheduled step: lease, window job (once per window), canaries when due."""
        now = time.time() if now is None else now
        ttl = max(self.settings.lease_s, 2 * self.settings.every_s)
        if not await asyncio.to_thread(self.store.acquire_lease, LEASE, self.holder, ttl):
            self.state.bump(self.state.runs, "no_lease")
            await asyncio.to_thread(self._refresh_gauges, now)
            return []
        results: list[WindowResult] = []
        # rows reach ClickHouse up to insert_max_age_s late (every pod buffers)
        w = current_windows(now - 2 * self.settings.insert_max_age_s, self.settings.window_s)
        if w.cur[1] > self._done_window:
            results = await asyncio.to_thread(
                run_job, self.store, self.settings, self.state, pod=self.pod,
                store_text=self.store_text, windows=w)
            self._done_window = w.cur[1]
            self.state.bump(self.state.runs, "ok")
            self.state.last_run = time.time()
        if self.canary is not None and self.canary.due(now):
            await self.canary.probe_all(now)
        return results

    def _refresh_gauges(self, now: float) -> None:
        rows = self.store.window_history(now - 3 * self.settings.window_s)
        self.state.record_windows([_from_row(r) for r in rows])


def _from_row(r: dict[str, object]) -> WindowResult:
    ts = epoch_seconds  # a naive DateTime from the driver is UTC, not local time
    p = r.get("p_value")
    return WindowResult(
        ts(r["window_start"]), ts(r["window_end"]), ts(r["reference_start"]),
        ts(r["reference_end"]), str(r["model"]), str(r["route"]), str(r["metric"]),
        str(r["statistic"]), float(str(r["value"])), float(str(r["threshold"])),
        float(str(p)) if p is not None else None, int(str(r["n_reference"])),
        int(str(r["n_current"])), bool(r["drifted"]), str(r["explanation"]))
