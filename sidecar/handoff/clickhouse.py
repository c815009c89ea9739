"""Hand-offs and feedback in ClickHouse, through the exporter's client.

:class:`ClickHouseHandoffStore` does not own a client: in one process only one
chDB engine path may be open and the ClickHouse exporter owns it, so the store
takes a ``run(fn)`` that executes ``fn(client, database)`` serialised with the
exporter's inserts, in the calling worker thread (the exporter's ``store.run``).
Reads and writes go through :mod:`exporters.clickhouse.review`. Every method
blocks; driver errors propagate.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from clickhouse_connect.driver.client import Client

from exporters.clickhouse import review
from sidecar.handoff.model import PENDING
from sidecar.handoff.store import PREFERENCE_KIND

T = TypeVar("T")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class QueryRunner(Protocol):
    """``run(fn)`` calls ``fn(client, database)`` under the exporter's io lock; blocks."""

    def __call__(self, fn: Callable[[Client, str], T], /) -> T: ...


class ClickHouseHandoffStore:
    """Hand-offs and feedback in ClickHouse via :mod:`exporters.clickhouse.review`.

    ``open_scan_limit`` bounds one queue read (rows of one status). The feedback
    table's ``kind`` ``preference`` row keeps the *rejected* answer in
    ``comment`` and the *chosen* one in ``corrected_answer``.
    """

    def __init__(
        self, run: QueryRunner, *, open_scan_limit: int = 1000, store_text: bool = True
    ) -> None:
        self._run = run
        self.open_scan_limit = open_scan_limit
        self.store_text = store_text  # the ClickHouse exporter's `store_text`

    def save_handoff(self, row: Mapping[str, Any]) -> None:
        self._run(lambda c, db: review.upsert_handoff(c, db, row, store_text=self.store_text))

    def get_handoff(self, handoff_id: str) -> dict[str, Any] | None:
        return self._run(lambda c, db: review.get_handoff(c, db, handoff_id))

    def list_handoffs(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        # review.list_handoffs reads oldest first; read a wide window and reverse
        rows = self._run(lambda c, db: review.list_handoffs(
            c, db, status=status, limit=max(limit, self.open_scan_limit)))
        rows.reverse()
        return rows[:limit]

    def pending_backlog(self, max_scan: int) -> tuple[int, float | None]:
        return self._run(lambda c, db: review.status_backlog(
            c, db, status=PENDING, max_scan=max_scan))

    def add_preference(
        self, *, trace_id: str, request_id: str | None, rejected: str, chosen: str,
        user: str | None,
    ) -> str:
        if not self.store_text:  # a preference pair is text: nothing to keep
            return ""
        return self._run(lambda c, db: _insert_preference(
            c, db, trace_id=trace_id, request_id=request_id, rejected=rejected, chosen=chosen,
            user=user))

    def add_feedback(
        self, *, trace_id: str, kind: str, value: float, comment: str | None,
        corrected_answer: str | None, known_trace: bool, user: str | None,
        store_text: bool,
    ) -> str:
        return self._run(lambda c, db: review.insert_feedback(
            c, db, trace_id=trace_id, kind=kind, value=value, comment=comment,
            corrected_answer=corrected_answer, known_trace=known_trace, user=user,
            store_text=store_text and self.store_text))

    def trace_exists(self, trace_id: str) -> bool:
        return self._run(lambda c, db: review.trace_exists(c, db, trace_id))


def _insert_preference(
    client: Client, database: str, *, trace_id: str, request_id: str | None, rejected: str,
    chosen: str, user: str | None,
) -> str:
    """One ``feedback`` row of kind ``preference`` (``review.insert_feedback`` only
    accepts its ``FEEDBACK_KINDS``; the row layout is review's own column list)."""
    if not _IDENT.match(database):  # it is spliced into SQL
        raise ValueError(f"not a database name: {database!r}")
    fid = uuid.uuid4().hex
    values = {
        "id": fid, "trace_id": trace_id, "request_id": request_id,
        "created_at": round(time.time() * 1000), "kind": PREFERENCE_KIND, "value": 1.0,
        "comment": rejected, "corrected_answer": chosen, "known_trace": bool(trace_id),
        "user": user, "version": time.time_ns() // 1000,
    }
    names = [c for c, _ in review.FEEDBACK_COLUMNS]
    client.insert(f"{database}.feedback", [[values[n] for n in names]], column_names=names,
                  column_type_names=[t for _, t in review.FEEDBACK_COLUMNS])
    return fid


def locked_runner(
    client: Client, database: str, lock: threading.Lock | None = None
) -> QueryRunner:
    """A :class:`QueryRunner` around one client, serialised by ``lock`` (tests, tools)."""
    guard = lock or threading.Lock()

    def run(fn: Callable[[Client, str], T], /) -> T:
        with guard:
            return fn(client, database)

    return run
