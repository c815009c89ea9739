"""Feedback and hand-off storage: small, synchronous helpers over the review tables.

Used by the sidecar's feedback API and human hand-off queue (call them from a
worker thread: each blocks on one query). Writes are single-row inserts, which
is fine at human rates; traces go through :class:`ClickHouseExporter` instead.

``handoffs`` is mutable state (pending -> assigned -> resolved) kept as a
``ReplacingMergeTree(version)``: every change inserts the whole row with a higher
version, and reads use ``FINAL`` so they see the latest version of each id, which
is why these reads use it and the trace reads do not. Errors from the driver
propagate (``clickhouse_connect.driver.exceptions.ClickHouseError``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from sidecar.timestamps import epoch_seconds

FEEDBACK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "String"),
    ("trace_id", "String"),
    ("request_id", "Nullable(String)"),
    ("created_at", "DateTime64(3, 'UTC')"),
    ("kind", "LowCardinality(String)"),
    ("value", "Float64"),
    ("comment", "Nullable(String)"),
    ("corrected_answer", "Nullable(String)"),
    ("known_trace", "Bool"),
    ("user", "Nullable(String)"),
    ("version", "UInt64"),
)
HANDOFF_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "String"),
    ("created_at", "DateTime64(3, 'UTC')"),
    ("updated_at", "DateTime64(3, 'UTC')"),
    ("request_id", "Nullable(String)"),
    ("trace_id", "Nullable(String)"),
    ("conversation_id", "Nullable(String)"),
    ("tenant", "LowCardinality(Nullable(String))"),
    ("route", "LowCardinality(String)"),
    ("model", "LowCardinality(String)"),
    ("content", "Nullable(String)"),
    ("findings_json", "String"),
    ("reason", "String"),
    ("status", "LowCardinality(String)"),
    ("assignee", "Nullable(String)"),
    ("resolution", "Nullable(String)"),
    ("resolved_at", "Nullable(DateTime64(3, 'UTC'))"),
    ("version", "UInt64"),
)
FEEDBACK_KINDS = ("thumbs", "score", "preference")


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def _db(database: str) -> str:
    """``database`` if it is a plain identifier (it is spliced into SQL), else ValueError."""
    if not _IDENT.match(database):
        raise ValueError(f"not a database name: {database!r}")
    return database


def _ms(value: float | datetime | None) -> int | None:
    if value is None:
        return None
    return round(epoch_seconds(value) * 1000)


def _utc(row: dict[str, Any]) -> dict[str, Any]:
    for key, value in row.items():
        if isinstance(value, datetime) and value.tzinfo is None:
            row[key] = value.replace(tzinfo=UTC)
    return row


def trace_exists(client: Client, database: str, trace_id: str) -> bool:
    """Whether any stored trace has ``trace_id``."""
    result = client.query(
        f"SELECT count() FROM {_db(database)}.traces WHERE trace_id = {{t:String}}",
        parameters={"t": trace_id},
    )
    return bool(result.result_rows[0][0])


def insert_feedback(
    client: Client,
    database: str,
    *,
    trace_id: str,
    kind: str,
    value: float,
    comment: str | None = None,
    corrected_answer: str | None = None,
    known_trace: bool = False,
    request_id: str | None = None,
    user: str | None = None,
    created_at: float | None = None,
    store_text: bool = True,
    feedback_id: str | None = None,
) -> str:
    """Store one piece of feedback; returns its id. ``kind`` is ``thumbs`` (value
    1 or -1) or ``score``. With ``store_text=False`` comment and answer are not kept."""
    if kind not in FEEDBACK_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FEEDBACK_KINDS)}")
    fid = feedback_id or uuid.uuid4().hex
    now = time.time() if created_at is None else created_at
    row = [
        fid, trace_id, request_id, _ms(now), kind, float(value),
        comment if store_text else None, corrected_answer if store_text else None,
        bool(known_trace), user, time.time_ns() // 1000,
    ]
    client.insert(f"{_db(database)}.feedback", [row], column_names=[c for c, _ in FEEDBACK_COLUMNS],
                  column_type_names=[t for _, t in FEEDBACK_COLUMNS])
    return fid


def list_feedback(
    client: Client, database: str, *, trace_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Feedback rows, newest first (``FINAL``: an id re-sent keeps one row)."""
    where = "WHERE trace_id = {t:String}" if trace_id is not None else ""
    result = client.query(
        f"SELECT * EXCEPT version FROM {_db(database)}.feedback FINAL {where} "
        "ORDER BY created_at DESC LIMIT {n:UInt64}",
        parameters={"t": trace_id or "", "n": limit},
    )
    return [_utc(dict(zip(result.column_names, r, strict=True))) for r in result.result_rows]


def upsert_handoff(
    client: Client,
    database: str,
    handoff: Mapping[str, Any],
    *,
    store_text: bool = True,
) -> None:
    """Insert or update a hand-off (the whole row; a newer ``version`` wins).

    ``handoff`` keys: ``id`` (required), ``created_at`` (epoch s or datetime),
    ``updated_at`` (default now), ``request_id``, ``trace_id``, ``conversation_id``,
    ``tenant``, ``route``, ``model``, ``content``, ``findings`` (list of dicts,
    stored as JSON; must hold no text), ``reason``, ``status`` (default
    ``pending``), ``assignee``, ``resolution``, ``resolved_at``.
    """
    now = time.time()
    h = dict(handoff)
    row = [
        str(h["id"]),
        _ms(h.get("created_at", now)),
        _ms(h.get("updated_at", now)),
        h.get("request_id"),
        h.get("trace_id"),
        h.get("conversation_id"),
        h.get("tenant"),
        h.get("route") or "",
        h.get("model") or "",
        h.get("content") if store_text else None,
        orjson.dumps(h.get("findings") or []).decode(),
        h.get("reason") or "",
        h.get("status") or "pending",
        h.get("assignee"),
        h.get("resolution") if store_text else None,
        _ms(h.get("resolved_at")),
        time.time_ns() // 1000,
    ]
    client.insert(f"{_db(database)}.handoffs", [row], column_names=[c for c, _ in HANDOFF_COLUMNS],
                  column_type_names=[t for _, t in HANDOFF_COLUMNS])


def _handoff_dict(names: list[str], row: Sequence[Any]) -> dict[str, Any]:
    out = _utc(dict(zip(names, row, strict=True)))
    out["findings"] = orjson.loads(out.pop("findings_json") or "[]")
    out.pop("version", None)
    return out


def get_handoff(client: Client, database: str, handoff_id: str) -> dict[str, Any] | None:
    """The latest version of one hand-off, or ``None``."""
    result = client.query(
        f"SELECT * FROM {_db(database)}.handoffs FINAL WHERE id = {{id:String}}",
        parameters={"id": handoff_id},
    )
    if not result.result_rows:
        return None
    return _handoff_dict(list(result.column_names), result.result_rows[0])


def status_backlog(
    client: Client, database: str, *, status: str, max_scan: int
) -> tuple[int, float | None]:
    """(hand-offs of ``status``, the oldest one's ``created_at`` in epoch seconds or
    ``None`` with none), from the ``max_scan`` oldest such rows: the count caps at
    ``max_scan``, the oldest stays exact. Reads ``created_at`` only; blocks."""
    result = client.query(
        f"SELECT count(), min(created_at) FROM (SELECT created_at FROM {_db(database)}"
        ".handoffs FINAL WHERE status = {s:String} ORDER BY created_at LIMIT {n:UInt64})",
        parameters={"s": status, "n": max_scan},
    )
    count, oldest = result.result_rows[0]
    return int(count), (epoch_seconds(oldest) if count else None)


def list_handoffs(
    client: Client, database: str, *, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Hand-offs (latest versions), oldest first, optionally of one ``status``."""
    where = "WHERE status = {s:String}" if status is not None else ""
    result = client.query(
        f"SELECT * FROM {_db(database)}.handoffs FINAL {where} ORDER BY created_at, id "
        "LIMIT {n:UInt64}",
        parameters={"s": status or "", "n": limit},
    )
    names = list(result.column_names)
    return [_handoff_dict(names, r) for r in result.result_rows]
