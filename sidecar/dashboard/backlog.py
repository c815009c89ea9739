"""Hand-off backlog gauges for Prometheus: open hand-offs and the oldest one's age.

The backlog lives in the hand-off store (ClickHouse, or memory), which a scrape must not
query. :class:`BacklogGauges` keeps the last reading; :meth:`refresh` reads the store
(blocking I/O, run it in a thread) and :func:`run_refresher` does so every
``interval_s`` seconds in the background. A failed read keeps the previous values and
counts ``railwatch_handoff_gauge_refresh_errors_total``; it never raises into the loop.

The read is one small query (``pending_backlog``: a count and the oldest ``created_at``,
no conversation text) capped at ``max_scan`` pending rows, oldest first: past the cap
the open count reads the cap, and the age stays exact (alert thresholds sit far below
the cap).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar import semconv as sc

logger = logging.getLogger(__name__)


class BacklogSource(Protocol):
    def pending_backlog(self, max_scan: int) -> tuple[int, float | None]:
        """(pending count capped at ``max_scan``, oldest ``created_at`` epoch s or None)."""
        ...


class BacklogGauges(Collector):
    """A prometheus-client collector over the last store reading. Thread-safe."""

    def __init__(self, store: BacklogSource, *, max_scan: int = 10_000) -> None:
        self.store = store
        self.max_scan = max_scan
        self._lock = threading.Lock()
        self._open = 0
        self._oldest_created: float | None = None
        self._errors = 0

    def refresh(self, now: float | None = None) -> None:
        """Read the pending hand-offs from the store. Blocks (store I/O); never raises."""
        try:
            open_count, oldest = self.store.pending_backlog(self.max_scan)
        except Exception as exc:  # noqa: BLE001 - any store failure keeps the last reading
            with self._lock:
                self._errors += 1
            logger.warning("hand-off backlog gauges: store read failed (%s)", type(exc).__name__)
            return
        with self._lock:
            self._open = open_count
            self._oldest_created = oldest

    def values(self, now: float | None = None) -> tuple[int, float]:
        """(open hand-offs, age of the oldest in seconds; 0 with none open)."""
        current = time.time() if now is None else now
        with self._lock:
            oldest = self._oldest_created
            age = max(0.0, current - oldest) if oldest is not None and self._open else 0.0
            return self._open, age

    def describe(self) -> Iterator[Metric]:
        return iter(self.collect())

    def collect(self) -> Iterator[Metric]:
        open_count, age = self.values()
        gauge = GaugeMetricFamily(sc.METRIC_HANDOFFS_OPEN, "Pending hand-offs in the store.")
        gauge.add_metric([], open_count)
        yield gauge
        oldest = GaugeMetricFamily(sc.METRIC_HANDOFF_OLDEST_AGE,
                                   "Age of the oldest pending hand-off, seconds (0: none).")
        oldest.add_metric([], age)
        yield oldest
        errors = CounterMetricFamily(sc.METRIC_HANDOFF_REFRESH_ERRORS,
                                     "Failed reads of the hand-off store for these gauges.")
        with self._lock:
            errors.add_metric([], self._errors)
        yield errors


async def run_refresher(gauges: BacklogGauges, interval_s: float = 30.0) -> None:
    """Refresh ``gauges`` now and every ``interval_s`` seconds until cancelled."""
    while True:
        await asyncio.to_thread(gauges.refresh)
        await asyncio.sleep(interval_s)
