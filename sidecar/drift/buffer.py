"""The drift rows waiting for one ClickHouse insert, written within a bounded age.

Each insert makes a ClickHouse part and parts cost merges, so the drift worker buffers
its rows. :class:`RowBuffer` writes them when ``max_rows`` are waiting (on the adding
thread, as part of that ``add``), when the oldest has waited ``max_age_s`` seconds
(``drift.insert_max_age_s``) whether or not another row comes, and on :meth:`flush` and
:meth:`close`. So on a quiet sidecar a row sits in memory (where a crash loses it) at
most ``max_age_s`` plus one insert.

The age bound is kept by one daemon thread per buffer, started with the first row, that
sleeps on a condition until the oldest row is due (no polling while the buffer is empty)
and stops in :meth:`close`. Inserts run one at a time, outside the buffer's lock, so an
``add`` never waits for a slow insert unless it is the one writing.

A failed insert drops its rows (they are samples: no spill log), counts them as
``railwatch_drift_skipped{reason="store"}`` and logs an error with the count and the
exception's type, never the rows; rows still waiting when :meth:`close` runs out of
time behind a slow insert are dropped as ``reason="shutdown"``. Nothing here raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from exporters.clickhouse.drift_store import DriftStore, RequestFeatures
from sidecar.drift.state import DriftState

logger = logging.getLogger("railwatch.drift")


class RowBuffer:
    """Buffered drift rows for ``store``; counts what it writes and loses in ``state``."""

    def __init__(self, store: DriftStore, state: DriftState, *, max_age_s: float,
                 max_rows: int) -> None:
        if max_age_s <= 0 or max_rows < 1:
            raise ValueError("max_age_s and max_rows must be positive")
        self.store = store
        self.state = state
        self.max_age_s = max_age_s
        self.max_rows = max_rows
        self._cond = threading.Condition()  # guards the fields below
        self._rows: list[RequestFeatures] = []
        self._since: float | None = None  # time.monotonic() of the oldest waiting row
        self._closed = False
        self._timer: threading.Thread | None = None
        self._writing = threading.Lock()  # one insert at a time; flush waits for a timed one

    def __len__(self) -> int:
        with self._cond:
            return len(self._rows)

    def add(self, rows: Sequence[RequestFeatures]) -> bool:
        """Buffer ``rows``; write the buffer at once when it holds ``max_rows`` or is
        closed. ``False`` only when that write failed (counted, logged). May block for one
        insert; never raises."""
        if not rows:
            return True
        with self._cond:
            self._rows.extend(rows)
            if self._since is None:
                self._since = time.monotonic()
                self._cond.notify()  # the timer sleeps without a deadline while empty
            full = len(self._rows) >= self.max_rows or self._closed
            if self._timer is None and not self._closed:
                self._timer = threading.Thread(target=self._run, name="railwatch-drift-flush",
                                               daemon=True)
                self._timer.start()
        return self.flush() if full else True

    def flush(self, wait_s: float | None = None) -> bool:
        """Write every buffered row now, after any insert already under way. Blocks for
        at most two inserts; ``False`` when the write failed (counted, logged). With
        ``wait_s``, an insert under way is waited for that long at most: past it the
        buffered rows are dropped, counted as ``skipped{reason="shutdown"}`` and logged."""
        if not self._writing.acquire(timeout=-1 if wait_s is None else max(0.0, wait_s)):
            with self._cond:
                rows, self._rows, self._since = self._rows, [], None
            if rows:
                self.state.bump(self.state.skipped, "shutdown", len(rows))
                logger.error("drift worker dropped %d rows at shutdown: an insert was still "
                             "running", len(rows))
            return not rows
        try:
            with self._cond:
                rows, self._rows, self._since = self._rows, [], None
            return self._write(rows)
        finally:
            self._writing.release()

    def close(self, timeout_s: float = 10.0) -> bool:
        """Stop the timer and write what is left; later ``add`` calls write at once.
        Waits ``timeout_s`` at most for an insert under way (then the rest is dropped
        and counted), plus the last insert itself; ``False`` when rows were lost."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closed = True
            self._cond.notify()
            timer = self._timer
        if timer is not None:
            timer.join(timeout_s)
        return self.flush(deadline - time.monotonic())

    def _run(self) -> None:
        """The timer: sleep until the oldest row is ``max_age_s`` old, then write."""
        while True:
            with self._cond:
                while not self._closed:
                    if self._since is None:
                        self._cond.wait()
                        continue
                    left = self._since + self.max_age_s - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._closed:
                    return  # close() writes the rest itself
            self.flush()

    def _write(self, rows: list[RequestFeatures]) -> bool:
        if not rows:
            return True
        try:
            self.store.insert_requests(rows)
        except Exception as exc:  # noqa: BLE001 - samples are not worth a spill log
            self.state.bump(self.state.skipped, "store", len(rows))
            logger.error("drift worker could not store %d rows: %s", len(rows),
                         type(exc).__name__)
            return False
        self.state.sampled += len(rows)
        return True
