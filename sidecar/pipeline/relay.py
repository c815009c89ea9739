"""The one copy loop: an upstream body to the client as it arrives.

Used by the pass-through route and by the lean streaming path. Bytes are written
before anything looks at them (``on_chunk`` runs after the write), so observing
never delays delivery. Never raises for upstream or client failures: it returns why
it stopped. Cancellation (the client left) propagates.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from aiohttp import web

from sidecar.context import RequestContext

TIMEOUT = "upstream_timeout"
BROKEN = "upstream_stream_broken"
CLIENT_GONE = "client_disconnected"


async def relay(
    content: aiohttp.StreamReader,
    out: web.StreamResponse,
    ctx: RequestContext,
    on_chunk: Callable[[bytes], str | None] | None = None,
) -> str | None:
    """Copy until the body ends (None) or stops early: :data:`TIMEOUT`, :data:`BROKEN`,
    :data:`CLIENT_GONE` (also marked on ``ctx``), or the code ``on_chunk`` returned."""
    while True:
        try:
            chunk = await content.readany()
        except TimeoutError:  # aiohttp's read timeouts are TimeoutErrors too
            return TIMEOUT
        except (aiohttp.ClientError, OSError):
            return BROKEN
        if not chunk:
            return None
        try:
            await out.write(chunk)
        except ConnectionResetError:
            ctx.client_disconnected = True
            return CLIENT_GONE
        if on_chunk is not None:
            stop = on_chunk(chunk)
            if stop is not None:
                return stop
