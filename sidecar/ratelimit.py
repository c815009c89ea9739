"""Rate limits: token buckets per client address, API key and tenant.

Settings (``rate_limits:``)::

    rate_limits:
      enabled: true
      per_client:  {rate_per_s: 50, burst: 100}     # by the TCP peer address
      per_api_key: {rate_per_s: 20, burst: 40}      # by a hash of the client's API key
      per_tenant:  {rate_per_s: 200, burst: 400}    # by x-railwatch-tenant
      routes:                                        # optional, per operation
        embeddings: {per_client: {rate_per_s: 5, burst: 10}}
      public: {rate_per_s: 10, burst: 20}           # /v1/feedback, /v1/handoffs/{id}
      max_keys: 100000

A request takes one token from each bucket that applies (its route's own spec
replaces the global one for that dimension); the first empty bucket refuses it
with a :class:`RateLimitedError` (429, OpenAI shape, ``Retry-After`` in whole
seconds). Buckets of different dimensions are checked in order and none is
charged when a later one refuses, so a refused request costs the client nothing.

API keys are never kept: a bucket's key is 64 bits of BLAKE2b over the
dimension and the value under a per-process salt (the credential from
``Authorization: Bearer``, ``api-key`` or ``x-api-key``; the address; the tenant).
Memory is bounded: at most ``max_keys`` buckets (about 180 bytes each), least
recently used evicted (an evicted key starts again with a full bucket, the
trade-off of the bound).

:class:`RateLimiter` is used from the event loop only (not thread-safe); every
method is O(1) and never blocks.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sidecar.errors import RequestError

Dimension = Literal["client", "api_key", "tenant", "public"]
DIMENSIONS: tuple[Dimension, ...] = ("client", "api_key", "tenant", "public")
_API_KEY_HEADERS = ("api-key", "x-api-key")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BucketSpec(_Model):
    """A token bucket: refills ``rate_per_s`` tokens a second up to ``burst``."""

    rate_per_s: float = Field(gt=0)
    burst: int = Field(ge=1)


class RouteLimits(_Model):
    """Per-operation overrides (``chat``, ``text_completion``, ``embeddings``, ...)."""

    per_client: BucketSpec | None = None
    per_api_key: BucketSpec | None = None
    per_tenant: BucketSpec | None = None


class RateLimitSettings(_Model):
    """``enabled`` switches the proxy routes' limits; ``public`` (the unauthenticated
    feedback and hand-off poll routes, per client address) applies regardless."""

    enabled: bool = False
    per_client: BucketSpec | None = None
    per_api_key: BucketSpec | None = None
    per_tenant: BucketSpec | None = None
    routes: dict[str, RouteLimits] = Field(default_factory=dict)
    public: BucketSpec | None = BucketSpec(rate_per_s=20, burst=40)
    max_keys: int = Field(default=100_000, ge=1)


class RateLimitedError(RequestError):
    """429 with ``Retry-After``; ``dimension`` names the bucket that was empty."""

    status = 429
    error_type = "requests"  # what OpenAI's API answers for request-rate limits
    code = "rate_limit_exceeded"

    def __init__(self, dimension: Dimension, retry_after_s: int) -> None:
        super().__init__(
            f"rate limit exceeded ({dimension.replace('_', ' ')}); retry after "
            f"{retry_after_s} s", headers={"Retry-After": str(retry_after_s)})
        self.dimension = dimension


def api_key_of(headers: Mapping[str, str]) -> str | None:
    """The client's credential: a bearer token, else an ``api-key`` / ``x-api-key``."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for name in _API_KEY_HEADERS:
        key = headers.get(name)
        if key:
            return key
    return None


class TokenBuckets:
    """Buckets by integer key, LRU-bounded (an insertion-ordered dict: least recently
    used first; about 180 bytes a bucket). ``wait_s`` answers 0.0 when a token is
    there (then :meth:`take` it) or the seconds until one is."""

    def __init__(self, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}  # key -> (tokens, at)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def wait_s(self, key: int, spec: BucketSpec) -> float:
        """Seconds until ``key`` has a token (0.0: it has one now); takes nothing."""
        now = self._clock()
        bucket = self._buckets.pop(key, None)  # re-inserted last: most recently used
        if bucket is None:
            tokens = float(spec.burst)
            if len(self._buckets) >= self.max_keys:
                del self._buckets[next(iter(self._buckets))]
                self.evicted += 1
        else:
            tokens = min(float(spec.burst), bucket[0] + (now - bucket[1]) * spec.rate_per_s)
        self._buckets[key] = (tokens, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / spec.rate_per_s

    def take(self, key: int) -> None:
        """Take one token (call after :meth:`wait_s` said 0.0 for the same key)."""
        tokens, at = self._buckets[key]
        self._buckets[key] = (tokens - 1.0, at)


class RateLimiter:
    """Applies :class:`RateLimitSettings`; counts refusals per dimension."""

    def __init__(self, settings: RateLimitSettings, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.settings = settings
        self.buckets = TokenBuckets(settings.max_keys, clock)
        self._salt = secrets.token_bytes(16)
        self.limited: dict[str, int] = dict.fromkeys(DIMENSIONS, 0)

    def _key(self, dim: str, scope: str, ident: str) -> int:
        """64 bits of a salted BLAKE2b: no address, key or tenant is kept as given."""
        data = f"{dim}\0{scope}\0{ident}".encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=self._salt).digest(), "big")

    def _specs(self, route: str) -> list[tuple[Dimension, BucketSpec]]:
        s = self.settings
        override = s.routes.get(route)
        found: list[tuple[Dimension, BucketSpec]] = []
        for dim, base, attr in (("client", s.per_client, "per_client"),
                                ("api_key", s.per_api_key, "per_api_key"),
                                ("tenant", s.per_tenant, "per_tenant")):
            spec = getattr(override, attr, None) if override is not None else None
            spec = spec or base
            if spec is not None:
                found.append((dim, spec))  # type: ignore[arg-type]
        return found

    def check(
        self,
        route: str,
        *,
        client: str | None,
        headers: Mapping[str, str],
        tenant: str | None,
    ) -> RateLimitedError | None:
        """The refusal for a proxy request, or ``None`` (then its tokens are taken)."""
        if not self.settings.enabled:
            return None
        wanted: list[tuple[Dimension, int, BucketSpec]] = []
        for dim, spec in self._specs(route):
            if dim == "client":
                ident = client or "unknown"
            elif dim == "api_key":
                key = api_key_of(headers)
                if key is None:
                    continue
                ident = key
            else:
                if tenant is None:
                    continue
                ident = tenant
            scope = route if route in self.settings.routes else ""
            wanted.append((dim, self._key(dim, scope, ident), spec))
        return self._take_all(wanted)

    def check_public(self, client: str | None) -> RateLimitedError | None:
        """The refusal for an unauthenticated API request (feedback, poll), or ``None``."""
        spec = self.settings.public
        if spec is None:
            return None
        return self._take_all([("public", self._key("public", "", client or "unknown"), spec)])

    def _take_all(
        self, wanted: list[tuple[Dimension, int, BucketSpec]]
    ) -> RateLimitedError | None:
        for dim, key, spec in wanted:
            wait = self.buckets.wait_s(key, spec)
            if wait > 0.0:
                self.limited[dim] += 1
                return RateLimitedError(dim, max(1, math.ceil(wait)))
        for _dim, key, _spec in wanted:
            self.buckets.take(key)
        return None

    def state(self) -> dict[str, object]:
        """Counters for ``/metrics``: refusals per dimension, tracked and evicted keys."""
        return {"limited": dict(self.limited), "tracked_keys": len(self.buckets),
                "evicted_keys": self.buckets.evicted}
