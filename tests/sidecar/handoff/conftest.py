"""Fixtures for the hand-off tests: the ClickHouse store on the shared engine, a
webhook receiver and the review app, each a real server on loopback."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from aiohttp import web

from sidecar.handoff.auth import ReviewAuth
from sidecar.handoff.clickhouse import ClickHouseHandoffStore, locked_runner
from sidecar.handoff.config import HandoffSettings
from sidecar.handoff.routes import setup_handoff_routes
from sidecar.handoff.service import HandoffService
from tests.sidecar.handoff._support import TOKEN, Receiver, ReviewApp, serve

if TYPE_CHECKING:
    from tests.conftest import Backend


@pytest.fixture
def ch_store(backend: Backend, review_database: str) -> ClickHouseHandoffStore:
    # what ClickHouseExporter.store.run provides in the sidecar: one client, one lock
    return ClickHouseHandoffStore(locked_runner(backend.admin, review_database, threading.Lock()))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver("", [])

    async def hook(request: web.Request) -> web.Response:
        rec.paths.append(request.path_qs)
        rec.bodies.append(orjson.loads(await request.read()))
        status = rec.statuses.pop(0) if rec.statuses else 200
        if 200 <= status < 300:
            rec.event.set()
        headers = {"Retry-After": "1"} if status == 429 else None
        return web.Response(status=status, text="ok" if status < 300 else "nope",
                            headers=headers)

    app = web.Application()
    app.router.add_post("/services/T000/B000/secretpart", hook)
    runner, base = await serve(app)
    rec.url = f"{base}/services/T000/B000/secretpart?token=querysecret"
    yield rec
    await runner.cleanup()


@pytest.fixture
async def make_review_app(
    ch_store: ClickHouseHandoffStore,
) -> AsyncIterator[Callable[..., Awaitable[ReviewApp]]]:
    """``await make_review_app(**handoff_settings)``: the review routes and a service
    on the ClickHouse store, served on loopback."""
    started: list[tuple[web.AppRunner, HandoffService]] = []

    async def factory(**settings: Any) -> ReviewApp:
        options: dict[str, Any] = {"enabled": True, "review": {"token": TOKEN}}
        options.update(settings)
        hs = HandoffSettings.model_validate(options)
        service = HandoffService(hs, ch_store)
        auth = ReviewAuth.from_settings(hs.review)
        app = web.Application()
        setup_handoff_routes(app, service, auth)
        await service.start()
        runner, base = await serve(app)
        started.append((runner, service))
        return ReviewApp(base, service, auth)

    yield factory
    for runner, service in started:
        await runner.cleanup()
        await service.close(1.0)
