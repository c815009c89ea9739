"""Helpers for the hand-off tests (servers on loopback, an HTTP client with cookies)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from sidecar.handoff.auth import ReviewAuth
from sidecar.handoff.service import HandoffService

TOKEN = "test-review-token-0123456789"


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@dataclass
class Receiver:
    """A webhook receiver that answers from a script of statuses (then 200)."""

    url: str
    statuses: list[int]
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def script(self, *statuses: int) -> None:
        self.statuses[:] = list(statuses)


@dataclass
class ReviewApp:
    url: str
    service: HandoffService
    auth: ReviewAuth


def client_session() -> aiohttp.ClientSession:
    # unsafe: accept cookies for an IP-address host (127.0.0.1)
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
