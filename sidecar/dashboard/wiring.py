"""Wire the built-in dashboard and the hand-off backlog gauges into a sidecar app.

One call from the route setup, :func:`setup`, so the rest of the sidecar needs no
knowledge of this package. It adds the ``/dashboard`` routes, and when ``/metrics`` is
on, the backlog gauges with their background refresher (started after the app's
components, stopped before they close).
"""

from __future__ import annotations

import asyncio
import secrets
from contextlib import suppress
from typing import Any

from aiohttp import web

from sidecar.dashboard.backlog import BacklogGauges, run_refresher
from sidecar.dashboard.page import clickhouse_runner, setup_dashboard
from sidecar.handoff.auth import ReviewAuth

REFRESH_INTERVAL_S = 30.0
_TASK: web.AppKey[asyncio.Task[None]] = web.AppKey("railwatch_dashboard_refresher", asyncio.Task)


class GeneratedToken:
    """A token generated because no credential was configured: the command line prints it
    once at start-up (:func:`startup_notice`); nothing logs it."""

    def __init__(self, token: str | None) -> None:
        self._token = token

    def take(self) -> str | None:
        token, self._token = self._token, None
        return token


_GENERATED: web.AppKey[GeneratedToken] = web.AppKey("railwatch_dashboard_token", GeneratedToken)


def startup_notice(app: web.Application, base_url: str) -> str | None:
    """The line to print once when the dashboard's token was generated; ``None`` otherwise
    and on every later call."""
    holder = app.get(_GENERATED)
    token = holder.take() if holder is not None else None
    if token is None:
        return None
    return (f"railwatch dashboard: {base_url.rstrip('/')}/dashboard/login  "
            f"token (generated, valid until restart): {token}")


def dashboard_auth(runtime: Any) -> tuple[ReviewAuth, str | None]:
    """The review UI's auth when hand-off is on; else one from ``handoff.review``. The
    second value is a generated token (no credential configured), to print once."""
    if runtime.review_auth is not None:
        return runtime.review_auth, None
    review = runtime.settings.handoff.review
    if review.token is not None or review.basic_user is not None:
        return ReviewAuth.from_settings(review), None
    token = secrets.token_urlsafe(32)
    return ReviewAuth(token=token, session_ttl_s=review.session_ttl_s), token


def setup(app: web.Application, runtime: Any) -> None:  # sidecar.app.Runtime (being moved)
    """Add ``/dashboard`` and, with metrics on, the hand-off backlog gauges."""
    auth, generated = dashboard_auth(runtime)
    registry = runtime.metrics.registry if runtime.metrics is not None else None
    setup_dashboard(app, auth, clickhouse_runner(runtime.exports), registry)
    app[_GENERATED] = GeneratedToken(generated)
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
