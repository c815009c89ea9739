"""Where hand-offs and feedback live: two small blocking protocols, and a memory store.

Every method blocks (one query); async code calls them through
``asyncio.to_thread``. They raise whatever the backend raises; the service turns
that into a public 503 and logs only the error's type.

Implementations: :class:`sidecar.handoff.clickhouse.ClickHouseHandoffStore`
(the ``handoffs`` and ``feedback`` tables, through the exporter's client) and
:class:`MemoryHandoffStore` here (bounded, lost at restart) for sidecars without
ClickHouse, and for tests. This module imports no database driver.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Protocol

from sidecar.handoff.model import PENDING

PREFERENCE_KIND = "preference"


class HandoffStore(Protocol):
    def save_handoff(self, row: Mapping[str, Any]) -> None:
        """Insert or replace the whole row (``Handoff.to_row()``)."""

    def get_handoff(self, handoff_id: str) -> dict[str, Any] | None: ...

    def list_handoffs(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Rows of one status (or all), newest first."""
        ...

    def pending_backlog(self, max_scan: int) -> tuple[int, float | None]:
        """(pending hand-offs, the oldest one's ``created_at`` in epoch seconds or
        ``None`` with none), reading no text: the count caps at ``max_scan``, the
        oldest is exact."""
        ...

    def add_preference(
        self, *, trace_id: str, request_id: str | None, rejected: str, chosen: str,
        user: str | None,
    ) -> str:
        """Store a preference pair in ``feedback``; returns its id."""
        ...


class FeedbackStore(Protocol):
    def add_feedback(
        self, *, trace_id: str, kind: str, value: float, comment: str | None,
        corrected_answer: str | None, known_trace: bool, user: str | None,
        store_text: bool,
    ) -> str: ...

    def trace_exists(self, trace_id: str) -> bool: ...


class ReviewStore(HandoffStore, FeedbackStore, Protocol):
    """Both: what the sidecar keeps hand-offs and feedback in (ClickHouse or memory)."""


class MemoryHandoffStore:
    """In-process store (bounded: oldest rows go first). Thread-safe."""

    def __init__(self, max_rows: int = 10_000) -> None:
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._handoffs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.feedback: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.traces: set[str] = set()  # trace ids known to this store (tests, embedding)

    def save_handoff(self, row: Mapping[str, Any]) -> None:
        with self._lock:
            self._handoffs[str(row["id"])] = dict(row)
            while len(self._handoffs) > self.max_rows:
                self._handoffs.popitem(last=False)

    def get_handoff(self, handoff_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._handoffs.get(handoff_id)
            return dict(row) if row is not None else None

    def list_handoffs(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            rows = [dict(r) for r in self._handoffs.values()
                    if status is None or r.get("status") == status]
        rows.sort(key=lambda r: (r.get("created_at") or 0, r["id"]), reverse=True)
        return rows[:limit]

    def pending_backlog(self, max_scan: int) -> tuple[int, float | None]:
        with self._lock:
            created = [float(r["created_at"]) for r in self._handoffs.values()
                       if r.get("status") == PENDING and r.get("created_at") is not None]
        return min(len(created), max_scan), (min(created) if created else None)

    def add_preference(
        self, *, trace_id: str, request_id: str | None, rejected: str, chosen: str,
        user: str | None,
    ) -> str:
        return self._add({"trace_id": trace_id, "request_id": request_id,
                          "kind": PREFERENCE_KIND, "value": 1.0, "comment": rejected,
                          "corrected_answer": chosen, "known_trace": bool(trace_id),
                          "user": user})

    def add_feedback(
        self, *, trace_id: str, kind: str, value: float, comment: str | None,
        corrected_answer: str | None, known_trace: bool, user: str | None,
        store_text: bool,
    ) -> str:
        return self._add({"trace_id": trace_id, "request_id": None, "kind": kind,
                          "value": value, "comment": comment if store_text else None,
                          "corrected_answer": corrected_answer if store_text else None,
                          "known_trace": known_trace, "user": user})

    def trace_exists(self, trace_id: str) -> bool:
        with self._lock:
            return trace_id in self.traces

    def _add(self, row: dict[str, Any]) -> str:
        fid = uuid.uuid4().hex
        row["id"], row["created_at"] = fid, time.time()
        with self._lock:
            self.feedback[fid] = row
            while len(self.feedback) > self.max_rows:
                self.feedback.popitem(last=False)
        return fid
