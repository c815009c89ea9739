"""ClickHouseExporter: batched inserts, a durable spill log on failure, ordered replay.

Data path (all off the request path: ``export`` runs in the BatchProcessor's
worker thread, which batches to ``insert_max_rows`` / ``insert_max_age_s`` as this
exporter's :class:`~exporters.base.BatchPreference` asks; only replay has a thread
of its own, ``railwatch-clickhouse``)::

    export(batch) -> unit --(backend ready, spill log empty)--> INSERT traces, findings
                         \\--(backend failing, or a backlog exists)--> spill log (disk)
    spill log --(replay thread, exponential back-off)--> INSERT, oldest first

The client belongs to a :class:`~exporters.clickhouse.store.ClickHouseStore`, shared
with hand-off storage, the CLI's queries and drift (one chDB engine per process).

A *unit* is one insert: its records, a random deduplication token and a version
(µs). Both tables get the unit's rows with ``insert_deduplication_token`` set, so a
unit inserted again after a partial failure (traces written, findings not; a
timeout after the server committed) is dropped by the server: every request's
row lands exactly once, in the per-minute aggregates too. While a backlog exists
new units go to the spill log behind it, so rows reach ClickHouse in order.

``export`` returns once the batch is inserted or spilled (so the exporter is
*durable*): ``SUCCESS`` when it was inserted or spilled to disk (safe, counted as
spilled), and ``FAILURE`` only when rows were dropped: the spill log was full (``spill_max_bytes``), disabled, or a unit could
not be encoded at all. Drops are counted and logged without any text.

Embedded chDB (the default DSN) holds one engine path per process and locks it
against other processes: a second sidecar worker, or a CLI next to a running
sidecar, fails in ``start()`` with :class:`exporters.errors.StorageLockedError`
naming the path. Use a ClickHouse server (``http(s)://`` DSN) for those set-ups.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from exporters.base import BatchPreference, ExportResult
from exporters.clickhouse.config import ClickHouseConfig
from exporters.clickhouse.connection import UNBOUNDED, check_embedded_free, describe_error
from exporters.clickhouse.store import ClickHouseStore
from exporters.clickhouse.rows import (
    FINDING_NAMES,
    FINDING_TYPES,
    TRACE_NAMES,
    TRACE_TYPES,
    build_rows,
    record_from_dict,
)
from exporters.errors import (
    ExporterConfigError,
    ExporterStartError,
    SpillError,
    StorageUnavailableError,
)
from exporters.spill import SpillLog
from sidecar.record import TraceRecord


logger = logging.getLogger(__name__)

_SPILL_FORMAT = 1
_LOG_INTERVAL_S = 10.0
# client-side encoding errors: the same unit would fail forever, so it is rejected
_POISON = (TypeError, ValueError, OverflowError, struct.error, UnicodeError)


@dataclass(frozen=True, slots=True)
class ClickHouseSnapshot:
    """Typed counters (rows unless named otherwise) for ``/metrics`` and ``/readyz``."""

    ready: bool
    inserted_rows: int
    insert_failures: int
    spilled_rows: int
    replayed_rows: int
    dropped_rows: int
    rejected_rows: int
    backlog_rows: int
    backlog_bytes: int


@dataclass(frozen=True, slots=True)
class _Unit:
    token: str
    version: int
    records: Sequence[TraceRecord]


class ClickHouseExporter:
    """Writes trace records to ClickHouse (see the module docstring for the contract).

    ``__init__`` is cheap (no I/O). ``start()`` blocks: it opens the spill log,
    connects, migrates and starts the background thread. ``export``,
    ``force_flush`` and ``shutdown`` never raise. Counters are plain attributes
    (monotonic, rows) and gauges are properties; ``state()`` has both.
    """

    name = "clickhouse"
    durable: Literal[True] = True

    def __init__(
        self,
        config: ClickHouseConfig | None = None,
        *,
        store: ClickHouseStore | None = None,
        **options: Any,
    ) -> None:
        if config is None:
            try:
                config = ClickHouseConfig(**options)
            except ValidationError as exc:
                raise ExporterConfigError(_validation_message(exc)) from None
        elif options:
            raise TypeError("pass either a ClickHouseConfig or keyword options, not both")
        self.config = config
        self.store = store if store is not None else ClickHouseStore(config)
        self.database = self.store.database
        self._spill: SpillLog | None = None
        self._dispatch_lock = threading.Lock()  # new units leave in order
        self._io_lock = self.store.lock  # one use of the client at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._retry_delay = config.retry_initial_s
        self._next_attempt = 0.0
        self._last_fail_log = 0.0
        # counters, rows unless named otherwise
        self.inserted_rows = 0  # rows of units accepted by ClickHouse (direct or replayed)
        self.spilled_rows = 0  # rows appended to the spill log
        self.replayed_rows = 0  # rows replayed from the spill log into ClickHouse
        self.dropped_rows = 0  # rows lost: spill full/disabled/failed
        self.rejected_rows = 0  # rows of units that could not be encoded or decoded
        self.insert_failures = 0  # failed insert attempts (units)
        self.last_error: str | None = None  # "DatabaseError code=60 UNKNOWN_TABLE", no text

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, data_dir: Path) -> ClickHouseExporter:
        """Build from the settings file's ``options`` (``{data_dir}`` is substituted)."""
        opts: dict[str, Any] = {
            k: (v.replace("{data_dir}", str(data_dir)) if isinstance(v, str) else v)
            for k, v in options.items()
        }
        opts.setdefault("data_dir", data_dir)
        return cls(**opts)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Open the spill log, connect, migrate, start the writer thread. Blocks.

        Raises :class:`ExporterStartError` (or a subclass): embedded path locked or
        already used at another path, migrations failing, spill directory unusable,
        and, with ``require_at_start``, a server that does not answer. A server that
        does not answer otherwise only delays: records spill until it does.
        """
        if self._started:
            return
        cfg = self.config
        if cfg.is_embedded and cfg.embedded_path is not None:
            # a second process on the same data dir: name the chDB directory it holds,
            # not the spill directory that happens to be locked first
            check_embedded_free(cfg.embedded_path)
        if cfg.spill:
            spill = SpillLog(
                cfg.effective_spill_dir,
                max_bytes=cfg.spill_max_bytes,
                segment_bytes=cfg.spill_segment_bytes,
                fsync_every_s=cfg.spill_fsync_every_s,
                fsync_every_n=cfg.spill_fsync_every_n,
            )
            try:
                spill.open()
            except SpillError as exc:
                raise ExporterStartError(str(exc)) from exc
            self._spill = spill
        try:
            self._open_backend()
        except StorageUnavailableError as exc:
            if cfg.require_at_start or cfg.is_embedded or self._spill is None:
                self._close_resources()
                raise
            logger.warning("%s; records will spill to %s until it answers",
                           exc, cfg.effective_spill_dir)
            self._schedule_retry()
        except ExporterStartError:
            self._close_resources()
            raise
        self._started = True
        self._thread = threading.Thread(
            target=self._run, name="railwatch-clickhouse", daemon=True
        )
        self._thread.start()
        if self._spill is not None and not self._spill.is_empty():
            self._wake.set()

    def _open_backend(self) -> None:
        self.store.open()
        self._retry_delay = self.config.retry_initial_s

    @property
    def _ready(self) -> bool:
        return self.store.ready

    def batch_preference(self) -> BatchPreference:
        """Feed me ``insert_max_rows`` rows at a time, ``insert_max_age_s`` apart."""
        return BatchPreference(self.config.insert_max_rows, self.config.insert_max_age_s)

    def export(self, batch: Sequence[TraceRecord]) -> ExportResult:
        """Insert ``batch`` (or spill it to disk). Never raises.

        Blocks for the insert (or the spill append) in the calling worker thread.
        """
        if not batch:
            return ExportResult.SUCCESS
        if self._closed:
            self._drop(len(batch), "the exporter is shut down")
            return ExportResult.FAILURE
        if not self._started:
            try:
                self.start()
            except Exception as exc:  # noqa: BLE001 - export must not raise
                self._drop(len(batch), f"start failed ({type(exc).__name__})")
                return ExportResult.FAILURE
        return ExportResult.SUCCESS if self._dispatch(batch) else ExportResult.FAILURE

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Try to drain the spill log now.

        ``True`` when nothing is left waiting in the spill log. Blocks up to about
        ``timeout_s`` (an insert already running is not interrupted).
        """
        deadline = time.monotonic() + timeout_s
        try:
            if self._ready and self._spill is not None:
                self._replay(deadline)
            if self._spill is not None:
                self._spill.sync()
        except Exception as exc:  # noqa: BLE001 - must not raise
            logger.error("clickhouse force_flush failed: %s", describe_error(exc))
            return False
        return self._spill is None or self._spill.is_empty()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop the thread, try to drain the spill log, close. Never raises.

        A backlog left in the spill log is replayed by the next exporter started on
        the same spill directory.
        """
        if self._closed:
            return
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        try:
            if self._ready and self._spill is not None and not self._spill.is_empty():
                self._replay(deadline)
        except Exception as exc:  # noqa: BLE001
            logger.error("clickhouse shutdown flush failed: %s", describe_error(exc))
        self._closed = True
        backlog = self._spill.backlog_rows if self._spill is not None else 0
        if backlog:
            logger.warning("clickhouse exporter stopped with %d rows in the spill log %s; "
                           "they replay at the next start", backlog,
                           self.config.effective_spill_dir)
        self._close_resources()

    def _close_resources(self) -> None:
        with self._io_lock:
            if self._spill is not None:
                self._spill.close()
        self.store.close()

    # -- gauges and state --------------------------------------------------------------

    @property
    def backlog_bytes(self) -> int:
        return self._spill.backlog_bytes if self._spill is not None else 0

    @property
    def backlog_rows(self) -> int:
        return self._spill.backlog_rows if self._spill is not None else 0

    @property
    def ready(self) -> bool:
        return self._ready

    def snapshot(self) -> ClickHouseSnapshot:
        return ClickHouseSnapshot(
            ready=self._ready,
            inserted_rows=self.inserted_rows,
            insert_failures=self.insert_failures,
            spilled_rows=self.spilled_rows,
            replayed_rows=self.replayed_rows,
            dropped_rows=self.dropped_rows,
            rejected_rows=self.rejected_rows,
            backlog_rows=self.backlog_rows,
            backlog_bytes=self.backlog_bytes,
        )

    def state(self) -> dict[str, Any]:
        """JSON-able status for ``/readyz``; holds no secret and no text."""
        snap = self.snapshot()
        return {
            "name": self.name,
            "dsn": self.config.redacted_dsn(),
            "database": self.database,
            "embedded": self.config.is_embedded,
            **{f: getattr(snap, f) for f in snap.__slots__},
            "spill_dir": str(self.config.effective_spill_dir) if self.config.spill else None,
            "last_error": self.last_error,
        }

    # -- writer ------------------------------------------------------------------------

    def _dispatch(self, records: Sequence[TraceRecord]) -> bool:
        """Insert or spill ``records`` as units; ``False`` if rows were dropped."""
        ok = True
        with self._dispatch_lock:
            step = self.config.insert_max_rows
            for i in range(0, len(records), step):
                unit = _Unit(uuid.uuid4().hex, time.time_ns() // 1000, records[i : i + step])
                ok = self._dispatch_unit(unit) and ok
        return ok

    def _dispatch_unit(self, unit: _Unit) -> bool:
        spill = self._spill
        if not self._ready or (spill is not None and not spill.is_empty()):
            if spill is None:
                self._drop(len(unit.records), "ClickHouse is not available and spill is off")
                return False
            return self._spill_unit(unit)
        with self._io_lock:
            if spill is not None and not spill.is_empty():  # a replay failed meanwhile
                return self._spill_unit(unit)
            try:
                self._insert(unit)
            except _POISON as exc:
                self._reject(len(unit.records), exc)
                return False
            except Exception as exc:  # noqa: BLE001 - the backend failing, in any way
                self._note_failure(exc)
                if spill is None:
                    self._drop(len(unit.records), "the insert failed and spill is off")
                    return False
                return self._spill_unit(unit)
            self.inserted_rows += len(unit.records)
        return True

    def _insert(self, unit: _Unit) -> None:
        client = self.store.client
        if client is None:
            raise ConnectionError("no ClickHouse client")
        traces, findings = build_rows(
            unit.records,
            version=unit.version,
            store_text=self.config.store_text,
            prices=self.config.prices,
        )
        # never stopped half-way: the *_1m views are fed by these inserts
        settings = {"insert_deduplication_token": unit.token, "insert_deduplicate": 1, **UNBOUNDED}
        client.insert(f"{self.database}.traces", traces, column_names=TRACE_NAMES,
                      column_type_names=TRACE_TYPES, settings=settings)
        if findings:
            client.insert(f"{self.database}.findings", findings, column_names=FINDING_NAMES,
                          column_type_names=FINDING_TYPES, settings=settings)

    def _spill_unit(self, unit: _Unit) -> bool:
        assert self._spill is not None
        try:
            payload = self._encode(unit)
        except _POISON as exc:
            self._reject(len(unit.records), exc)
            return False
        if self._spill.append(payload, len(unit.records)):
            self.spilled_rows += len(unit.records)
            self._wake.set()
            return True
        self.dropped_rows += len(unit.records)  # the spill log counted and logged it
        return False

    def _encode(self, unit: _Unit) -> bytes:
        records = []
        for r in unit.records:
            d = r.as_dict()
            if not self.config.store_text:  # what may not be stored is not written to disk
                d["prompt_text"] = d["output_text"] = None
                d["text_masked"] = False
            records.append(d)
        return orjson.dumps(
            {"format": _SPILL_FORMAT, "token": unit.token, "version": unit.version,
             "records": records}
        )

    @staticmethod
    def _decode(payload: bytes) -> _Unit:
        data = orjson.loads(payload)
        if data.get("format") != _SPILL_FORMAT:
            raise ValueError(f"unknown spill entry format {data.get('format')!r}")
        return _Unit(str(data["token"]), int(data["version"]),
                     [record_from_dict(d) for d in data["records"]])

    def _drop(self, rows: int, why: str) -> None:
        self.dropped_rows += rows
        logger.error("clickhouse exporter dropped %d rows: %s (%d dropped in total)",
                     rows, why, self.dropped_rows)

    def _reject(self, rows: int, exc: BaseException) -> None:
        self.rejected_rows += rows
        logger.error("clickhouse exporter rejected a unit of %d rows it cannot encode (%s)",
                     rows, type(exc).__name__)

    def _note_failure(self, exc: BaseException) -> None:
        self.insert_failures += 1
        self.last_error = describe_error(exc)
        self._schedule_retry()
        now = time.monotonic()
        if now - self._last_fail_log >= _LOG_INTERVAL_S:
            self._last_fail_log = now
            logger.warning("ClickHouse insert into %s failed (%s); spilling, next try in "
                           "%.1f s", self.database, self.last_error, self._retry_delay)

    def _schedule_retry(self) -> None:
        self._next_attempt = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self.config.retry_max_s)

    # -- background thread -------------------------------------------------------------

    def _run(self) -> None:
        cfg = self.config
        while not self._stop.is_set():
            now = time.monotonic()
            waits = [cfg.insert_max_age_s, 1.0]
            if self._next_attempt > now:
                waits.append(self._next_attempt - now)
            self._wake.wait(max(0.01, min(waits)))
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._tick()
            except Exception as exc:  # noqa: BLE001 - the thread must survive anything
                # no traceback: a driver message can quote the data of a failed insert
                logger.error("clickhouse writer thread error: %s", describe_error(exc))

    def _tick(self) -> None:
        now = time.monotonic()
        if not self._ready and now >= self._next_attempt:
            try:
                self._open_backend()
                logger.info("ClickHouse at %s answers again", self.config.redacted_dsn())
            except ExporterStartError as exc:
                self.last_error = str(exc)
                self._schedule_retry()
        spill = self._spill
        if spill is not None:
            if self._ready and now >= self._next_attempt and not spill.is_empty():
                self._replay(None)
            spill.sync_if_due()

    def _replay(self, deadline: float | None) -> None:
        """Insert spill entries oldest first until empty, a failure, or the deadline."""
        spill = self._spill
        assert spill is not None
        while deadline is None or time.monotonic() < deadline:
            if deadline is None and self._stop.is_set():
                return
            with self._io_lock:
                if self.store.client is None:
                    return
                entry = spill.peek()
                if entry is None:
                    self._retry_delay = self.config.retry_initial_s
                    return
                try:
                    unit = self._decode(entry.payload)
                except (ValueError, KeyError, TypeError) as exc:
                    spill.ack(entry)
                    self._reject(entry.rows, exc)
                    continue
                try:
                    self._insert(unit)
                except _POISON as exc:
                    spill.ack(entry)
                    self._reject(entry.rows, exc)
                    continue
                except Exception as exc:  # noqa: BLE001
                    self._note_failure(exc)
                    return
                # counted before the ack, so backlog_rows == 0 implies the counts are final
                self.replayed_rows += entry.rows
                self.inserted_rows += entry.rows
                spill.ack(entry)
            self._retry_delay = self.config.retry_initial_s


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err.get("loc", ())) or "options"
        parts.append(f"'{key}': {err.get('msg', 'invalid')}")
    return "invalid clickhouse exporter options: " + "; ".join(parts)
