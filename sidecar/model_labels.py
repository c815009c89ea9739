"""Learn the upstream's model names for metric labels (``GET /v1/models``).

Metric labels take model names from what upstreams served, never from what clients
ask (a client sending 50 junk names would otherwise take every label slot). The
upstream's own list, when it publishes one, is reserved up front so the real models
keep their labels whatever junk arrives first.

:func:`learn_models` runs as a background task from start-up: a few tries (the
upstream may start after the sidecar), each bounded in time and size; it never
raises (an upstream without the route, or that wants credentials, just teaches
nothing).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import aiohttp
import orjson

logger = logging.getLogger(__name__)

MAX_LIST_BYTES = 1 << 20
MAX_MODELS = 256
RETRY_DELAYS_S = (0.0, 5.0, 30.0, 120.0)


def model_ids(body: bytes) -> list[str]:
    """The ``data[].id`` strings of an OpenAI model list (at most 256); [] if malformed."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        return []
    ids = [m.get("id") for m in data[:MAX_MODELS] if isinstance(m, dict)]
    return [i for i in ids if isinstance(i, str) and 0 < len(i) <= 128]


async def fetch_models(session: aiohttp.ClientSession, base_url: str,
                       timeout_s: float = 5.0) -> list[str] | None:
    """The upstream's model ids, or ``None`` when it could not be asked (retry later)."""
    try:
        async with session.get(base_url + "/v1/models", allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                return []  # answered: no list to learn (auth required, no such route)
            body = await resp.content.read(MAX_LIST_BYTES + 1)
            return model_ids(body) if len(body) <= MAX_LIST_BYTES else []
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None


async def learn_models(session: Callable[[], aiohttp.ClientSession], base_url: str,
                       reserve: Callable[[Sequence[str]], None]) -> None:
    """Ask until the upstream answers once (``RETRY_DELAYS_S``), then ``reserve`` its ids."""
    for delay in RETRY_DELAYS_S:
        await asyncio.sleep(delay)
        try:
            ids = await fetch_models(session(), base_url)
        except RuntimeError:  # the client was closed: shutting down
            return
        if ids is not None:
            if ids:
                reserve(ids)
                logger.info("metric model labels: %d model(s) listed by the upstream", len(ids))
            return
