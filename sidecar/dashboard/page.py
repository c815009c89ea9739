"""The built-in ``/dashboard`` page: the Grafana boards' ClickHouse panels, server-rendered.

Routes (registered by :func:`setup_dashboard` before the catch-all pass-through)::

    GET  /dashboard            the page; ?range=15m|1h|6h|24h|7d, ?search=<trace/hand-off id>
    GET  /dashboard/login      sign-in form; ?ticket=... signs in once
    POST /dashboard/login      sign in (token, or user + password; login CSRF)
    POST /dashboard/tickets    API: a one-time login link (Authorization)

Protected like the review UI, with the same credentials (``handoff.review``) and the
same :class:`~sidecar.handoff.auth.ReviewAuth` machinery, its sign-in lockout included
(failures here and at ``/review`` count together; a locked-out client gets 429): an
``Authorization`` header (bearer or basic), or a signed session cookie
``railwatch_dashboard`` (HttpOnly, SameSite=Strict, Path=/dashboard). Unauthenticated page views go to the sign-in form,
anything else gets a 401 in the OpenAI error shape. Pages carry a CSP that allows no
script and no external asset; charts are inline SVG (:mod:`.svg`).

Data: the panel SQL of :mod:`.panels`, macros expanded by :mod:`.sql`, run on the
ClickHouse exporter's client (serialised with its inserts, in a thread) with
``max_execution_time`` and a row cap. Without a ClickHouse exporter the page says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import jinja2
import orjson
from aiohttp import web
from markupsafe import Markup
from prometheus_client import CollectorRegistry

from exporters.batch import ExportPipeline
from sidecar.dashboard import panels as catalog
from sidecar.dashboard.live import LiveTable, live_tables
from sidecar.dashboard.sql import TimeRange, expand, with_database
from sidecar.dashboard.svg import format_number, line_chart
from sidecar.errors import error_json
from sidecar.handoff.auth import LoginLockedOut, ReviewAuth, retry_after
from sidecar.pipeline.responses import plain_error_response

logger = logging.getLogger(__name__)

SESSION_COOKIE = "railwatch_dashboard"
LOGIN_COOKIE = "railwatch_dashboard_login"
RANGES = {"15m": 900, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
MAX_ROWS = 500
QUERY_TIMEOUT_S = 10
MAX_SEARCH_CHARS = 64
_HTML_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
QueryRunner = Callable[[Callable[[Any, str], Any]], Any]
RunnerLookup = Callable[[], QueryRunner | None]


@dataclass(frozen=True, slots=True)
class RenderedPanel:
    board: str
    key: str
    title: str
    kind: str
    chart: Markup | None
    columns: tuple[str, ...]
    rows: list[list[str]]
    error: str | None = None


def templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("sidecar.dashboard", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def _cell(value: Any, unit: str = "") -> str:
    if isinstance(value, float):
        return format_number(value, unit)
    return "" if value is None else str(value)


def query_panels(run: QueryRunner, window: TimeRange, search: str) -> list[RenderedPanel]:
    """Run every built-in SQL panel and render it. Blocks (ClickHouse); a failing panel
    is rendered with its error type, never raised."""
    settings = {"max_execution_time": QUERY_TIMEOUT_S, "max_result_rows": MAX_ROWS,
                "result_overflow_mode": "break"}
    out: list[RenderedPanel] = []
    for board, panel in catalog.sql_panels():
        if not panel.builtin:
            continue

        def fetch(client: Any, db: str, panel: catalog.SqlPanel = panel) -> Any:
            return client.query(expand(with_database(panel.sql, db), window, search),
                                settings=settings)

        try:
            result = run(fetch)
        except Exception as exc:  # noqa: BLE001 - one broken panel must not break the page
            logger.warning("dashboard panel %s failed: %s", panel.key, type(exc).__name__)
            out.append(RenderedPanel(board.uid, panel.key, panel.title, panel.kind, None,
                                     panel.columns, [], type(exc).__name__))
            continue
        rows = [list(r) for r in result.result_rows][:MAX_ROWS]
        chart = (line_chart(rows, unit=panel.unit, title=panel.title)
                 if panel.kind == "timeseries" else None)
        cells = [[_cell(v, panel.unit) for v in r] for r in rows]
        out.append(RenderedPanel(board.uid, panel.key, panel.title, panel.kind, chart,
                                 tuple(result.column_names), cells))
    return out


def clickhouse_runner(exports: ExportPipeline) -> RunnerLookup:
    """The store runner of the started ClickHouse exporter in ``exports``, if any
    (looked up per call: exporters join the pipeline as they start)."""
    from exporters.clickhouse.exporter import ClickHouseExporter

    def lookup() -> QueryRunner | None:
        for processor in exports.processors:
            if isinstance(processor.exporter, ClickHouseExporter):
                return processor.exporter.store.run
        return None

    return lookup


def setup_dashboard(app: web.Application, auth: ReviewAuth, runner: RunnerLookup,
                    registry: CollectorRegistry | None = None) -> None:
    """Add the ``/dashboard`` routes to ``app`` (before its catch-all route). ``registry``:
    this sidecar's Prometheus registry, for the page's "now" tables (``None``: none)."""
    env = templates()

    def page(name: str, status: int = 200, **context: Any) -> web.Response:
        html = env.get_template(name).render(**context)
        return web.Response(text=html, status=status, content_type="text/html",
                            charset="utf-8", headers=_HTML_HEADERS)

    def set_session(response: web.StreamResponse, reviewer: str) -> None:
        _, cookie = auth.new_session(reviewer)
        response.set_cookie(SESSION_COOKIE, cookie, path="/dashboard", httponly=True,
                            samesite="Strict", secure=auth.secure_cookies,
                            max_age=int(auth.session_ttl_s))

    def who(request: web.Request) -> tuple[str | None, web.Response | None]:
        """The reviewer (session cookie or ``Authorization``), or a refusal (locked out)."""
        session = auth.session(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            return session.reviewer, None
        reviewer, wait = auth.authorize_header(request.headers.get("Authorization"),
                                               request.remote)
        return reviewer, (plain_error_response(LoginLockedOut(wait)) if wait > 0.0 else None)

    def unauthorized() -> web.Response:
        return web.Response(
            body=error_json("authentication required", "authentication_error", None,
                            "unauthorized"),
            status=401, content_type="application/json",
            headers={"WWW-Authenticate": 'Bearer realm="railwatch-dashboard"',
                     "Cache-Control": "no-store"})

    def redirect(location: str) -> web.Response:
        return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})

    def login_page(error: str | None = None, status: int = 200) -> web.Response:
        nonce, token = auth.login_nonce()
        response = page("login.html", status, login_csrf=token, error=error,
                        uses_token=auth.uses_token, uses_basic=auth.uses_basic)
        response.set_cookie(LOGIN_COOKIE, nonce, path="/dashboard/login", httponly=True,
                            samesite="Strict", secure=auth.secure_cookies, max_age=900)
        return response

    async def dashboard(request: web.Request) -> web.StreamResponse:
        reviewer, refused = who(request)
        if refused is not None:
            return refused
        if reviewer is None:
            if "text/html" in request.headers.get("Accept", ""):
                return redirect("/dashboard/login")
            return unauthorized()
        range_key = request.query.get("range", "1h")
        span = RANGES.get(range_key, RANGES["1h"])
        search = request.query.get("search", "").strip()[:MAX_SEARCH_CHARS]
        now = time.time()
        window = TimeRange(now - span, now, max(60, span // 60 // 60 * 60))
        run = runner()
        rendered: Sequence[RenderedPanel] = []
        if run is not None:
            rendered = await asyncio.to_thread(query_panels, run, window, search)
        live: list[LiveTable] = []
        if registry is not None:
            live = await asyncio.to_thread(live_tables, registry)
        boards = [(b, [p for p in rendered if p.board == b.uid]) for b in catalog.BOARDS]
        return page("dashboard.html", boards=boards, storage=run is not None, live=live,
                    ranges=list(RANGES), range_key=range_key, search=search,
                    reviewer=reviewer)

    async def login_form(request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket")
        if ticket:
            reviewer = auth.redeem_ticket(ticket[:256])
            if reviewer is None:
                return login_page("This sign-in link is invalid or was used already.", 403)
            response = redirect("/dashboard")
            set_session(response, reviewer)
            return response
        return login_page()

    async def login_submit(request: web.Request) -> web.StreamResponse:
        raw = await request.content.read(8192)
        with suppress(UnicodeDecodeError):
            form = dict(parse_qsl(raw.decode("utf-8"), max_num_fields=10))
            if auth.check_login_csrf(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
                user = form.get("username") or None
                wait = auth.lockout_s(request.remote, user)
                if wait > 0.0:
                    response = login_page("Too many failed sign-ins; try again later.", 429)
                    response.headers["Retry-After"] = retry_after(wait)
                    return response
                reviewer = auth.check_login(form.get("token"), user, form.get("password"),
                                            request.remote)
                if reviewer is not None:
                    response = redirect("/dashboard")
                    set_session(response, reviewer)
                    response.del_cookie(LOGIN_COOKIE, path="/dashboard/login")
                    return response
        return login_page("Sign-in failed.", 403)

    async def issue_ticket(request: web.Request) -> web.StreamResponse:
        reviewer, refused = who(request)
        if refused is not None:
            return refused
        if reviewer is None:
            return unauthorized()
        ticket = auth.issue_ticket(reviewer)
        return web.Response(body=orjson.dumps({"login_url": f"/dashboard/login?ticket={ticket}"}),
                            status=201, content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    router = app.router
    router.add_get("/dashboard", dashboard)
    router.add_get("/dashboard/login", login_form)
    router.add_post("/dashboard/login", login_submit)
    router.add_post("/dashboard/tickets", issue_ticket)

