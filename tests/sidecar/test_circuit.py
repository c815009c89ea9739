"""Circuit breakers: failure rate over a sliding window, per upstream and endpoint.

Time is an injected clock, so nothing here sleeps.
"""

from __future__ import annotations

import pytest

from sidecar.pipeline.circuit import (
    CLOSED,
    HALF_OPEN,
    MAX_ENDPOINTS,
    OPEN,
    BreakerSet,
    CircuitBreaker,
    CircuitSettings,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock, **kw: object) -> CircuitBreaker:
    settings = {"min_requests": 4, "failure_rate": 0.5, "window_s": 10.0, "open_s": 5.0, **kw}
    return CircuitBreaker("u", CircuitSettings.model_validate(settings), clock)


def test_opens_on_a_failure_rate_once_the_window_holds_enough_requests() -> None:
    clock = Clock()
    b = _breaker(clock)
    b.failure(), b.failure(), b.failure()
    assert b.state == CLOSED  # 3 of 3 failed, but fewer than min_requests seen
    b.failure()
    assert b.state == OPEN and not b.allow() and b.rejected == 1


@pytest.mark.parametrize(("failures", "successes", "state"), [
    (4, 6, CLOSED),   # 40%: below the rate
    (5, 5, OPEN),     # 50%: at the rate
    (9, 1, OPEN),
])
def test_rate_threshold(failures: int, successes: int, state: str) -> None:
    clock = Clock()
    b = _breaker(clock, min_requests=10)
    for _ in range(successes):
        b.success()
    for _ in range(failures):
        b.failure()
    assert b.state == state


def test_a_minority_of_content_driven_failures_never_opens() -> None:
    clock = Clock()
    b = _breaker(clock, min_requests=10)
    for i in range(500):  # 46% failures, interleaved, for a long time
        clock.now += 0.05
        (b.failure if int((i + 1) * 0.46) > int(i * 0.46) else b.success)()
        assert b.state == CLOSED


def test_old_outcomes_leave_the_window() -> None:
    clock = Clock()
    b = _breaker(clock)
    b.failure(), b.failure(), b.failure()
    clock.now += 11.0  # the window is 10 s
    assert b.window() == (0, 0)
    b.failure()
    assert b.state == CLOSED  # one failure in the window now


def test_consecutive_threshold_opens_at_low_volume_when_set() -> None:
    clock = Clock()
    b = _breaker(clock, failure_threshold=2, min_requests=100)
    b.failure()
    b.success()
    b.failure()
    assert b.state == CLOSED  # not consecutive
    b.failure()
    assert b.state == OPEN


def test_half_open_probe_then_close_or_reopen() -> None:
    clock = Clock()
    b = _breaker(clock, failure_threshold=2)
    b.failure(), b.failure()
    clock.now += 5.0
    assert b.state == HALF_OPEN
    assert b.allow() and not b.allow()  # one probe at a time
    b.failure()
    assert b.state == OPEN
    clock.now += 5.0
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.allow() and b.window() == (0, 0)


def test_an_abandoned_probe_is_given_back() -> None:
    clock = Clock()
    b = _breaker(clock, failure_threshold=2)
    b.failure(), b.failure()
    clock.now += 5.0
    assert b.allow()
    b.abandon()  # the client left before the probe got a verdict
    assert b.state == HALF_OPEN and b.allow()


def test_disabled_breakers_always_allow() -> None:
    clock = Clock()
    b = _breaker(clock, enabled=False, failure_threshold=1)
    b.failure()
    assert b.allow()


def test_endpoints_have_their_own_breakers_and_the_set_is_bounded() -> None:
    clock = Clock()
    breakers = BreakerSet("primary", CircuitSettings(failure_threshold=2), clock)
    breakers.get("/v1/embeddings").failure()
    breakers.get("/v1/embeddings").failure()
    assert breakers.get("/v1/embeddings").state == OPEN
    assert breakers.get("/v1/chat/completions").allow()
    snap = breakers.snapshot()
    assert snap["state"] == OPEN and snap["open_endpoints"] == ["/v1/embeddings"]
    for i in range(MAX_ENDPOINTS * 2):
        breakers.get(f"/junk/{i}")
    assert len(list(breakers)) <= MAX_ENDPOINTS + 1
