"""Read a running sidecar's ``GET /metrics`` as a Prometheus client would."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> dict[str, Any]:
    """Metric families by name from ``{url}/metrics``; asserts a 200. Blocks the calling
    thread (runs its own event loop), so call it from a test, not from a running loop."""

    async def go() -> str:
        async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
            assert r.status == 200
            return await r.text()

    return {f.name: f for f in text_string_to_metric_families(asyncio.run(go()))}


def sample(fams: dict[str, Any], name: str, **labels: str) -> float:
    """The value of the first sample of family ``name`` whose labels include ``labels``;
    raises ``StopIteration`` when none does."""
    return next(s.value for s in fams[name].samples
                if all(s.labels.get(k) == v for k, v in labels.items()))
