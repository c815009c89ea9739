"""Failed review sign-ins lock out the address and the user, with exponential backoff."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable

import pytest

from sidecar.handoff.auth import PollTokens
from sidecar.handoff.lockout import LoginThrottle
from tests.sidecar.handoff._support import ReviewApp, client_session

MakeApp = Callable[..., Awaitable[ReviewApp]]
USER, PASSWORD = "alice", "correct-horse-battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_after_the_free_failures() -> None:
    clock = Clock()
    throttle = LoginThrottle(free_failures=2, backoff_s=1.0, backoff_max_s=8.0, clock=clock)
    for _ in range(2):
        throttle.failed("10.0.0.1", None)
        assert throttle.locked_for("10.0.0.1", None) == 0.0
    waits = []
    for _ in range(5):
        throttle.failed("10.0.0.1", None)
        wait = throttle.locked_for("10.0.0.1", None)
        waits.append(wait)
        clock.now += wait
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]  # doubling, capped
    assert throttle.locked_for("10.0.0.2", None) == 0.0  # other addresses are free
    throttle.succeeded("10.0.0.1", None)
    assert throttle.locked_for("10.0.0.1", None) == 0.0


def test_the_user_is_locked_from_every_address_and_state_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(free_failures=1, backoff_s=5.0, max_keys=50, clock=clock)
    for i in range(2):
        throttle.failed(f"10.0.0.{i}", "bob")
    assert throttle.locked_for("10.9.9.9", "bob") == 5.0
    assert throttle.locked_for("10.9.9.9", "carol") == 0.0
    for i in range(1000):
        throttle.failed(f"10.1.{i // 256}.{i % 256}", None)
    assert len(throttle) <= 50
    assert not any("bob" in str(key) for key in throttle._entries)  # user names are hashed


def test_poll_tokens() -> None:
    tokens = PollTokens(b"k" * 32)
    token = tokens.token("a" * 32)
    assert tokens.check("a" * 32, token)
    assert not tokens.check("b" * 32, token)
    assert not tokens.check("a" * 32, None) and not tokens.check("a" * 32, "x" * 500)
    assert PollTokens(b"k" * 32).token("a" * 32) == token  # a configured secret survives restarts
    assert PollTokens().token("a" * 32) != token


def _basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def test_basic_auth_guessing_is_locked_out(make_review_app: MakeApp) -> None:
    app = await make_review_app(review={"basic_user": USER, "basic_password": PASSWORD,
                                        "login_free_failures": 3, "login_backoff_s": 60})
    statuses = []
    async with client_session() as http:
        for i in range(20):
            async with http.get(f"{app.url}/review", headers=_basic(USER, f"guess-{i}")) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert int(resp.headers["Retry-After"]) >= 1
                    body = await resp.json()
                    assert body["error"]["code"] == "too_many_failed_logins"
                    assert "guess" not in str(body)
        assert statuses[:3] == [401, 401, 401] and statuses[3] == 401
        assert statuses.count(401) == 4 and statuses[4:] == [429] * 16
        # while locked, even the right password is not checked
        async with http.get(f"{app.url}/review", headers=_basic(USER, PASSWORD)) as resp:
            assert resp.status == 429
        assert app.auth.throttle.lockouts >= 17


async def test_the_lock_runs_out(make_review_app: MakeApp) -> None:
    app = await make_review_app(review={"basic_user": USER, "basic_password": PASSWORD,
                                        "login_free_failures": 0, "login_backoff_s": 0.3})
    async with client_session() as http:
        async with http.get(f"{app.url}/review", headers=_basic(USER, "guess")) as resp:
            assert resp.status == 401
        async with http.get(f"{app.url}/review", headers=_basic(USER, PASSWORD)) as resp:
            assert resp.status == 429
        await asyncio.sleep(0.5)
        async with http.get(f"{app.url}/review", headers=_basic(USER, PASSWORD)) as resp:
            assert resp.status == 200  # the lock ran out; success clears the count


async def test_login_form_guessing_is_locked_out(make_review_app: MakeApp) -> None:
    app = await make_review_app(review={"basic_user": USER, "basic_password": PASSWORD,
                                        "login_free_failures": 2, "login_backoff_s": 30})
    async with client_session() as http:
        statuses = []
        for i in range(5):
            async with http.get(f"{app.url}/review/login") as resp:
                match = _CSRF.search(await resp.text())
                assert match
            async with http.post(f"{app.url}/review/login", allow_redirects=False, data={
                    "csrf": match.group(1), "username": USER, "password": f"guess-{i}"}) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert "Too many failed sign-ins" in await resp.text()
                    assert 1 <= int(resp.headers["Retry-After"]) <= 30
    assert statuses == [401, 401, 401, 429, 429]


@pytest.mark.parametrize("free", [0])
async def test_ticket_api_is_throttled_too(make_review_app: MakeApp, free: int) -> None:
    app = await make_review_app(review={"token": "t" * 32, "login_free_failures": free,
                                        "login_backoff_s": 30})
    async with client_session() as http:
        async with http.post(f"{app.url}/review/tickets",
                             headers={"Authorization": "Bearer " + "x" * 32}) as resp:
            assert resp.status == 401
        async with http.post(f"{app.url}/review/tickets",
                             headers={"Authorization": "Bearer " + "t" * 32}) as resp:
            assert resp.status == 429  # the address is locked, the right token waits too
