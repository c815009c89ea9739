"""Circuit breakers, one per upstream *and endpoint*, opened on a failure rate.

A breaker watches the outcomes of the requests sent to one upstream for one
endpoint (``/v1/chat/completions``, ``/v1/embeddings``, ...) over a sliding window
of ``window_s`` seconds, kept as ``BUCKETS`` time buckets so memory is constant.
It opens when, within the window, at least ``min_requests`` outcomes were seen and
the share of failures reached ``failure_rate`` (the way Envoy's outlier detection
and resilience4j's count-or-time windows work), or, when ``failure_threshold`` is
set, after that many failures in a row. Open: requests skip this upstream for this
endpoint for ``open_s`` seconds and go down the fallback chain. Then ``half_open``:
up to ``half_open_probes`` requests are let through; one success closes the
circuit (and clears the window), one failure opens it again.

A *failure* is the upstream's own: a connect error, a timeout, a broken response
or a 5xx. A 4xx, and an answer the policy rejected, count as successes: the
upstream worked. So an endpoint a server does not serve (llama.cpp's
``/v1/embeddings`` without ``--embedding`` answers 500) opens only its own
breaker, and a minority of content-driven failures never opens one.

Time comes from an injected monotonic clock (seconds), so tests never sleep.
Owned by one event loop; no locks. ``snapshot()`` feeds ``/readyz`` and metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # gauge values
BUCKETS = 10
MAX_ENDPOINTS = 64  # per upstream; paths come from clients, so the set is bounded

Clock = Callable[[], float]


class CircuitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    failure_rate: float = Field(default=0.5, gt=0.0, le=1.0)  # share of failures that opens
    min_requests: int = Field(default=10, ge=1)  # outcomes in the window before a rate counts
    window_s: float = Field(default=30.0, gt=0)
    failure_threshold: int | None = Field(default=None, ge=1)  # consecutive failures; None: off
    open_s: float = Field(default=30.0, gt=0)
    half_open_probes: int = Field(default=1, ge=1)


class CircuitBreaker:
    def __init__(self, name: str, settings: CircuitSettings, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.settings = settings
        self._clock = clock
        self._state = CLOSED
        self._opened_at = 0.0
        self._probes = 0
        self._consecutive = 0
        self._bucket_s = settings.window_s / BUCKETS
        # ring of (bucket number, requests, failures)
        self._ring: list[list[int]] = [[-1, 0, 0] for _ in range(BUCKETS)]
        self.opened_count = 0
        self.rejected = 0

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.settings.open_s:
            self._state, self._probes = HALF_OPEN, 0
        return self._state

    def allow(self) -> bool:
        """May a request go to this upstream now? Counts a probe when half-open."""
        if not self.settings.enabled:
            return True
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and self._probes < self.settings.half_open_probes:
            self._probes += 1
            return True
        self.rejected += 1
        return False

    def abandon(self) -> None:
        """A request let through ended with no verdict (cancelled): give its probe back."""
        if self._state == HALF_OPEN and self._probes > 0:
            self._probes -= 1

    def success(self) -> None:
        self._consecutive = 0
        if self._state != CLOSED:
            self._state = CLOSED
            self._clear()
            return
        self._count(failed=False)

    def failure(self) -> None:
        self._consecutive += 1
        if self._state == HALF_OPEN:
            self._open()
            return
        if self._state != CLOSED:
            return
        requests, failures = self._count(failed=True)
        threshold = self.settings.failure_threshold
        if (threshold is not None and self._consecutive >= threshold) or (
            requests >= self.settings.min_requests
            and failures >= self.settings.failure_rate * requests
        ):
            self._open()

    def window(self) -> tuple[int, int]:
        """(requests, failures) within the sliding window now."""
        current = int(self._clock() // self._bucket_s)
        requests = failures = 0
        for number, req, fail in self._ring:
            if current - number < BUCKETS:
                requests += req
                failures += fail
        return requests, failures

    def _count(self, *, failed: bool) -> tuple[int, int]:
        number = int(self._clock() // self._bucket_s)
        bucket = self._ring[number % BUCKETS]
        if bucket[0] != number:
            bucket[0], bucket[1], bucket[2] = number, 0, 0
        bucket[1] += 1
        bucket[2] += failed
        return self.window()

    def _open(self) -> None:
        self._state = OPEN
        self._opened_at = self._clock()
        self.opened_count += 1
        self._clear()

    def _clear(self) -> None:
        for bucket in self._ring:
            bucket[0], bucket[1], bucket[2] = -1, 0, 0

    def snapshot(self) -> dict[str, Any]:
        requests, failures = self.window()
        return {
            "state": self.state,
            "window_requests": requests,
            "window_failures": failures,
            "consecutive_failures": self._consecutive,
            "opened": self.opened_count,
            "rejected": self.rejected,
        }


class BreakerSet:
    """The breakers of one upstream, one per endpoint, created on first use (bounded)."""

    def __init__(self, upstream: str, settings: CircuitSettings, clock: Clock = time.monotonic) -> None:
        self.upstream = upstream
        self.settings = settings
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, endpoint: str) -> CircuitBreaker:
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            if len(self._breakers) >= MAX_ENDPOINTS:
                endpoint = "other"
                breaker = self._breakers.get(endpoint)
            if breaker is None:
                breaker = CircuitBreaker(f"{self.upstream} {endpoint}", self.settings, self._clock)
                self._breakers[endpoint] = breaker
        return breaker

    def __iter__(self) -> Iterator[tuple[str, CircuitBreaker]]:
        return iter(list(self._breakers.items()))

    def snapshot(self) -> dict[str, Any]:
        """The worst state over endpoints (for a one-line view), and each endpoint's."""
        endpoints = {endpoint: b.snapshot() for endpoint, b in self}
        worst = max((s["state"] for s in endpoints.values()), key=STATE_VALUES.__getitem__,
                    default=CLOSED)
        return {
            "state": worst,
            "consecutive_failures": max((s["consecutive_failures"] for s in endpoints.values()),
                                        default=0),
            "opened": sum(s["opened"] for s in endpoints.values()),
            "rejected": sum(s["rejected"] for s in endpoints.values()),
            "open_endpoints": sorted(e for e, s in endpoints.items() if s["state"] != CLOSED),
            "endpoints": endpoints,
        }
