"""The record intake: off the event loop, finish each record, journal it, fan it out.

The request path calls :meth:`RecordIntake.submit` (a deque append and an event
set: it never blocks, never raises, costs about a microsecond). One daemon thread,
woken by the first record, waits ``flush_interval_s`` for more to gather and then,
for everything submitted since:

1. *finishes* each record: a per-record callable runs here, not on the event loop
   (the sidecar masks stored text for ``privacy.capture: masked`` this way);
2. *journals* the finished records as one entry of a local append-only log
   (:class:`~exporters.spill.SpillLog`, one ``write(2)``), when a journal is
   configured;
3. hands them to the :class:`~exporters.batch.ExportPipeline`.

Entries are acknowledged (forgotten) once every exporter's processor finished the
records they hold (exported, or counted as failed or dropped), so on a crash
(``kill -9``) the journal holds every record that was answered more than about one
``flush_interval_s`` ago and not yet exported; :meth:`RecordIntake.start` replays
them into the exporters before new records flow. Delivery is at least once: a record
exported just before the crash may be exported again (the ClickHouse traces table
collapses rows by ``request_id``; count ``uniqExact(request_id)`` or read ``FINAL``).

What may be lost on a crash is what was submitted in the last ``flush_interval_s``
(default 20 ms) and not yet written; the journal ``fsync``s every ``fsync_every_s``,
so a power loss (not a process crash) may lose that much more. A full journal
(``max_bytes``) drops nothing: records still go to the exporters, they are only not
crash-safe, counted in ``unjournaled``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import orjson

from exporters.batch import ExportPipeline
from exporters.errors import SpillError
from exporters.spill import SpillLog
from sidecar.record import TraceRecord, record_from_dict

logger = logging.getLogger(__name__)

Finisher = Callable[[TraceRecord], TraceRecord]
_FORMAT = 1


def _mapping(value: object) -> object:
    """orjson's fallback: the records' read-only ``attributes`` mapping."""
    if isinstance(value, MappingProxyType):
        return dict(value)
    raise TypeError
_IDLE_S = 1.0


@dataclass(frozen=True, slots=True)
class JournalSettings:
    directory: Path
    max_bytes: int = 256 << 20
    segment_bytes: int = 16 << 20
    fsync_every_s: float = 1.0


@dataclass(slots=True)
class IntakeStats:
    submitted: int = 0  # records handed in by the request path
    finished: int = 0  # records fanned out to the exporters
    finish_errors: int = 0  # finishers that raised (the record went out without text)
    journaled: int = 0  # records written to the journal
    unjournaled: int = 0  # records the journal refused (full or failing): not crash-safe
    replayed: int = 0  # records replayed from the journal at start-up
    dropped: int = 0  # records refused because the intake queue was full (the worker lags)


class RecordIntake:
    """Between the emit stage and the exporters (see the module docstring).

    ``submit`` is safe from any thread. ``start`` and ``shutdown`` block (disk I/O,
    joining the thread); call them from a worker thread when on an event loop.
    ``start`` raises :class:`SpillError` when the journal directory is unusable
    (locked by another process, unreadable).
    """

    def __init__(
        self,
        exports: ExportPipeline,
        *,
        flush_interval_s: float = 0.02,
        max_queue: int = 65_536,
        journal: JournalSettings | None = None,
        strip_text: Callable[[TraceRecord], TraceRecord] | None = None,
    ) -> None:
        if flush_interval_s <= 0:
            raise ValueError("flush_interval_s must be positive")
        self.exports = exports
        self.flush_interval_s = flush_interval_s
        self.max_queue = max_queue  # bounds memory when finishing lags behind the traffic
        self.journal_settings = journal
        self.stats = IntakeStats()
        self._strip_text = strip_text
        self._inbox: collections.deque[tuple[TraceRecord, Finisher | None]] = collections.deque()
        self._log: SpillLog | None = None
        self._entries: collections.deque[int] = collections.deque()  # end index per entry
        self._fanned = 0  # records handed to the exporters since start (the end index)
        self._acked_base = 0  # ``done`` of the pipeline that counts as index 0
        self._wake = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()  # one drain at a time (thread, flush, shutdown)
        self._thread: threading.Thread | None = None

    # -- request path --------------------------------------------------------------------

    def submit(self, record: TraceRecord, finish: Finisher | None = None) -> None:
        """Queue a record (and what must still be done to it). Never blocks or raises;
        a record that finds the queue full is dropped and counted."""
        if len(self._inbox) >= self.max_queue:
            self.stats.dropped += 1
            return
        self._inbox.append((record, finish))
        self.stats.submitted += 1
        if not self._wake.is_set():
            self._wake.set()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Open the journal, replay what a previous process left, start the thread."""
        if self._thread is not None:
            return
        self._acked_base = self.exports.done()
        settings = self.journal_settings
        if settings is not None:
            log = SpillLog(settings.directory, max_bytes=settings.max_bytes,
                           segment_bytes=settings.segment_bytes,
                           fsync_every_s=settings.fsync_every_s)
            log.open()
            self._log = log
            self._replay(log)
        self._thread = threading.Thread(target=self._run, name="railwatch-intake", daemon=True)
        self._thread.start()

    def _replay(self, log: SpillLog) -> None:
        replayed = 0
        for entry in log.entries():
            try:
                records = [record_from_dict(d) for d in orjson.loads(entry.payload)["records"]]
            except (ValueError, KeyError, TypeError) as exc:
                logger.error("journal entry of %d records unreadable (%s); skipped",
                             entry.rows, type(exc).__name__)
                records = []
            for record in records:
                self.exports.submit(record)
            self._fanned += len(records)
            self._entries.append(self._fanned)
            replayed += len(records)
        if replayed:
            self.stats.replayed += replayed
            logger.info("journal %s: replaying %d records a previous process left",
                        log.directory, replayed)

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Journal and fan out what is queued, then flush the exporters. Blocks."""
        deadline = time.monotonic() + timeout_s
        self._drain()
        ok = self.exports.force_flush(max(0.0, deadline - time.monotonic()))
        self._settle()
        return ok

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Drain, stop the thread, shut the exporters down, settle and close the journal."""
        deadline = time.monotonic() + timeout_s
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        drained = self._drain(max(0.0, deadline - time.monotonic()))
        if not drained:  # the thread is stuck finishing a record: do not wait for it
            logger.error("record intake: still busy at shutdown; %d queued records are not "
                         "stored, and what the journal holds is replayed at the next start",
                         len(self._inbox))
        self.exports.shutdown(max(0.0, deadline - time.monotonic()))
        if drained:
            self._settle()
            if self._log is not None:
                self._log.close()

    # -- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            # idle: wake once a second to settle; busy: one drain per flush interval
            if self._wake.wait(_IDLE_S) and not self._stopping:
                time.sleep(self.flush_interval_s)  # let a batch gather
            self._wake.clear()
            try:
                self._drain()
                self._settle()
                if self._log is not None:
                    self._log.sync_if_due()
            except Exception as exc:  # noqa: BLE001 - the thread must survive anything
                logger.error("record intake error: %s", type(exc).__name__)

    def _drain(self, timeout_s: float | None = None) -> bool:
        """Finish, journal and fan out what is queued; False when the lock (another
        drain under way) was not free within ``timeout_s`` (None: waits)."""
        if not self._lock.acquire(timeout=-1 if timeout_s is None else timeout_s):
            return False
        try:
            self._drain_locked()
        finally:
            self._lock.release()
        return True

    def _drain_locked(self) -> None:
        inbox = self._inbox
        if not inbox:
            return
        batch: list[TraceRecord] = []
        while inbox:
            record, finish = inbox.popleft()
            if finish is not None:
                record = self._finish(record, finish)
            batch.append(record)
        self._journal(batch)
        for record in batch:
            self.exports.submit(record)
        self._fanned += len(batch)
        self.stats.finished += len(batch)

    def _finish(self, record: TraceRecord, finish: Finisher) -> TraceRecord:
        try:
            return finish(record)
        except Exception as exc:  # noqa: BLE001 - fail closed: no text rather than raw text
            self.stats.finish_errors += 1
            logger.error("finishing trace record %s failed (%s); stored without text",
                         record.request_id, type(exc).__name__)
            return self._strip_text(record) if self._strip_text is not None else record

    def _journal(self, batch: list[TraceRecord]) -> None:
        log = self._log
        if log is None:
            return
        # orjson writes the frozen dataclasses itself (a few times faster than as_dict());
        # the result is as_dict()'s JSON, which record_from_dict reads back
        payload = orjson.dumps({"format": _FORMAT, "records": batch}, default=_mapping)
        try:
            ok = log.append(payload, len(batch))
        except SpillError:
            ok = False
        if ok:
            self._entries.append(self._fanned + len(batch))
            self.stats.journaled += len(batch)
        else:
            self.stats.unjournaled += len(batch)

    def _settle(self) -> None:
        """Forget the journal entries every exporter has finished with."""
        log = self._log
        if log is None or not self._entries:
            return
        with self._lock:  # the thread and force_flush/shutdown both settle
            done = self.exports.done() - self._acked_base
            count = 0
            while self._entries and self._entries[0] <= done:
                self._entries.popleft()
                count += 1
            if count:
                log.discard(count)

    @property
    def journal_backlog(self) -> int:
        """Records in the journal not yet finished by every exporter."""
        return self._log.backlog_rows if self._log is not None else 0

    def state(self) -> dict[str, object]:
        st = self.stats
        return {
            "queued": len(self._inbox),
            "submitted": st.submitted,
            "journaled": st.journaled,
            "unjournaled": st.unjournaled,
            "replayed": st.replayed,
            "dropped": st.dropped,
            "finish_errors": st.finish_errors,
            "journal_backlog_rows": self.journal_backlog,
            "worker_alive": self._thread is not None and self._thread.is_alive(),
        }
