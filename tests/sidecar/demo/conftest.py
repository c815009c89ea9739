"""The demo upstream on a free port, an OpenAI client for it and a plain HTTP session."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio
from openai import AsyncOpenAI

from sidecar.demo import DemoUpstream, start_demo_upstream


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[DemoUpstream]:
    up = await start_demo_upstream("127.0.0.1", 0)
    yield up
    await up.close()


@pytest_asyncio.fixture
async def client(upstream: DemoUpstream) -> AsyncIterator[AsyncOpenAI]:
    oai = AsyncOpenAI(base_url=upstream.base_url, api_key="x", max_retries=0, timeout=10)
    yield oai
    await oai.close()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session
