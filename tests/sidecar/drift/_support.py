"""Helpers of the drift end-to-end tests: drive traffic through a sidecar, change the
demo upstream's behaviour, flush the drift rows, read ``/metrics``. All block the
calling thread; the aiohttp calls run on the test's ``loop_thread``."""

from __future__ import annotations

import time
from typing import Any

from openai import OpenAI

from tests.helpers.servers import LoopThread, RunningSidecar

SYSTEM = "You are the support assistant of Example Corp. Answer briefly and politely."


def behave(loop_thread: LoopThread, upstream: Any, **body: Any) -> None:
    import aiohttp

    async def put() -> None:
        async with aiohttp.ClientSession() as s, s.put(f"{upstream.url}/_demo/behaviour",
                                                       json=body) as r:
            assert r.status == 200

    loop_thread.run(put())


def traffic(sidecar: RunningSidecar, texts: list[str], system: str = SYSTEM) -> tuple[float, float]:
    client = OpenAI(base_url=sidecar.base_url, api_key="unused", max_retries=0)
    start = time.time()
    for text in texts:
        client.chat.completions.create(model="railwatch-demo", messages=[
            {"role": "system", "content": system}, {"role": "user", "content": text}])
    end = time.time()
    return start, end + 0.001


def flush(sidecar: RunningSidecar) -> None:
    assert sidecar.runtime.intake.force_flush(20)
    assert sidecar.runtime.intake.force_flush(20)  # the drift rows the first flush produced


def metrics_text(loop_thread: LoopThread, sidecar: RunningSidecar) -> str:
    import aiohttp

    async def get() -> str:
        async with aiohttp.ClientSession() as s, s.get(f"{sidecar.url}/metrics") as r:
            return await r.text()

    return loop_thread.run(get())
