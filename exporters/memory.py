"""In-memory exporter: keeps finished records in a bounded list (tests, debugging)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from exporters.base import ExportResult
from sidecar.record import TraceRecord


class MemoryExporter:
    """Stores the last ``max_records`` records; thread-safe; never fails."""

    name = "memory"

    def __init__(self, max_records: int = 10_000) -> None:
        self._records: deque[TraceRecord] = deque(maxlen=max_records)
        self._cond = threading.Condition()
        self._closed = False

    def export(self, batch: Sequence[TraceRecord]) -> ExportResult:
        if self._closed:
            return ExportResult.FAILURE
        with self._cond:
            self._records.extend(batch)
            self._cond.notify_all()
        return ExportResult.SUCCESS

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        self._closed = True

    @property
    def records(self) -> list[TraceRecord]:
        with self._cond:
            return list(self._records)

    def clear(self) -> None:
        with self._cond:
            self._records.clear()

    def wait_for(
        self, predicate: Callable[[list[TraceRecord]], bool], timeout_s: float = 5.0
    ) -> list[TraceRecord]:
        """Block until ``predicate(records)`` holds; returns the records or raises TimeoutError."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                records = list(self._records)
                if predicate(records):
                    return records
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met; {len(records)} records held")
                self._cond.wait(left)

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "records": len(self._records)}
