"""Durable spill log: a bounded, append-only FIFO of opaque entries on local disk.

An exporter whose backend is down appends each undeliverable batch here and
replays the entries, oldest first, once the backend answers again, also after a
restart of the process. The log knows nothing about what an entry holds: it
stores ``bytes`` plus a row count (for the backlog metric), and hands them back
in the order they were appended.

Layout of ``directory``::

    .lock                      flock()ed while a SpillLog has the directory open
    cursor.json                {"segment": N, "offset": bytes}: first unacknowledged entry
    0000000000000001.seg       segment files, appended in order, never rewritten
    0000000000000002.seg       ...

Entry format (little-endian): a 16-byte header ``magic b"RWS1" | length u32 |
rows u32 | crc32 u32`` followed by ``length`` payload bytes; the CRC covers
``length | rows | payload``. Each entry is written with a single ``write(2)``
on an unbuffered descriptor, so a reader in the same process never sees half of
it, and a crash leaves at most one partial entry at the end of the last segment.

Guarantees and limits:

- *Order*: :meth:`peek` always returns the oldest unacknowledged entry; entries
  come back in append order across segments and across restarts.
- *At least once*: an entry is gone only after :meth:`ack`. The cursor is
  written (write + rename) on every ack and fsynced on the same cadence as the
  data, so a power loss may replay an entry whose ack was lost. Consumers make
  replays idempotent (the ClickHouse exporter uses insert deduplication tokens).
- *Durability*: data is ``fsync``ed every ``fsync_every_n`` appends and/or
  every ``fsync_every_s`` seconds (checked on append and by :meth:`sync_if_due`),
  and on :meth:`sync` / :meth:`close`. A process crash loses nothing written; a
  power loss may lose what was not yet fsynced.
- *Truncated tail*: on open the last segment is verified entry by entry and cut
  at the first incomplete or corrupt entry (counted in ``truncated_bytes``).
  A CRC mismatch inside an older segment skips the rest of that segment
  (counted in ``corrupt_entries``); a length prefix cannot resynchronise.
- *Bounded*: the segment files never exceed ``max_bytes`` together. An append
  that would pass the bound is refused (the *newest* data is dropped, so the
  log stays a gap-free prefix of what failed); refusals are counted in
  ``dropped_entries`` / ``dropped_rows`` and logged, rate-limited, without content.
- *One process*: the directory is locked with ``flock``; a second process (or a
  second SpillLog in this process) opening it gets :class:`SpillError`.

Thread safety: every public method takes one internal lock, so appends from one
thread and peek/ack from another are safe. Methods block on disk I/O only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from exporters.errors import SpillError

logger = logging.getLogger(__name__)

MAGIC = b"RWS1"
_HEADER = struct.Struct("<4sIII")  # magic, length, rows, crc32(length|rows|payload)
HEADER_SIZE = _HEADER.size
_LENGTH_ROWS = struct.Struct("<II")
_SEGMENT_SUFFIX = ".seg"
_CURSOR = "cursor.json"
_LOCK = ".lock"
_DROP_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class SpillEntry:
    """One entry handed out by :meth:`SpillLog.peek`; pass it back to :meth:`SpillLog.ack`."""

    payload: bytes
    rows: int
    segment: int
    offset: int
    next_offset: int


@dataclass(slots=True)
class SpillStats:
    """Monotonic counters since this SpillLog was opened (backlog gauges are properties)."""

    appended_entries: int = 0
    appended_rows: int = 0
    acked_entries: int = 0
    acked_rows: int = 0
    dropped_entries: int = 0  # refused: the bound was reached or the disk failed
    dropped_rows: int = 0
    corrupt_entries: int = 0  # CRC or header failures found while reading
    truncated_bytes: int = 0  # partial tail cut off at open
    fsyncs: int = 0


@dataclass(slots=True)
class _Segment:
    seq: int
    size: int  # bytes of valid entries (the readable end)
    rows: int  # rows in entries not yet acknowledged


def _crc(length: int, rows: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_LENGTH_ROWS.pack(length, rows))) & 0xFFFFFFFF


def encode_entry(payload: bytes, rows: int) -> bytes:
    """Header + payload as written to a segment (exposed for tests and tools)."""
    return _HEADER.pack(MAGIC, len(payload), rows, _crc(len(payload), rows, payload)) + payload


class SpillLog:
    """A bounded FIFO of byte entries in segment files (see the module docstring).

    ``max_bytes`` bounds the segment files together; ``segment_bytes`` is the size
    at which a new segment starts; ``fsync_every_n`` (0: off) and
    ``fsync_every_s`` (0: off) set the fsync cadence. Call :meth:`open` before
    use; it may raise :class:`SpillError`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 64 << 20,
        fsync_every_s: float = 1.0,
        fsync_every_n: int = 0,
    ) -> None:
        if max_bytes <= HEADER_SIZE or segment_bytes <= HEADER_SIZE:
            raise ValueError("max_bytes and segment_bytes must exceed the 16-byte entry header")
        if fsync_every_s < 0 or fsync_every_n < 0:
            raise ValueError("fsync_every_s and fsync_every_n must be >= 0")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_every_s = fsync_every_s
        self.fsync_every_n = fsync_every_n
        self.stats = SpillStats()
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []  # oldest first; the last one is being written
        self._cursor_offset = 0  # into self._segments[0]
        self._fd: int | None = None  # write descriptor of the last segment
        self._read_fds: dict[int, int] = {}
        self._lock_fd: int | None = None
        self._unsynced = 0
        self._cursor_dirty = False
        self._last_sync = time.monotonic()
        self._last_drop_log = 0.0
        self._drops_since_log = 0

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory, recover the cursor and segments, repair a torn tail."""
        with self._lock:
            if self._lock_fd is not None:
                return
            try:
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                lock_fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise SpillError(f"cannot open spill directory {self.directory}: {exc}") from exc
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(lock_fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise SpillError(
                        f"spill directory {self.directory} is in use by another exporter or "
                        "process; give each sidecar process its own spill directory"
                    ) from None
                raise SpillError(f"cannot lock spill directory {self.directory}: {exc}") from exc
            self._lock_fd = lock_fd
            try:
                self._recover()
            except OSError as exc:
                self._release()
                raise SpillError(f"cannot read spill directory {self.directory}: {exc}") from exc

    def close(self) -> None:
        """fsync and release the directory. Safe to call twice; never raises."""
        with self._lock:
            if self._lock_fd is None:
                return
            try:
                self._sync_locked()
            except OSError as exc:
                logger.error("spill log %s: fsync at close failed: %s", self.directory, exc)
            self._release()

    def _release(self) -> None:
        for fd in [self._fd, *self._read_fds.values(), self._lock_fd]:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = None
        self._read_fds.clear()
        self._lock_fd = None
        self._segments = []

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- gauges ------------------------------------------------------------------------

    @property
    def backlog_bytes(self) -> int:
        """Bytes of segment files on disk, consumed head included (what the bound counts)."""
        with self._lock:
            return self._disk_bytes()

    @property
    def backlog_rows(self) -> int:
        with self._lock:
            return sum(s.rows for s in self._segments)

    @property
    def backlog_entries(self) -> int:
        """Unacknowledged entries (counted by walking headers: O(entries), for tests/tools)."""
        with self._lock:
            return sum(1 for _ in self._walk_unacked())

    def is_empty(self) -> bool:
        with self._lock:
            return self._is_empty_locked()

    def _is_empty_locked(self) -> bool:
        if not self._segments:
            return True
        if len(self._segments) == 1:
            return self._cursor_offset >= self._segments[0].size
        return False

    def _disk_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    # -- writing -----------------------------------------------------------------------

    def append(self, payload: bytes, rows: int) -> bool:
        """Append one entry. ``False`` (counted as dropped, logged) when the bound is
        reached or the disk write failed; never raises except when not open."""
        data = encode_entry(payload, rows)
        with self._lock:
            if self._lock_fd is None:
                raise SpillError("spill log is not open")
            if self._disk_bytes() + len(data) > self.max_bytes:
                self._count_drop(rows, "the spill log is full")
                return False
            try:
                active = self._segments[-1]
                if active.size > 0 and active.size + len(data) > self.segment_bytes:
                    self._roll_locked()
                    active = self._segments[-1]
                assert self._fd is not None
                self._write_all(self._fd, data, active.size)
            except OSError as exc:
                self._count_drop(rows, f"a spill write failed ({exc.strerror or exc})")
                return False
            active.size += len(data)
            active.rows += rows
            self.stats.appended_entries += 1
            self.stats.appended_rows += rows
            self._unsynced += 1
            self._sync_if_due_locked()
            return True

    def _write_all(self, fd: int, data: bytes, at: int) -> None:
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                n = os.write(fd, view[written:])
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
                written += n
        except OSError:
            # leave no partial entry behind: the next append must start on a boundary
            try:
                os.ftruncate(fd, at)
                os.lseek(fd, at, os.SEEK_SET)
            except OSError:
                pass
            raise

    def _count_drop(self, rows: int, why: str) -> None:
        self.stats.dropped_entries += 1
        self.stats.dropped_rows += rows
        self._drops_since_log += rows
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            logger.error(
                "spill log %s: %s; dropped %d rows since the last report (%d in total, "
                "bound %d bytes)",
                self.directory, why, self._drops_since_log, self.stats.dropped_rows,
                self.max_bytes,
            )
            self._last_drop_log = now
            self._drops_since_log = 0

    def _roll_locked(self) -> None:
        """Seal the active segment and start the next one."""
        if self._fd is not None:
            os.fsync(self._fd)
            self.stats.fsyncs += 1
            os.close(self._fd)
            self._fd = None
        self._unsynced = 0
        seq = self._segments[-1].seq + 1 if self._segments else 1
        self._open_for_append(seq, create=True)
        self._segments.append(_Segment(seq, 0, 0))
        self._fsync_dir()

    def _open_for_append(self, seq: int, *, create: bool) -> None:
        flags = os.O_WRONLY | os.O_APPEND | (os.O_CREAT | os.O_EXCL if create else 0)
        self._fd = os.open(self._path(seq), flags, 0o600)

    def sync(self) -> None:
        """fsync data and cursor now. May raise OSError."""
        with self._lock:
            self._sync_locked()

    def sync_if_due(self) -> None:
        """fsync when the time cadence says so (call periodically from a worker)."""
        with self._lock:
            try:
                self._sync_if_due_locked()
            except OSError as exc:
                logger.error("spill log %s: fsync failed: %s", self.directory, exc)

    def _sync_if_due_locked(self) -> None:
        if not (self._unsynced or self._cursor_dirty):
            return
        due = (self.fsync_every_n and self._unsynced >= self.fsync_every_n) or (
            self.fsync_every_s and time.monotonic() - self._last_sync >= self.fsync_every_s
        )
        if due:
            self._sync_locked()

    def _sync_locked(self) -> None:
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
            self.stats.fsyncs += 1
        if self._cursor_dirty:
            try:
                fd = os.open(self.directory / _CURSOR, os.O_RDONLY)
            except FileNotFoundError:
                pass
            else:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._fsync_dir()
            self._cursor_dirty = False
        self._unsynced = 0
        self._last_sync = time.monotonic()

    # -- reading -----------------------------------------------------------------------

    def peek(self) -> SpillEntry | None:
        """The oldest unacknowledged entry, or ``None`` when the log is empty."""
        with self._lock:
            if self._lock_fd is None:
                raise SpillError("spill log is not open")
            while self._segments:
                head = self._segments[0]
                if self._cursor_offset >= head.size:
                    if len(self._segments) == 1:
                        return None
                    self._drop_head_locked()
                    continue
                entry = self._read_entry(head, self._cursor_offset)
                if entry is not None:
                    return entry
                # corrupt: nothing after this point in the segment can be trusted
                self.stats.corrupt_entries += 1
                logger.error(
                    "spill log %s: corrupt entry in segment %d at offset %d; skipping the "
                    "remaining %d bytes (%d rows) of that segment",
                    self.directory, head.seq, self._cursor_offset,
                    head.size - self._cursor_offset, head.rows,
                )
                head.rows = 0
                if len(self._segments) == 1:
                    # the active segment: start a fresh one so appends stay readable
                    head.size = self._cursor_offset
                    self._roll_locked()
                self._drop_head_locked()
            return None

    def _read_entry(self, seg: _Segment, offset: int) -> SpillEntry | None:
        fd = self._read_fd(seg.seq)
        header = os.pread(fd, HEADER_SIZE, offset)
        parsed = self._parse_header(header, seg.size - offset)
        if parsed is None:
            return None
        length, rows, crc = parsed
        payload = os.pread(fd, length, offset + HEADER_SIZE)
        if len(payload) != length or _crc(length, rows, payload) != crc:
            return None
        return SpillEntry(payload, rows, seg.seq, offset, offset + HEADER_SIZE + length)

    @staticmethod
    def _parse_header(header: bytes, available: int) -> tuple[int, int, int] | None:
        if len(header) < HEADER_SIZE:
            return None
        magic, length, rows, crc = _HEADER.unpack(header)
        if magic != MAGIC or HEADER_SIZE + length > available:
            return None
        return length, rows, crc

    def ack(self, entry: SpillEntry) -> None:
        """Mark ``entry`` (the one :meth:`peek` returned) as delivered."""
        with self._lock:
            if not self._segments:
                raise SpillError("spill log is not open")
            head = self._segments[0]
            if entry.segment != head.seq or entry.offset != self._cursor_offset:
                raise ValueError("ack out of order: acknowledge the entry peek() returned")
            self._cursor_offset = entry.next_offset
            head.rows = max(0, head.rows - entry.rows)
            self.stats.acked_entries += 1
            self.stats.acked_rows += entry.rows
            self._settle_head_locked()

    def _settle_head_locked(self) -> None:
        """After acknowledging: drop the head segment once it is consumed (starting a
        new one first when it was the only one, so the consumed file can go), else
        persist the cursor."""
        if self._cursor_offset >= self._segments[0].size:
            if len(self._segments) == 1:
                self._roll_locked()
            self._drop_head_locked()
        else:
            self._write_cursor()

    def entries(self) -> list[SpillEntry]:
        """Every unacknowledged entry, oldest first, without acknowledging any (a
        journal replays them at start-up and acknowledges them later with
        :meth:`discard`). Reads the whole backlog into memory: bounded by ``max_bytes``."""
        with self._lock:
            if self._lock_fd is None:
                raise SpillError("spill log is not open")
            out: list[SpillEntry] = []
            by_seq = {seg.seq: seg for seg in self._segments}
            for seq, offset, _rows in self._walk_unacked():
                entry = self._read_entry(by_seq[seq], offset)
                if entry is None:
                    break  # corrupt: peek() reports and skips it
                out.append(entry)
            return out

    def discard(self, count: int) -> int:
        """Acknowledge the ``count`` oldest entries at once (one cursor write, no payload
        reads); returns how many there were. For consumers that track entries by count."""
        with self._lock:
            if self._lock_fd is None:
                raise SpillError("spill log is not open")
            done = 0
            while done < count and self._segments:
                head = self._segments[0]
                if self._cursor_offset >= head.size:
                    if len(self._segments) == 1:
                        break
                    self._drop_head_locked()
                    continue
                parsed = self._parse_header(
                    os.pread(self._read_fd(head.seq), HEADER_SIZE, self._cursor_offset),
                    head.size - self._cursor_offset,
                )
                if parsed is None:  # corrupt: nothing after it in this segment is readable
                    self._cursor_offset = head.size
                    head.rows = 0
                    continue
                length, rows, _crc32 = parsed
                self._cursor_offset += HEADER_SIZE + length
                head.rows = max(0, head.rows - rows)
                self.stats.acked_entries += 1
                self.stats.acked_rows += rows
                done += 1
            if done:
                self._settle_head_locked()
            return done

    def _drop_head_locked(self) -> None:
        head = self._segments.pop(0)
        fd = self._read_fds.pop(head.seq, None)
        if fd is not None:
            os.close(fd)
        self._cursor_offset = 0
        # cursor first: a crash between the two leaves a stale file that open() removes
        self._write_cursor()
        try:
            os.unlink(self._path(head.seq))
        except FileNotFoundError:
            pass

    def _read_fd(self, seq: int) -> int:
        fd = self._read_fds.get(seq)
        if fd is None:
            fd = os.open(self._path(seq), os.O_RDONLY)
            self._read_fds[seq] = fd
        return fd

    def _walk_unacked(self) -> Any:
        for i, seg in enumerate(self._segments):
            offset = self._cursor_offset if i == 0 else 0
            fd = self._read_fd(seg.seq)
            while offset < seg.size:
                parsed = self._parse_header(os.pread(fd, HEADER_SIZE, offset), seg.size - offset)
                if parsed is None:
                    break
                yield seg.seq, offset, parsed[1]
                offset += HEADER_SIZE + parsed[0]

    # -- files -------------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:016d}{_SEGMENT_SUFFIX}"

    def _write_cursor(self) -> None:
        head = self._segments[0].seq if self._segments else 0
        tmp = self.directory / (_CURSOR + ".tmp")
        data = json.dumps({"segment": head, "offset": self._cursor_offset}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, self.directory / _CURSOR)
        self._cursor_dirty = True  # made durable on the fsync cadence (see _sync_locked)

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_cursor(self) -> tuple[int, int]:
        try:
            raw = json.loads((self.directory / _CURSOR).read_bytes())
            return int(raw["segment"]), int(raw["offset"])
        except FileNotFoundError:
            return 0, 0
        except (ValueError, KeyError, TypeError):
            logger.error("spill log %s: unreadable cursor; replaying from the oldest segment",
                         self.directory)
            return 0, 0

    def _recover(self) -> None:
        cursor_seq, cursor_offset = self._read_cursor()
        seqs = sorted(
            int(p.name[: -len(_SEGMENT_SUFFIX)])
            for p in self.directory.iterdir()
            if p.name.endswith(_SEGMENT_SUFFIX) and p.name[: -len(_SEGMENT_SUFFIX)].isdigit()
        )
        segments: list[_Segment] = []
        for seq in seqs:
            if seq < cursor_seq:  # fully consumed before a crash; its unlink was lost
                os.unlink(self._path(seq))
                continue
            start = cursor_offset if seq == cursor_seq else 0
            is_last = seq == seqs[-1]
            segments.append(self._scan(seq, start, verify=is_last))
        self._segments = segments
        self._cursor_offset = cursor_offset if segments and segments[0].seq == cursor_seq else 0
        if segments and self._cursor_offset > segments[0].size:
            self._cursor_offset = segments[0].size
        if not segments or segments[-1].size >= self.segment_bytes:
            seq = segments[-1].seq + 1 if segments else max(cursor_seq, 0) + 1
            self._open_for_append(seq, create=True)
            self._segments.append(_Segment(seq, 0, 0))
            self._fsync_dir()
        else:
            self._open_for_append(segments[-1].seq, create=False)
        if self._cursor_offset == 0 and self._segments[0].seq != cursor_seq:
            self._write_cursor()
        rows = sum(s.rows for s in self._segments)
        if rows:
            logger.info("spill log %s: %d rows (%d bytes) waiting for replay",
                        self.directory, rows, self._disk_bytes())

    def _scan(self, seq: int, start: int, *, verify: bool) -> _Segment:
        """Walk a segment's headers; cut the last segment at its first bad entry."""
        path = self._path(seq)
        size = path.stat().st_size
        rows = 0
        offset = 0
        fd = os.open(path, os.O_RDONLY)
        try:
            while offset < size:
                parsed = self._parse_header(os.pread(fd, HEADER_SIZE, offset), size - offset)
                if parsed is None:
                    break
                length, n, crc = parsed
                if verify:
                    payload = os.pread(fd, length, offset + HEADER_SIZE)
                    if _crc(length, n, payload) != crc:
                        break
                if offset >= start:
                    rows += n
                offset += HEADER_SIZE + length
        finally:
            os.close(fd)
        if offset < size:
            if verify:
                self.stats.truncated_bytes += size - offset
                logger.warning(
                    "spill log %s: cutting %d bytes of a torn or corrupt tail off segment %d",
                    self.directory, size - offset, seq,
                )
                with open(path, "r+b") as f:
                    f.truncate(offset)
                    os.fsync(f.fileno())
                size = offset
            else:
                # a sealed segment with a bad header: readable up to it, the rest is lost
                self.stats.corrupt_entries += 1
                logger.error("spill log %s: segment %d unreadable after offset %d",
                             self.directory, seq, offset)
                size = offset
        return _Segment(seq, size, rows)
