"""The per-upstream circuit breaker."""

from __future__ import annotations

import time

from sidecar.pipeline.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitSettings


def _breaker(**kw: float) -> CircuitBreaker:
    return CircuitBreaker("u", CircuitSettings(failure_threshold=2, open_s=0.05, **kw))


def test_opens_after_consecutive_failures_and_success_resets() -> None:
    b = _breaker()
    b.failure()
    b.success()
    b.failure()
    assert b.state == CLOSED  # not consecutive
    b.failure()
    assert b.state == OPEN and not b.allow() and b.rejected == 1


def test_half_open_probe_then_close_or_reopen() -> None:
    b = _breaker()
    b.failure(), b.failure()
    time.sleep(0.06)
    assert b.state == HALF_OPEN
    assert b.allow() and not b.allow()  # one probe at a time
    b.failure()
    assert b.state == OPEN
    time.sleep(0.06)
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.allow()


def test_an_abandoned_probe_is_given_back() -> None:
    b = _breaker()
    b.failure(), b.failure()
    time.sleep(0.06)
    assert b.allow()
    b.abandon()  # the client left before the probe got a verdict
    assert b.state == HALF_OPEN and b.allow()
