"""Who may leave feedback on which trace: ``POST /v1/feedback`` acceptance rules.

Feedback is accepted only for trace ids this sidecar issued, unless the caller
holds the feedback credential:

1. a rate limit per client address (``rate_limits.public``) refuses floods (429);
2. ``Authorization: Bearer <feedback.token>`` (when configured) may rate any
   trace id, known or not (``known_trace`` says which);
3. otherwise the trace id must be one this process answered recently
   (:class:`IssuedTraces`: bounded, time-limited) or one in trace storage (issued
   by another replica, or before a restart); anything else is a 404
   ``unknown_trace``. ``feedback.accept: any`` restores the old behaviour
   (unknown ids accepted, marked ``known_trace: false``).

Settings (``feedback:``): ``accept`` (``issued`` | ``any``), ``token`` (a secret,
16+ characters), ``issued_window_s`` (how long an issued id stays acceptable
without a storage look-up, seconds), ``max_issued`` (ids kept; about 100 bytes
each, measured). Refusals are counted by reason for ``/metrics``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from sidecar.errors import NotFoundError, RequestError
from sidecar.handoff.config import long_secret
from sidecar.ratelimit import RateLimiter


class FeedbackSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    accept: Literal["issued", "any"] = "issued"
    token: SecretStr | None = None
    issued_window_s: float = Field(default=3600.0, gt=0)
    max_issued: int = Field(default=50_000, ge=1)  # about 100 bytes each

    @field_validator("token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        return long_secret(value, 16)


class IssuedTraces:
    """Trace ids answered recently: at most ``max_entries``, each for ``window_s``.

    Insertion-ordered dict of 16-byte ids to expiry: the oldest is first, so
    expiry and the size bound both pop from the front (amortised O(1)). Event-loop
    use only (not thread-safe).
    """

    def __init__(self, window_s: float = 3600.0, max_entries: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._clock = clock
        self._ids: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._ids)

    @staticmethod
    def _key(trace_id: str) -> bytes | None:
        try:
            return bytes.fromhex(trace_id)
        except ValueError:
            return None

    def _expire(self, now: float) -> None:
        ids = self._ids
        while ids:
            first = next(iter(ids))
            if ids[first] > now and len(ids) <= self.max_entries:
                break
            del ids[first]

    def add(self, trace_id: str) -> None:
        key = self._key(trace_id)
        if key is None:
            return
        now = self._clock()
        self._ids.pop(key, None)  # re-insert at the end: it is the newest now
        self._ids[key] = now + self.window_s
        self._expire(now)

    def __contains__(self, trace_id: object) -> bool:
        key = self._key(trace_id) if isinstance(trace_id, str) else None
        if key is None:
            return False
        expiry = self._ids.get(key)
        return expiry is not None and expiry > self._clock()


class FeedbackGate:
    """Applies the rules of the module docstring; counts refusals by reason."""

    def __init__(self, settings: FeedbackSettings, issued: IssuedTraces,
                 limiter: RateLimiter | None = None) -> None:
        self.settings = settings
        self.issued = issued
        self.limiter = limiter
        token = settings.token.get_secret_value() if settings.token is not None else None
        self._token = hashlib.sha256(token.encode()).digest() if token is not None else None
        self.rejected: dict[str, int] = {"unknown_trace": 0, "rate_limited": 0}

    def admit(self, client: str | None) -> RequestError | None:
        """The rate limit, checked before the body is read."""
        refused = self.limiter.check_public(client) if self.limiter is not None else None
        if refused is not None:
            self.rejected["rate_limited"] += 1
        return refused

    def privileged(self, headers: Mapping[str, str]) -> bool:
        """Whether the request holds the feedback credential (constant-time check)."""
        if self._token is None:
            return False
        scheme, _, value = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return False
        return hmac.compare_digest(hashlib.sha256(value.strip().encode()).digest(), self._token)

    def refuse_unknown(self, privileged: bool) -> RequestError | None:
        """The refusal for a trace id neither issued here nor stored, or ``None``."""
        if privileged or self.settings.accept == "any":
            return None
        self.rejected["unknown_trace"] += 1
        return NotFoundError("no trace with this id was answered by this service; send the "
                             "x-railwatch-trace-id of a response", param="trace_id",
                             code="unknown_trace")

    def state(self) -> dict[str, object]:
        return {"feedback_rejected": dict(self.rejected), "issued_traces": len(self.issued)}
