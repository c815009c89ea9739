"""HTTP surface of hand-offs: the review UI (``/review``) and the client's poll.

Routes (register them before the sidecar's catch-all pass-through route)::

    GET  /review                   queue of open hand-offs, newest first   (auth)
    GET  /review/login             sign-in form; ?ticket=... signs in once
    POST /review/login             sign in (token, or user + password)     (login CSRF)
    POST /review/logout            sign out                                (auth, CSRF)
    POST /review/tickets           API: a one-time login link              (Authorization)
    GET  /review/{id}              a hand-off: conversation, findings      (auth)
    POST /review/{id}/resolve      approve | edit | reject                 (auth, CSRF)
    GET  /v1/handoffs/{id}         the client's poll: status and answer only
                                   (x-railwatch-handoff-token, or a reviewer's Authorization)

Failed sign-ins (form or ``Authorization``) lock the client address and the user
out for a growing time (429 with ``Retry-After``, checked before the credential);
the poll is rate limited per client address (``rate_limits.public``).

Unauthenticated page views are redirected to the sign-in form; every other
unauthenticated request gets a 401 in the OpenAI error shape. Neither carries
content. Pages are rendered by jinja2 with ``autoescape=True`` and sent with a
CSP that allows no script, ``no-store`` caching and no framing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote

import jinja2
import orjson
from aiohttp import web
from markupsafe import Markup

from sidecar.errors import RequestError, error_json
from sidecar.handoff.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoginLockedOut,
    ReviewAuth,
    Session,
    retry_after,
)
from sidecar.handoff.highlight import highlight
from sidecar.handoff.model import ConversationPart, Handoff
from sidecar.handoff.response import HEADER_HANDOFF_TOKEN
from sidecar.handoff.service import HandoffService
from sidecar.pipeline.ingress import read_body
from sidecar.pipeline.responses import plain_error_response
from sidecar.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

_HTML_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_NEXT = re.compile(r"^/review(?:/[0-9a-f]{32})?\Z")
_FORM_TYPE = "application/x-www-form-urlencoded"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def review_templates() -> jinja2.Environment:
    """The review UI's jinja2 environment (autoescaped, strict about undefined names)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sidecar", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    env.filters["marked"] = _marked
    env.filters["labels"] = _labels
    return env


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _marked(part: ConversationPart) -> Markup:
    return highlight(part.text, part.spans)


def _labels(h: Handoff) -> list[str]:
    return sorted({f"{s.detector}/{s.label}" if s.detector else s.label for _, s in h.findings})


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _safe_next(value: str | None) -> str:
    return value if value and _NEXT.match(value) else "/review"


def setup_handoff_routes(
    app: web.Application,
    service: HandoffService,
    review_auth: ReviewAuth,
    *,
    templates: jinja2.Environment | None = None,
    max_form_bytes: int = 256 * 1024,
    queue_limit: int = 200,
    limiter: RateLimiter | None = None,
) -> None:
    """Add the review UI and ``GET /v1/handoffs/{id}`` to ``app``."""
    env = templates or review_templates()
    auth = review_auth
    challenge = ", ".join(
        ([] if not auth.uses_token else ['Bearer realm="railwatch-review"'])
        + ([] if not auth.uses_basic else ['Basic realm="railwatch-review"'])
    )

    def page(name: str, status: int = 200, **context: Any) -> web.Response:
        context.setdefault("reviewer", None)
        context.setdefault("csrf", "")
        html = env.get_template(name).render(**context)
        return web.Response(text=html, status=status, content_type="text/html",
                            charset="utf-8", headers=_HTML_HEADERS)

    def set_session_cookie(response: web.StreamResponse, cookie: str) -> None:
        response.set_cookie(SESSION_COOKIE, cookie, path="/review", httponly=True,
                            samesite="Strict", secure=auth.secure_cookies,
                            max_age=int(auth.session_ttl_s))

    def header_reviewer(request: web.Request) -> tuple[str | None, web.Response | None]:
        """The reviewer an ``Authorization`` header proves, or a refusal (locked out)."""
        reviewer, wait = auth.authorize_header(request.headers.get("Authorization"),
                                               request.remote)
        return reviewer, (plain_error_response(LoginLockedOut(wait)) if wait > 0.0 else None)

    def identify(request: web.Request) -> tuple[Session | None, str | None, web.Response | None]:
        """The session (from the cookie, or a new one for a valid Authorization
        header), a cookie value to set when it is new, or a refusal (locked out)."""
        session = auth.session(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            return session, None, None
        reviewer, refused = header_reviewer(request)
        if reviewer is None:
            return None, None, refused
        session, cookie = auth.new_session(reviewer)
        return session, cookie, None

    def deny(request: web.Request) -> web.Response:
        wants_page = request.method in ("GET", "HEAD") and "text/html" in request.headers.get(
            "Accept", "")
        if wants_page:
            return _redirect(f"/review/login?next={quote(_safe_next(request.path))}")
        return web.Response(
            body=error_json("authentication required", "authentication_error", None,
                            "unauthorized"),
            status=401, content_type="application/json",
            headers={"WWW-Authenticate": challenge, "Cache-Control": "no-store"},
        )

    def authenticated(handler: Callable[[web.Request, Session], Awaitable[web.StreamResponse]]
                      ) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            session, new_cookie, refused = identify(request)
            if refused is not None:
                return refused
            if session is None:
                return deny(request)
            response = await handler(request, session)
            if new_cookie is not None:
                set_session_cookie(response, new_cookie)
            return response
        return wrapped

    async def read_form(request: web.Request) -> dict[str, str]:
        if request.content_type != _FORM_TYPE:
            raise web.HTTPUnsupportedMediaType(text="expected an HTML form")
        try:
            raw = await read_body(request, max_form_bytes)
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
        except RequestError:
            raise web.HTTPRequestEntityTooLarge(max_size=max_form_bytes,
                                                actual_size=request.content_length or 0
                                                ) from None
        except (UnicodeDecodeError, ValueError):
            raise web.HTTPBadRequest(text="malformed form") from None
        return dict(pairs)

    def error_page(session: Session | None, status: int, title: str, message: str
                   ) -> web.Response:
        return page("error.html", status, code=status, title=title, message=message,
                    reviewer=session.reviewer if session else None,
                    csrf=auth.csrf_token(session) if session else "")

    # -- sign-in ---------------------------------------------------------------------------

    def login_page(next_url: str, error: str | None = None, status: int = 200) -> web.Response:
        nonce, token = auth.login_nonce()
        response = page("login.html", status, login_csrf=token, next=next_url, error=error,
                        uses_token=auth.uses_token, uses_basic=auth.uses_basic)
        response.set_cookie(LOGIN_COOKIE, nonce, path="/review/login", httponly=True,
                            samesite="Strict", secure=auth.secure_cookies, max_age=900)
        return response

    def signed_in(reviewer: str, next_url: str) -> web.Response:
        _, cookie = auth.new_session(reviewer)
        response = _redirect(next_url)
        set_session_cookie(response, cookie)
        response.del_cookie(LOGIN_COOKIE, path="/review/login")
        return response

    async def login_form(request: web.Request) -> web.Response:
        next_url = _safe_next(request.query.get("next"))
        ticket = request.query.get("ticket")
        if ticket:
            reviewer = auth.redeem_ticket(ticket)
            if reviewer is not None:
                return signed_in(reviewer, next_url)
            return login_page(next_url, "This sign-in link is invalid or was used.", 401)
        return login_page(next_url)

    async def login_submit(request: web.Request) -> web.Response:
        form = await read_form(request)
        next_url = _safe_next(form.get("next"))
        if not auth.check_login_csrf(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
            return login_page(next_url, "The form expired; please sign in again.", 403)
        user = form.get("username") or None
        wait = auth.lockout_s(request.remote, user)
        if wait > 0.0:
            response = login_page(next_url, "Too many failed sign-ins; try again later.", 429)
            response.headers["Retry-After"] = retry_after(wait)
            return response
        reviewer = auth.check_login(form.get("token"), user, form.get("password"),
                                    request.remote)
        if reviewer is None:
            return login_page(next_url, "Those credentials are not valid.", 401)
        return signed_in(reviewer, next_url)

    async def logout(request: web.Request, session: Session) -> web.StreamResponse:
        form = await read_form(request)
        if not auth.check_csrf(session, form.get("csrf")):
            return error_page(session, 403, "Forbidden", "The form's security token is missing "
                              "or invalid; reload the page and try again.")
        auth.revoke(session)
        response = _redirect("/review/login")
        response.del_cookie(SESSION_COOKIE, path="/review")
        return response

    async def issue_ticket(request: web.Request) -> web.Response:
        reviewer, refused = header_reviewer(request)
        if refused is not None:
            return refused
        if reviewer is None:
            return deny(request)
        next_url = _safe_next(request.query.get("next"))
        ticket = auth.issue_ticket(reviewer)
        return _json({"login_url": f"/review/login?ticket={ticket}&next={quote(next_url)}",
                      "expires_in": 120}, 201)

    # -- the queue -------------------------------------------------------------------------

    async def queue(request: web.Request, session: Session) -> web.StreamResponse:
        try:
            handoffs = await service.list_open(queue_limit)
        except RequestError as exc:
            return error_page(session, exc.status, "Unavailable", exc.message)
        return page("queue.html", handoffs=handoffs, reviewer=session.reviewer,
                    csrf=auth.csrf_token(session))

    async def detail(request: web.Request, session: Session) -> web.StreamResponse:
        try:
            handoff = await service.get(request.match_info["id"])
        except RequestError as exc:
            return error_page(session, exc.status, "Unavailable", exc.message)
        if handoff is None:
            return error_page(session, 404, "Not found", "There is no such hand-off.")
        return page("detail.html", h=handoff, error=None, reviewer=session.reviewer,
                    csrf=auth.csrf_token(session))

    async def resolve(request: web.Request, session: Session) -> web.StreamResponse:
        handoff_id = request.match_info["id"]
        form = await read_form(request)
        if not auth.check_csrf(session, form.get("csrf")):
            return error_page(session, 403, "Forbidden", "The form's security token is missing "
                              "or invalid; reload the page and try again.")
        try:
            await service.resolve(handoff_id, form.get("action", ""), form.get("answer"),
                                  session.reviewer)
        except RequestError as exc:
            return error_page(session, exc.status, "Not resolved", exc.message)
        return _redirect(f"/review/{handoff_id}")

    async def not_found(request: web.Request, session: Session) -> web.StreamResponse:
        return error_page(session, 404, "Not found", "There is no such page.")

    # -- the client's poll -----------------------------------------------------------------

    async def poll(request: web.Request) -> web.Response:
        """Needs the hand-off's poll token (or a reviewer's ``Authorization``); a wrong
        token gets the same 404 as an unknown id, so ids cannot be probed."""
        handoff_id = request.match_info["id"]
        limited = limiter.check_public(request.remote) if limiter is not None else None
        if limited is not None:
            return plain_error_response(limited)
        token = request.headers.get(HEADER_HANDOFF_TOKEN)
        if not token and not request.headers.get("Authorization"):
            return web.Response(
                body=error_json(f"the hand-off's poll token is required in {HEADER_HANDOFF_TOKEN}",
                                "authentication_error", None, "handoff_token_required"),
                status=401, content_type="application/json")
        allowed = service.poll_tokens.check(handoff_id, token)
        if not allowed and not token:
            reviewer, refused = header_reviewer(request)
            if refused is not None:
                return refused
            allowed = reviewer is not None
        not_found = web.Response(body=error_json("no such hand-off", "invalid_request_error",
                                                 None, "handoff_not_found"),
                                 status=404, content_type="application/json")
        if not allowed:
            return not_found
        try:
            handoff = await service.get(handoff_id)
        except RequestError as exc:
            return plain_error_response(exc)
        if handoff is None:
            return not_found
        return _json(handoff.public_view())

    router = app.router
    router.add_get("/review", authenticated(queue))
    router.add_get("/review/login", login_form)
    router.add_post("/review/login", login_submit)
    router.add_post("/review/logout", authenticated(logout))
    router.add_post("/review/tickets", issue_ticket)
    router.add_get(r"/review/{id:[0-9a-f]{32}}", authenticated(detail))
    router.add_post(r"/review/{id:[0-9a-f]{32}}/resolve", authenticated(resolve))
    router.add_route("*", "/review/{tail:.*}", authenticated(not_found))
    router.add_get("/v1/handoffs/{id}", poll)
