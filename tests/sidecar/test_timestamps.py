"""Stored timestamps read back: a naive datetime is UTC, whatever the host's zone."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from sidecar.timestamps import epoch_or_none, epoch_seconds


def test_naive_datetimes_are_utc_even_on_a_host_in_another_zone() -> None:
    if not hasattr(time, "tzset"):
        pytest.skip("no tzset here")
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        naive = datetime(2026, 12, 7, 12, 0, 0)
        aware = naive.replace(tzinfo=UTC)
        assert epoch_seconds(naive) == aware.timestamp() == 1796644800.0
        plus_two = datetime(2026, 12, 7, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
        assert epoch_seconds(plus_two) == aware.timestamp()
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_numbers_none_and_junk() -> None:
    assert epoch_seconds(5) == 5.0 and epoch_seconds("7.5") == 7.5
    assert epoch_or_none(None) is None and epoch_or_none(object()) is None
    assert epoch_or_none(3) == 3.0
    with pytest.raises((TypeError, ValueError)):
        epoch_seconds(object())
