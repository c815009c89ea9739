"""The upstreams a request may go to: the primary and the named fallbacks.

Each :class:`Upstream` has its pooled client and its circuit breakers, one per
endpoint (:class:`~sidecar.pipeline.circuit.BreakerSet`). Which upstream an attempt
goes to, and when, is decided by the attempt engine (:mod:`sidecar.pipeline.engine`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.pipeline.circuit import CLOSED, BreakerSet, Clock, CircuitSettings
from sidecar.pipeline.upstream import UpstreamClient


@dataclass(slots=True)
class Upstream:
    """A named upstream: its pooled client and its circuit breakers."""

    name: str
    client: UpstreamClient
    circuits: BreakerSet
    label: str  # public URL, for records


class UpstreamSet:
    """The primary upstream and the named fallbacks; started and closed together."""

    def __init__(
        self,
        primary: UpstreamClient,
        fallbacks: Mapping[str, UpstreamClient],
        circuit: CircuitSettings,
        label: Callable[[str], str],
        clock: Clock | None = None,
    ) -> None:
        def make(name: str, client: UpstreamClient) -> Upstream:
            breakers = (BreakerSet(name, circuit) if clock is None
                        else BreakerSet(name, circuit, clock))
            return Upstream(name, client, breakers, label(client.base_url))

        self.primary = make("primary", primary)
        self.fallbacks = {name: make(name, client) for name, client in fallbacks.items()}

    def get(self, name: str | None) -> Upstream:
        if name is None or name == "primary":
            return self.primary
        return self.fallbacks[name]

    def breakers(self, upstream: str) -> BreakerSet:
        """The engine's view: the breakers of one upstream by name."""
        return self.get(upstream).circuits

    def all(self) -> list[Upstream]:
        return [self.primary, *self.fallbacks.values()]

    async def start(self) -> None:
        for upstream in self.all():
            await upstream.client.start()

    async def close(self) -> None:
        for upstream in self.all():
            await upstream.client.close()

    def degraded(self) -> list[str]:
        """``upstream endpoint`` of every breaker that is not closed (for ``/readyz``)."""
        return [f"{u.name} {endpoint}" for u in self.all() for endpoint, b in u.circuits
                if b.state != CLOSED]

    def state(self) -> dict[str, Any]:
        return {u.name: {"url": u.label, "circuit": u.circuits.snapshot()} for u in self.all()}
