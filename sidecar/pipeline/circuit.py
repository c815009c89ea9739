"""A circuit breaker per upstream.

States: ``closed`` (requests flow), ``open`` (the upstream failed
``failure_threshold`` times in a row: requests skip it for ``open_s`` seconds and
go down the fallback chain), ``half_open`` (after ``open_s``: up to
``half_open_probes`` requests are let through as probes; one success closes the
circuit, one failure opens it again). A failure is a connect error, a timeout or a
5xx answer; a 4xx is the client's fault and counts as success for the upstream.

Owned by one event loop; no locks. ``state()`` feeds ``/readyz`` and the metrics.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}  # gauge values


class CircuitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    failure_threshold: int = Field(default=5, ge=1)
    open_s: float = Field(default=30.0, gt=0)
    half_open_probes: int = Field(default=1, ge=1)


class CircuitBreaker:
    def __init__(self, name: str, settings: CircuitSettings) -> None:
        self.name = name
        self.settings = settings
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self.opened_count = 0
        self.rejected = 0

    @property
    def state(self) -> str:
        if self._state == OPEN and time.monotonic() - self._opened_at >= self.settings.open_s:
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
        self._failures = 0
        if self._state != CLOSED:
            self._state = CLOSED

    def failure(self) -> None:
        self._failures += 1
        if self._state == HALF_OPEN or (
            self._state == CLOSED and self._failures >= self.settings.failure_threshold
        ):
            self._state = OPEN
            self._opened_at = time.monotonic()
            self.opened_count += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "consecutive_failures": self._failures,
            "opened": self.opened_count,
            "rejected": self.rejected,
        }
