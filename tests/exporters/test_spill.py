"""The durable spill log: order, CRC, torn tails, bounds, restarts, a real process kill."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exporters.errors import SpillError
from exporters.spill import HEADER_SIZE, SpillLog, encode_entry

REPO = Path(__file__).resolve().parents[2]


def payload(i: int) -> bytes:
    return f"entry-{i:05d}-".encode() + bytes([i % 251]) * (i % 97)


def drain(log: SpillLog) -> list[bytes]:
    out = []
    while (entry := log.peek()) is not None:
        out.append(entry.payload)
        log.ack(entry)
    return out


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_order_across_segments_and_reopen(tmp_path):
    with SpillLog(tmp_path, segment_bytes=400, fsync_every_n=3) as log:
        for i in range(60):
            assert log.append(payload(i), rows=i % 5)
        assert len(segments(tmp_path)) > 5
        assert log.backlog_rows == sum(i % 5 for i in range(60))
        assert log.backlog_entries == 60
        assert log.stats.fsyncs >= 10
        first = [log.peek()]
        assert first[0] is not None and first[0].payload == payload(0)
        log.ack(first[0])
        for i in range(1, 20):
            entry = log.peek()
            assert entry is not None and entry.payload == payload(i)
            log.ack(entry)
    with SpillLog(tmp_path, segment_bytes=400) as log:
        assert log.backlog_entries == 40
        for i in range(60, 70):
            log.append(payload(i), rows=1)
        assert drain(log) == [payload(i) for i in range(20, 70)]
        assert log.is_empty() and log.backlog_rows == 0
        assert log.peek() is None
    assert len(segments(tmp_path)) == 1  # consumed segments are deleted


def test_entries_reads_without_ack_and_discard_acks_by_count(tmp_path):
    with SpillLog(tmp_path, segment_bytes=400) as log:
        for i in range(30):
            assert log.append(payload(i), rows=2)
        assert [e.payload for e in log.entries()] == [payload(i) for i in range(30)]
        assert log.backlog_entries == 30  # reading acknowledged nothing
        assert log.discard(12) == 12
        assert log.backlog_rows == 36 and log.stats.acked_rows == 24
    with SpillLog(tmp_path, segment_bytes=400) as log:  # the cursor moved for good
        assert [e.payload for e in log.entries()] == [payload(i) for i in range(12, 30)]
        assert log.discard(100) == 18
        assert log.is_empty() and log.entries() == []
        assert log.append(payload(99), rows=1)
        assert drain(log) == [payload(99)]
    assert len(segments(tmp_path)) == 1  # consumed segments are deleted


def test_peek_without_ack_returns_the_same_entry(tmp_path):
    with SpillLog(tmp_path) as log:
        log.append(b"a", 1)
        log.append(b"b", 1)
        first = log.peek()
        assert first is not None and log.peek() == first
        log.ack(first)
        with pytest.raises(ValueError, match="out of order"):
            log.ack(first)
        assert drain(log) == [b"b"]


def test_truncated_tail_is_cut_and_the_log_stays_usable(tmp_path):
    with SpillLog(tmp_path) as log:
        for i in range(5):
            log.append(payload(i), 1)
    seg = segments(tmp_path)[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as f:  # a crash in the middle of the last write
        f.truncate(size - 3)
    with SpillLog(tmp_path) as log:
        assert log.stats.truncated_bytes == HEADER_SIZE + len(payload(4)) - 3
        assert log.backlog_entries == 4
        log.append(payload(99), 1)
        assert drain(log) == [payload(i) for i in range(4)] + [payload(99)]


def test_half_written_header_is_cut(tmp_path):
    with SpillLog(tmp_path) as log:
        log.append(b"whole", 1)
    with open(segments(tmp_path)[-1], "ab") as f:
        f.write(encode_entry(b"partial", 1)[:7])
    with SpillLog(tmp_path) as log:
        assert log.stats.truncated_bytes == 7
        assert drain(log) == [b"whole"]


def test_crc_mismatch_in_the_tail_is_cut(tmp_path):
    with SpillLog(tmp_path) as log:
        log.append(b"good", 1)
        log.append(b"flipped", 1)
    seg = segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    with SpillLog(tmp_path) as log:
        assert drain(log) == [b"good"]
        assert log.stats.truncated_bytes == HEADER_SIZE + len(b"flipped")


def test_corruption_in_an_older_segment_skips_only_that_segment(tmp_path, caplog):
    with SpillLog(tmp_path, segment_bytes=100) as log:
        for i in range(12):
            log.append(f"p{i:02d}".ljust(40, ".").encode(), 1)
    segs = segments(tmp_path)
    assert len(segs) >= 3
    middle = segs[1]
    data = bytearray(middle.read_bytes())
    data[HEADER_SIZE + 2] ^= 0xFF  # the first entry's payload
    middle.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR), SpillLog(tmp_path, segment_bytes=100) as log:
        got = drain(log)
        assert log.stats.corrupt_entries == 1
    assert "corrupt entry" in caplog.text
    per_segment = 100 // (HEADER_SIZE + 40)  # whole entries fit; the next one rolls
    lost = {f"p{i:02d}" for i in range(per_segment, 2 * per_segment)}
    assert [g[:3].decode() for g in got] == [
        f"p{i:02d}" for i in range(12) if f"p{i:02d}" not in lost
    ]


def test_bound_refuses_appends_counts_and_logs_without_content(tmp_path, caplog):
    with caplog.at_level(logging.ERROR), SpillLog(tmp_path, max_bytes=1000,
                                                  segment_bytes=300) as log:
        accepted = [log.append(b"SECRET-TEXT" + bytes(40), rows=3) for _ in range(40)]
        assert accepted.count(True) == 1000 // (HEADER_SIZE + 51)
        assert log.stats.dropped_entries == accepted.count(False)
        assert log.stats.dropped_rows == 3 * accepted.count(False)
        assert log.backlog_bytes <= 1000
        assert sum(p.stat().st_size for p in segments(tmp_path)) <= 1000
        drain(log)  # space frees up once entries are replayed
        assert log.append(b"again", 1)
    assert "dropped" in caplog.text and "SECRET" not in caplog.text


def test_second_opener_is_refused(tmp_path):
    with SpillLog(tmp_path), pytest.raises(SpillError, match="in use"):
        SpillLog(tmp_path).open()
    SpillLog(tmp_path).open()  # released on close


def test_entries_written_by_a_killed_process_survive(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        from exporters.spill import SpillLog
        log = SpillLog({str(tmp_path)!r}, segment_bytes=500, fsync_every_s=0)
        log.open()
        for i in range(50):
            log.append(f"killed-{{i}}".encode(), 2)
        e = log.peek(); log.ack(e)
        os._exit(9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, timeout=60)
    assert proc.returncode == 9, proc.stderr[-2000:]
    with SpillLog(tmp_path, segment_bytes=500) as log:
        assert log.backlog_rows == 98
        assert drain(log) == [f"killed-{i}".encode() for i in range(1, 50)]


def test_crash_between_cursor_move_and_unlink_is_repaired(tmp_path):
    with SpillLog(tmp_path, segment_bytes=60) as log:
        for i in range(4):
            log.append(f"x{i}".ljust(30).encode(), 1)
        stale = segments(tmp_path)[0]
        data = stale.read_bytes()
        entry = log.peek()
        assert entry is not None
        log.ack(entry)
        log.ack(log.peek())  # type: ignore[arg-type]
    if not stale.exists():  # simulate the lost unlink
        stale.write_bytes(data)
    with SpillLog(tmp_path, segment_bytes=60) as log:
        assert [p.strip() for p in drain(log)] == [b"x2", b"x3"]


def test_invalid_arguments():
    with pytest.raises(ValueError):
        SpillLog("x", max_bytes=10)
    with pytest.raises(ValueError):
        SpillLog("x", fsync_every_s=-1)
    with pytest.raises(SpillError, match="not open"):
        SpillLog("x").append(b"", 0)
