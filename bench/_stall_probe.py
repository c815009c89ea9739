"""Run ``railwatch serve`` with a stall probe: event-loop lag, GC pauses, stall stacks.

Used by ``bench_load.py --profile``; not a product module. Three instruments, all in
this process, reported as JSON to ``$RAILWATCH_STALL_REPORT`` when the server stops:

- **loop lag**: a task sleeping 1 ms notes every wake-up later than 5 ms past due;
- **GC pauses**: ``gc.callbacks`` time every collection, by generation;
- **stall stacks**: a watchdog thread wakes every 2 ms; when the loop's heartbeat is
  older than 10 ms it samples the event-loop thread's stack (so counts are in units of
  about 2 ms of stall). When the watchdog itself wakes more than 5 ms late, the GIL
  was held elsewhere: it notes the other threads' innermost frames at that moment.
- **threads**: CPU time and time spent waiting for a CPU (run queue) per thread, from
  ``/proc/self/task/*/schedstat``: run-queue waits are the machine's, not the GIL's;
- **growth**: ``SIGUSR1`` takes a baseline of live objects by type; the report gives
  the types that grew since, and every container holding over 5,000 entries with the
  class and attribute that own it (what per-user state is kept).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from sidecar import cli

_beat = [time.perf_counter()]
_lags: list[float] = []
_gc: dict[int, list[float]] = collections.defaultdict(list)
_gc_started = [0.0]
_stall_stacks: collections.Counter[str] = collections.Counter()
_gil_holders: collections.Counter[str] = collections.Counter()
_gil_late: list[float] = []
_stop = threading.Event()
_baseline: collections.Counter[str] = collections.Counter()


def _type_counts() -> collections.Counter[str]:
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


def _take_baseline() -> None:
    _baseline.clear()
    _baseline.update(_type_counts())


def _big_containers(min_len: int = 5000) -> list[tuple[str, int]]:
    """(owner class.attribute, len) of every large dict/set/list/deque held by an object."""
    found = []
    for obj in gc.get_objects():
        if not isinstance(obj, (dict, set, list, collections.deque)) or len(obj) < min_len:
            continue
        owner = "?"
        for ref in gc.get_referrers(obj):
            if isinstance(ref, dict):
                name = next((k for k, v in ref.items() if v is obj), None)
                holders = [h for h in gc.get_referrers(ref) if getattr(h, "__dict__", None) is ref]
                if name is not None and holders:
                    owner = f"{type(holders[0]).__name__}.{name}"
                    break
            elif hasattr(ref, "__slots__"):
                owner = f"{type(ref).__name__}.<slot>"
        found.append((f"{owner} ({type(obj).__name__})", len(obj)))
    return sorted(found, key=lambda x: -x[1])[:15]


def _where(frame: FrameType | None, depth: int = 5) -> str:
    parts = []
    while frame is not None and len(parts) < depth:
        code = frame.f_code
        parts.append(f"{os.path.basename(code.co_filename)}:{code.co_name}")
        frame = frame.f_back
    return " < ".join(parts)


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
    else:
        _gc[int(info["generation"])].append((time.perf_counter() - _gc_started[0]) * 1000)


async def _monitor() -> None:
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        _beat[0] = now
        lag = now - t - 0.001
        if lag > 0.005:
            _lags.append(lag * 1000)


def _watchdog(loop_thread: int) -> None:
    me = threading.get_ident()
    while not _stop.is_set():
        t = time.perf_counter()
        time.sleep(0.002)
        now = time.perf_counter()
        frames = sys._current_frames()  # noqa: SLF001 - a profiler's job
        if now - t - 0.002 > 0.005:
            _gil_late.append((now - t - 0.002) * 1000)
            for ident, frame in frames.items():
                if ident not in (me, loop_thread):
                    _gil_holders[_where(frame, 2)] += 1
        if now - _beat[0] > 0.010:
            _stall_stacks[_where(frames.get(loop_thread), 6)] += 1


def _report() -> None:
    def summary(values: list[float]) -> dict[str, float]:
        values = sorted(values)
        if not values:
            return {"count": 0}
        return {"count": len(values), "total_ms": round(sum(values), 1),
                "p50_ms": round(values[len(values) // 2], 2), "max_ms": round(values[-1], 2)}

    threads = {}
    for thread in threading.enumerate():
        try:  # schedstat: ns on CPU, ns waiting for a CPU (run queue), time slices
            fields = open(f"/proc/self/task/{thread.native_id}/schedstat").read().split()
        except OSError:
            continue
        threads[thread.name] = {"cpu_s": round(int(fields[0]) / 1e9, 2),
                                "runqueue_wait_s": round(int(fields[1]) / 1e9, 2)}
    grown = _type_counts()
    grown.subtract(_baseline)
    doc = {
        "objects_grown_since_baseline": [(k, v) for k, v in grown.most_common(10) if v > 0]
        if _baseline else [],
        "large_containers": _big_containers(),
        "threads": threads,
        "loop_lag_over_5ms": summary(_lags),
        "gc_ms_by_generation": {str(g): summary(v) for g, v in sorted(_gc.items())},
        "stall_stacks": _stall_stacks.most_common(12),
        "gil_late_over_5ms": summary(_gil_late),
        "gil_other_threads": _gil_holders.most_common(8),
    }
    path = os.environ.get("RAILWATCH_STALL_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)


_original_wait = cli._wait_for_signal  # noqa: SLF001


async def _wait_with_probe() -> None:
    gc.callbacks.append(_on_gc)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _take_baseline)
    task = asyncio.create_task(_monitor())
    watchdog = threading.Thread(target=_watchdog, args=(threading.get_ident(),), daemon=True)
    watchdog.start()
    try:
        await _original_wait()
    finally:
        _stop.set()
        task.cancel()
        _report()


cli._wait_for_signal = _wait_with_probe  # noqa: SLF001

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
