"""What the misbehaving-upstream suites share: canned OpenAI bodies, one POST, one trace.

Used by ``tests/sidecar/test_upstream_limits.py`` and ``tests/faults/test_upstream_faults.py``;
their upstreams are started with the ``scripted_upstream`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio

import aiohttp

from sidecar.record import TraceRecord
from tests.helpers.servers import RunningSidecar

# ``CHUNK % (index, text)``: one chat-completion SSE event; ``ANSWER % text``: a unary answer.
CHUNK = (b'data: {"id":"c1","object":"chat.completion.chunk","model":"m",'
         b'"choices":[{"index":%s,"delta":{"content":"%s"}}]}\n\n')
ANSWER = (b'{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,'
          b'"message":{"role":"assistant","content":"%s"},"finish_reason":"stop"}]}')


def post(sc: RunningSidecar, stream: bool = False, timeout_s: float = 20.0) -> tuple[int, bytes]:
    """POST one chat completion to the sidecar; (status, whole body). Blocks the calling
    thread (runs its own event loop); raises ``TimeoutError`` after ``timeout_s`` seconds."""

    async def go() -> tuple[int, bytes]:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.post(
                sc.url + "/v1/chat/completions", json={
                    "model": "m", "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}]}) as resp:
            return resp.status, await resp.read()

    return asyncio.run(go())


def one_record(sc: RunningSidecar) -> TraceRecord:
    """The sidecar's one trace record, once written (waits as ``MemoryExporter.wait_for`` does)."""
    rec: TraceRecord = sc.memory.wait_for(lambda rs: len(rs) == 1)[0]
    return rec
