"""Wire the built-in dashboard and the hand-off backlog gauges into a sidecar app.

One call from the route setup, :func:`setup`, so the rest of the sidecar needs no
knowledge of this package. It adds the ``/dashboard`` routes, and when ``/metrics`` is
on, the backlog gauges with their background refresher (started after the app's
components, stopped before they close).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

from aiohttp import web

from sidecar.dashboard.backlog import BacklogGauges, run_refresher
from sidecar.dashboard.page import clickhouse_runner, setup_dashboard
from sidecar.handoff.auth import ReviewAuth

REFRESH_INTERVAL_S = 30.0
_TASK: web.AppKey[asyncio.Task[None]] = web.AppKey("railwatch_dashboard_refresher", asyncio.Task)
_OWN_AUTH: web.AppKey[ReviewAuth] = web.AppKey("railwatch_dashboard_auth", ReviewAuth)


def startup_notice(app: web.Application, base_url: str) -> str | None:
    """The line to print once when the dashboard's own token was generated (no hand-off
    and no ``handoff.review`` credential); ``None`` otherwise and on every later call.
    With hand-off on, the review UI's auth is shared and its own notice covers it."""
    auth = app.get(_OWN_AUTH)
    if auth is None:
        return None
    return auth.startup_notice(base_url, label="dashboard", path="/dashboard/login")


def setup(app: web.Application, runtime: Any) -> None:  # sidecar.app.Runtime (being moved)
    """Add ``/dashboard`` and, with metrics on, the hand-off backlog gauges."""
    auth = runtime.review_auth
    if auth is None:  # no hand-off: the dashboard's own, from ``handoff.review``
        auth = app[_OWN_AUTH] = ReviewAuth.from_settings(runtime.settings.handoff.review)
    registry = runtime.metrics.registry if runtime.metrics is not None else None
    setup_dashboard(app, auth, clickhouse_runner(runtime.exports), registry)
    if runtime.metrics is None or runtime.feedback_store is None:
        return
    gauges = BacklogGauges(runtime.feedback_store)
    runtime.metrics.registry.register(gauges)

    async def start(app_: web.Application) -> None:  # after the components started
        app_[_TASK] = asyncio.get_running_loop().create_task(
            run_refresher(gauges, REFRESH_INTERVAL_S))

    async def stop(app_: web.Application) -> None:  # before they close
        task = app_.get(_TASK)
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
