"""Bounded queue + background worker between the request path and an exporter.

After OpenTelemetry's ``BatchSpanProcessor``: the request path calls
:meth:`BatchProcessor.submit`, which appends to a bounded deque and returns at
once (it never blocks and never raises; when the queue is full the record is
dropped and counted). A daemon thread drains the queue in batches of at most
``max_batch`` records, waking when a batch is full or ``schedule_delay_s`` has
passed, and hands each batch to ``exporter.export``. An exporter that states a
:class:`~exporters.base.BatchPreference` (ClickHouse: thousands of rows, about a
second apart) is fed with its own size and delay, so it needs no queue of its own.

Every record a processor received ends up counted exactly once as ``exported``,
``failed`` (the exporter reported the batch lost) or ``dropped`` (queue full);
``done`` is their sum, which the crash journal uses to know what it may forget.

The worker is a thread, not an asyncio task, because several exporters
(ClickHouse through clickhouse-connect, OTLP over HTTP) are synchronous and may
block; the event loop never waits on them.
"""

from __future__ import annotations

import collections
import sys
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from exporters.base import Exporter, ExportResult, PrefersBatches, exporter_state
from sidecar.record import TraceRecord

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchStats:
    """Counters a processor keeps; read by ``/readyz`` and ``/metrics``."""

    submitted: int = 0
    exported: int = 0  # records in batches the exporter accepted
    failed: int = 0  # records in batches the exporter reported as failed
    dropped_queue_full: int = 0
    batches: int = 0
    last_loss_at: float | None = None  # time.monotonic() of the last failed or dropped record

    @property
    def done(self) -> int:
        """Records finished one way or another (exported, failed or dropped)."""
        return self.exported + self.failed + self.dropped_queue_full


@dataclass(frozen=True, slots=True)
class ProcessorSnapshot:
    """Typed counters of one processor (what ``/metrics`` reads; a renamed field
    fails type checking instead of silently dropping a series)."""

    name: str
    queue_depth: int
    submitted: int
    exported: int
    failed: int
    dropped: int
    worker_alive: bool
    last_loss_at: float | None  # time.monotonic() of the last record lost, None if none


class BatchProcessor:
    """Feeds one exporter from a bounded queue on a background thread.

    ``submit`` may be called from any thread (the deque's append is atomic).
    ``force_flush`` and ``shutdown`` block the caller up to their timeout
    (seconds); call them from a worker thread when on an event loop.
    """

    def __init__(
        self,
        exporter: Exporter,
        *,
        max_queue: int = 8192,
        max_batch: int = 512,
        schedule_delay_s: float = 0.2,
    ) -> None:
        if isinstance(exporter, PrefersBatches):
            preference = exporter.batch_preference()
            max_batch, schedule_delay_s = preference.max_batch, preference.schedule_delay_s
            max_queue = max(max_queue, 2 * max_batch)
        if max_queue < 1 or max_batch < 1 or schedule_delay_s <= 0:
            raise ValueError("max_queue, max_batch and schedule_delay_s must be positive")
        self.exporter = exporter
        self.max_queue = max_queue
        self.max_batch = min(max_batch, max_queue)
        self.schedule_delay_s = schedule_delay_s
        self.stats = BatchStats()
        self._queue: collections.deque[TraceRecord] = collections.deque()
        self._wake = threading.Event()
        self._flush_lock = threading.Lock()  # one export at a time, worker or flush
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name=f"railwatch-export-{exporter.name}", daemon=True
        )
        self._thread.start()

    @property
    def name(self) -> str:
        return self.exporter.name

    def queue_depth(self) -> int:
        return len(self._queue)

    def submit(self, record: TraceRecord) -> bool:
        """Queue one record; ``False`` (and counted) when full or shut down. Never blocks."""
        if self._stopping or len(self._queue) >= self.max_queue:
            self.stats.dropped_queue_full += 1
            self.stats.last_loss_at = time.monotonic()
            return False
        self._queue.append(record)
        self.stats.submitted += 1
        if len(self._queue) >= self.max_batch:
            self._wake.set()
        return True

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.schedule_delay_s)
            self._wake.clear()
            # only what is queued now: records arriving during a slow export wait for
            # the next delay (or a full batch), so batches stay as large as preferred
            self._drain(limit=len(self._queue))

    def _take_batch(self) -> list[TraceRecord]:
        batch: list[TraceRecord] = []
        queue = self._queue
        while queue and len(batch) < self.max_batch:
            batch.append(queue.popleft())
        return batch

    def _drain(self, deadline: float | None = None, limit: int | None = None) -> bool:
        """Export everything queued (at most ``limit`` records, then whole batches only);
        ``False`` if the deadline passed first."""
        with self._flush_lock:
            left = limit
            while self._queue:
                if left is not None and left <= 0 and len(self._queue) < self.max_batch:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    return False
                batch = self._take_batch()
                if left is not None:
                    left -= len(batch)
                self._export(batch)
        return True

    def _export(self, batch: Sequence[TraceRecord]) -> None:
        if not batch:
            return
        self.stats.batches += 1
        try:
            result = self.exporter.export(batch)
        except Exception as exc:  # noqa: BLE001 - export must not raise; a bug must not kill the worker
            logger.error(
                "exporter %s raised %s; %d records counted as failed",
                self.exporter.name,
                type(exc).__name__,
                len(batch),
            )
            result = ExportResult.FAILURE
        if result is ExportResult.SUCCESS:
            self.stats.exported += len(batch)
        else:
            self.stats.failed += len(batch)
            self.stats.last_loss_at = time.monotonic()

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Export what is queued, then flush the exporter. Blocks up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        if not self._drain(deadline):
            return False
        remaining = max(0.0, deadline - time.monotonic())
        try:
            return bool(self.exporter.force_flush(remaining))
        except Exception as exc:  # noqa: BLE001 - a plug-in's bug stays in its own counters
            logger.error("exporter %s force_flush raised %s", self.exporter.name, type(exc).__name__)
            return False

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop accepting, drain the queue, stop the thread, shut the exporter down."""
        deadline = time.monotonic() + timeout_s
        self._stopping = True
        self._wake.set()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._drain(deadline)
        left = len(self._queue)
        if left:
            logger.error(
                "exporter %s shut down with %d records undelivered", self.exporter.name, left
            )
        try:
            self.exporter.shutdown(max(0.0, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - shutdown must finish for every exporter
            logger.error("exporter %s shutdown raised %s", self.exporter.name, type(exc).__name__)

    def snapshot(self) -> ProcessorSnapshot:
        stats = self.stats
        return ProcessorSnapshot(
            name=self.name,
            queue_depth=len(self._queue),
            submitted=stats.submitted,
            exported=stats.exported,
            failed=stats.failed,
            dropped=stats.dropped_queue_full,
            worker_alive=self._thread.is_alive(),
            last_loss_at=stats.last_loss_at,
        )

    def state(self) -> dict[str, Any]:
        st = exporter_state(self.exporter)
        snap = self.snapshot()
        st.update(
            queue_depth=snap.queue_depth,
            submitted=snap.submitted,
            exported=snap.exported,
            failed=snap.failed,
            dropped=snap.dropped,
            worker_alive=snap.worker_alive,
        )
        return st


class ExportPipeline:
    """Fans each finished record out to every configured exporter's processor."""

    def __init__(self, processors: Sequence[BatchProcessor] = ()) -> None:
        self.processors = list(processors)

    def add(self, processor: BatchProcessor) -> None:
        self.processors.append(processor)

    def submit(self, record: TraceRecord) -> None:
        for processor in self.processors:
            processor.submit(record)

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        ok = True
        for processor in self.processors:
            ok = processor.force_flush(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Shut the processors down in reverse order of addition: an exporter added later
        may write through one added earlier (drift through ClickHouse's store)."""
        deadline = time.monotonic() + timeout_s
        for processor in reversed(self.processors):
            processor.shutdown(max(0.0, deadline - time.monotonic()))

    def done(self) -> int:
        """Records every processor has finished with (the slowest one's count)."""
        return min((p.stats.done for p in self.processors), default=sys.maxsize)

    def snapshots(self) -> list[ProcessorSnapshot]:
        return [p.snapshot() for p in self.processors]

    def state(self) -> dict[str, Any]:
        return {p.name: p.state() for p in self.processors}
