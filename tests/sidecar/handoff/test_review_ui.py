"""The review UI over real HTTP: sign-in, CSRF-protected forms, resolutions, the poll."""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
import pytest

from exporters.clickhouse import review
from sidecar.handoff.auth import ReviewAuth
from sidecar.handoff.config import ReviewSettings
from sidecar.handoff.model import ConversationPart, Handoff, Span
from tests.sidecar.handoff._support import TOKEN, ReviewApp, client_session

if TYPE_CHECKING:
    from tests.conftest import Backend

MakeApp = Callable[..., Awaitable[ReviewApp]]
HOSTILE = '<script>alert("pwned")</script> my mail is jane@doe.com'
ANSWER = "Sure: <img src=x onerror=alert(1)> here you go."
HTML = {"Accept": "text/html"}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _csrf(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF field in the page"
    return match.group(1)


async def _handoff(app: ReviewApp, answer: str | None = ANSWER, trace: str = "a" * 32) -> Handoff:
    start = HOSTILE.index("jane@doe.com")
    user = ConversationPart("user", HOSTILE, (
        Span(start, start + 12, "EMAIL_ADDRESS", "pii", 0.99, "input", "flag"),))
    answer_part = None
    if answer is not None:
        answer_part = ConversationPart("assistant", answer, (
            Span(0, 4, "toxicity", "toxicity", 0.8, "output", "handoff"),))
    return await app.service.create(
        reason="policy: toxicity", messages=[ConversationPart("system", "Be kind."), user],
        answer=answer_part, trace_id=trace, request_id="b" * 32, route="chat", model="m1")


async def _login(http: aiohttp.ClientSession, app: ReviewApp) -> None:
    async with http.get(f"{app.url}/review/login") as resp:
        assert resp.status == 200
        token = _csrf(await resp.text())
    async with http.post(f"{app.url}/review/login", allow_redirects=False,
                         data={"csrf": token, "token": TOKEN, "next": "/review"}) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/review"
        cookie = resp.cookies["railwatch_review"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie["path"] == "/review"


async def test_unauthenticated_requests_get_no_content(make_review_app: MakeApp) -> None:
    app = await make_review_app()
    h = await _handoff(app)
    async with client_session() as http:
        for path in ("/review", f"/review/{h.id}", "/review/whatever"):
            async with http.get(app.url + path, headers=HTML, allow_redirects=False) as resp:
                assert resp.status == 303
                assert resp.headers["Location"].startswith("/review/login?next=")
                assert "script" not in await resp.text()
            async with http.get(app.url + path, allow_redirects=False) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                body = await resp.json()
                assert body["error"]["code"] == "unauthorized"
        async with http.post(f"{app.url}/review/{h.id}/resolve",
                             data={"action": "reject", "answer": "no"}) as resp:
            assert resp.status == 401
            assert "jane" not in await resp.text()
        for bad in ("Bearer wrong-token-wrong-token", "Basic Zm9vOmJhcg==", "Bearer",
                    "Basic !!!"):
            async with http.get(f"{app.url}/review/{h.id}", allow_redirects=False,
                                headers={"Authorization": bad}) as resp:
                assert resp.status == 401
        http.cookie_jar.update_cookies({"railwatch_review": "forged.cookie"})
        async with http.get(f"{app.url}/review", allow_redirects=False) as resp:
            assert resp.status == 401
    got = await app.service.get(h.id)
    assert got is not None and got.is_open


async def test_review_flow_approve_edit_reject(
    make_review_app: MakeApp, backend: Backend, review_database: str
) -> None:
    app = await make_review_app()
    approve = await _handoff(app, trace="1" * 32)
    edit = await _handoff(app, "The original answer.", trace="2" * 32)
    reject = await _handoff(app, None, trace="3" * 32)
    async with client_session() as http:
        await _login(http, app)
        async with http.get(f"{app.url}/review") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
            assert resp.headers["Cache-Control"] == "no-store"
            page = await resp.text()
        # newest first
        assert page.index(reject.id) < page.index(edit.id) < page.index(approve.id)
        assert "pii/EMAIL_ADDRESS" in page

        async with http.get(f"{app.url}/review/{approve.id}") as resp:
            detail = await resp.text()
        assert "<script>" not in detail and "<img" not in detail
        assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in detail
        assert '<mark title="pii/EMAIL_ADDRESS">jane@doe.com</mark>' in detail
        assert '<mark title="toxicity/toxicity">Sure</mark>: &lt;img src=x' in detail
        csrf = _csrf(detail)

        async with http.post(f"{app.url}/review/{approve.id}/resolve", allow_redirects=False,
                             data={"csrf": csrf, "action": "approve"}) as resp:
            assert resp.status == 303 and resp.headers["Location"] == f"/review/{approve.id}"
        async with http.post(f"{app.url}/review/{edit.id}/resolve",
                             data={"csrf": csrf, "action": "edit",
                                   "answer": "A kinder answer.\r\nSecond line."}) as resp:
            assert resp.status == 200  # followed the redirect to the resolved page
            assert "edited" in await resp.text()
        async with http.post(f"{app.url}/review/{reject.id}/resolve",
                             data={"csrf": csrf, "action": "reject",
                                   "answer": "We cannot help with that."}) as resp:
            assert resp.status == 200
        async with http.post(f"{app.url}/review/{reject.id}/resolve",
                             data={"csrf": csrf, "action": "reject", "answer": "again"}) as resp:
            assert resp.status == 409

        polls = {}
        for h in (approve, edit, reject):
            async with http.get(f"{app.url}/v1/handoffs/{h.id}",
                                headers=_poll_headers(app, h.id)) as resp:
                assert resp.status == 200
                polls[h.id] = await resp.json()
        async with http.get(f"{app.url}/review") as resp:
            assert "Nothing waiting" in await resp.text()

    assert polls[approve.id]["status"] == "resolved"
    assert polls[approve.id]["answer"] == ANSWER
    assert polls[approve.id]["resolution"] == "approved"
    assert polls[edit.id]["answer"] == "A kinder answer.\nSecond line."
    assert polls[edit.id]["resolution"] == "edited"
    assert polls[reject.id] == {
        "id": reject.id, "object": "railwatch.handoff", "status": "rejected",
        "answer": "We cannot help with that.", "resolution": "rejected",
        "created_at": int(reject.created_at), "updated_at": polls[reject.id]["updated_at"],
    }
    for body in polls.values():  # only non-sensitive fields and the human's answer
        assert set(body) == {"id", "object", "status", "answer", "resolution", "created_at",
                             "updated_at"}
    resolved = await app.service.get(edit.id)
    assert resolved is not None and resolved.assignee == "token"
    pairs = review.list_feedback(backend.admin, review_database, trace_id="2" * 32)
    assert [(p["kind"], p["comment"], p["corrected_answer"]) for p in pairs] == [
        ("preference", "The original answer.", "A kinder answer.\nSecond line.")]


async def test_posts_without_a_valid_csrf_token_are_refused(make_review_app: MakeApp) -> None:
    app = await make_review_app()
    h = await _handoff(app)
    async with client_session() as other:
        await _login(other, app)
        async with other.get(f"{app.url}/review/{h.id}") as resp:
            foreign = _csrf(await resp.text())  # valid, but for another session
    async with client_session() as http:
        await _login(http, app)
        for data in ({"action": "approve"}, {"action": "approve", "csrf": ""},
                     {"action": "approve", "csrf": "x" * 43}, {"action": "approve",
                                                               "csrf": foreign}):
            async with http.post(f"{app.url}/review/{h.id}/resolve", data=data) as resp:
                assert resp.status == 403
        async with http.post(f"{app.url}/review/logout", data={}) as resp:
            assert resp.status == 403
    # a bearer header alone authenticates, but a form POST still needs the session's token
    async with client_session() as api, api.post(f"{app.url}/review/{h.id}/resolve",
                        headers={"Authorization": f"Bearer {TOKEN}"},
                        data={"action": "approve", "csrf": foreign}) as resp:
        assert resp.status == 403
    got = await app.service.get(h.id)
    assert got is not None and got.is_open


async def test_login_form_checks(make_review_app: MakeApp) -> None:
    app = await make_review_app()
    async with client_session() as http:
        async with http.get(f"{app.url}/review/login") as resp:
            token = _csrf(await resp.text())
        async with http.post(f"{app.url}/review/login",
                             data={"csrf": token, "token": "wrong-token-123456"}) as resp:
            assert resp.status == 401
            assert "not valid" in await resp.text()
        async with http.post(f"{app.url}/review/login",
                             data={"csrf": "forged", "token": TOKEN}) as resp:
            assert resp.status == 403
        # an open redirect is not possible through `next`
        async with http.get(f"{app.url}/review/login") as resp:
            token = _csrf(await resp.text())
        async with http.post(f"{app.url}/review/login", allow_redirects=False,
                             data={"csrf": token, "token": TOKEN,
                                   "next": "//evil.example/review"}) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/review"
        async with http.post(f"{app.url}/review/login",
                             data="token=x", headers={"Content-Type": "text/plain"}) as resp:
            assert resp.status == 415
    # no pre-login cookie: the form token is useless
    async with client_session() as fresh, fresh.post(
            f"{app.url}/review/login", data={"csrf": token, "token": TOKEN}) as resp:
        assert resp.status == 403


async def test_one_time_login_links(make_review_app: MakeApp) -> None:
    app = await make_review_app()
    h = await _handoff(app)
    async with client_session() as http:
        async with http.post(f"{app.url}/review/tickets?next=/review/{h.id}") as resp:
            assert resp.status == 401
        async with http.post(f"{app.url}/review/tickets?next=/review/{h.id}",
                             headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 201
            link = (await resp.json())["login_url"]
        assert TOKEN not in link
        async with http.get(app.url + link, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == f"/review/{h.id}"
        async with http.get(f"{app.url}/review/{h.id}") as resp:
            assert resp.status == 200 and h.id in await resp.text()
    async with client_session() as again, again.get(app.url + link,
                                                    allow_redirects=False) as resp:
        assert resp.status == 401  # used once already


async def test_basic_auth_names_the_reviewer(make_review_app: MakeApp) -> None:
    app = await make_review_app(review={"basic_user": "alice",
                                        "basic_password": "correct horse battery"})
    h = await _handoff(app)
    creds = base64.b64encode(b"alice:correct horse battery").decode()
    async with client_session() as http:
        async with http.get(f"{app.url}/review/{h.id}",
                            headers={"Authorization": f"Basic {creds}"}) as resp:
            assert resp.status == 200
            csrf = _csrf(await resp.text())
        # the page set a session cookie, so the form works without the header
        async with http.post(f"{app.url}/review/{h.id}/resolve",
                             data={"csrf": csrf, "action": "reject", "answer": "No."}) as resp:
            assert resp.status == 200
        async with http.get(f"{app.url}/review", allow_redirects=False) as resp:
            assert resp.status == 200
    async with client_session() as http:
        bad = base64.b64encode(b"alice:wrong password!").decode()
        async with http.get(f"{app.url}/review", headers={"Authorization": f"Basic {bad}"},
                            allow_redirects=False) as resp:
            assert resp.status == 401
            assert 'Basic realm="railwatch-review"' in resp.headers["WWW-Authenticate"]
        async with http.get(f"{app.url}/review/login") as resp:
            page = await resp.text()
            assert 'name="username"' in page and 'name="token"' not in page
            token = _csrf(page)
        async with http.post(f"{app.url}/review/login", allow_redirects=False, data={
                "csrf": token, "username": "alice", "password": "correct horse battery"}) as resp:
            assert resp.status == 303
    got = await app.service.get(h.id)
    assert got is not None and got.assignee == "alice"


async def test_logout_ends_the_session(make_review_app: MakeApp) -> None:
    app = await make_review_app()
    async with client_session() as http:
        await _login(http, app)
        async with http.get(f"{app.url}/review") as resp:
            csrf = _csrf(await resp.text())
        cookie = next(c for c in http.cookie_jar if c.key == "railwatch_review")
        stolen = {"railwatch_review": cookie.value}
        async with http.post(f"{app.url}/review/logout", data={"csrf": csrf},
                             allow_redirects=False) as resp:
            assert resp.status == 303
        async with http.get(f"{app.url}/review", allow_redirects=False) as resp:
            assert resp.status == 401
    # the signed-out cookie is refused by the server too, not only dropped by the browser
    async with client_session() as other:
        async with other.get(f"{app.url}/review", cookies=stolen, allow_redirects=False) as resp:
            assert resp.status in (302, 303, 401)


async def test_poll_unknown_and_pending(make_review_app: MakeApp) -> None:
    app = await make_review_app()
    h = await _handoff(app)
    async with client_session() as http:
        async with http.get(f"{app.url}/v1/handoffs/{'f' * 32}",
                            headers=_poll_headers(app, "f" * 32)) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "handoff_not_found"
        async with http.get(f"{app.url}/v1/handoffs/../../etc") as resp:
            assert resp.status in (401, 404)
        async with http.get(f"{app.url}/v1/handoffs/{h.id}") as resp:
            assert resp.status == 401  # the id alone is not enough
            assert (await resp.json())["error"]["code"] == "handoff_token_required"
        other = await _handoff(app)
        async with http.get(f"{app.url}/v1/handoffs/{h.id}",
                            headers=_poll_headers(app, other.id)) as resp:
            assert resp.status == 404  # another hand-off's token: same answer as unknown
        async with http.get(f"{app.url}/v1/handoffs/{h.id}",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200  # a reviewer may poll too
        async with http.get(f"{app.url}/v1/handoffs/{h.id}",
                            headers=_poll_headers(app, h.id)) as resp:
            body = await resp.json()
    assert body["status"] == "pending" and body["answer"] is None and body["resolution"] is None
    assert "jane" not in str(body)


def _poll_headers(app: ReviewApp, handoff_id: str) -> dict[str, str]:
    return {"x-railwatch-handoff-token": app.service.poll_tokens.token(handoff_id)}


def test_generated_token_is_announced_once() -> None:
    auth = ReviewAuth.from_settings(ReviewSettings())
    line = auth.startup_notice("http://127.0.0.1:8080/")
    assert line is not None and "http://127.0.0.1:8080/review/login" in line
    token = line.rsplit(" ", 1)[-1]
    assert len(token) >= 40 and auth.check_token(token)
    assert auth.startup_notice("http://127.0.0.1:8080") is None
    configured = ReviewAuth.from_settings(ReviewSettings.model_validate({"token": TOKEN}))
    assert configured.startup_notice("x") is None
    other = ReviewAuth.from_settings(ReviewSettings())
    assert not other.check_token(token)  # random per start


def test_sessions_are_signed_and_expire() -> None:
    auth = ReviewAuth(token=TOKEN, session_ttl_s=60)
    session, cookie = auth.new_session("token", now=1000.0)
    assert auth.session(cookie, now=1001.0) == session
    assert auth.session(cookie, now=1061.0) is None  # expired
    body, sig = cookie.split(".")
    assert auth.session(f"{body}.{sig[:-2]}AA", now=1001.0) is None
    assert ReviewAuth(token=TOKEN).session(cookie, now=1001.0) is None  # another process key
    assert auth.check_csrf(session, auth.csrf_token(session))
    assert not auth.check_csrf(None, auth.csrf_token(session))
    with pytest.raises(ValueError):
        ReviewAuth()
