"""Timestamps read back from storage, as seconds since the epoch.

ClickHouse drivers return ``DateTime64(..., 'UTC')`` columns as datetimes that may be
naive; the in-memory stores keep floats. A naive datetime is read as UTC (calling
``.timestamp()`` on it would read it as the host's local time).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def epoch_seconds(value: Any) -> float:
    """Seconds since the epoch of a datetime (naive: UTC) or a number. Raises
    ``TypeError``/``ValueError`` for anything else."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def epoch_or_none(value: Any) -> float | None:
    """:func:`epoch_seconds`, or None for None or a value that is not a time."""
    if value is None:
        return None
    try:
        return epoch_seconds(value)
    except (TypeError, ValueError):
        return None
