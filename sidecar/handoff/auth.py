"""Who may use the review UI: bearer token or basic auth, sessions, CSRF, login links.

- **Credentials**: ``Authorization: Bearer <token>`` and/or HTTP basic auth, from
  ``handoff.review``. With neither configured, :meth:`ReviewAuth.from_settings`
  generates a random token; :meth:`ReviewAuth.startup_notice` returns the line to
  print, once (it returns ``None`` afterwards); nothing else ever logs it.
- **Sessions** (browsers): a login sets the cookie ``railwatch_review`` holding
  ``base64url(JSON {u, n, e}) "." base64url(HMAC-SHA256)``: reviewer, a random
  nonce, an expiry (epoch s). HttpOnly, SameSite=Strict, Path=/review, Secure
  when the public URL is https. The HMAC key is random per process: a restart
  logs everyone out.
- **CSRF**: every form POST carries ``csrf`` = HMAC(key, "csrf:" + session nonce),
  checked in constant time. The login form gets its own token bound to a
  short-lived pre-login cookie (double submit), so a login cannot be forced either.
- **Login links**: :meth:`ReviewAuth.issue_ticket` mints a one-time ticket (120 s)
  for ``GET /review/login?ticket=...``, so a browser (or a headless one) can be
  signed in without the token itself ever appearing in a URL.

- **Lockout**: failed sign-ins (form or ``Authorization``) are counted per client
  address and per user name (:class:`~sidecar.handoff.lockout.LoginThrottle`);
  past ``login_free_failures`` each failure locks for an exponentially growing
  time. For an ``Authorization`` header, :meth:`ReviewAuth.authorize_header` does
  both (lockout, then check); for a form, callers ask :meth:`ReviewAuth.lockout_s`
  before ``check_login``. Answer :class:`LoginLockedOut` (429 with ``Retry-After``,
  the same at ``/review`` and ``/dashboard``) while the wait is positive; ``check_*``
  with an ``address`` record the outcome.
- **Hand-off polls**: :class:`PollTokens` mints ``HMAC(key, "poll:" + id)`` per
  hand-off, given to the client with the hand-off and required by
  ``GET /v1/handoffs/{id}`` (``x-railwatch-handoff-token``).

All comparisons of secrets use ``hmac.compare_digest`` on digests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass

import orjson

from sidecar.errors import RequestError
from sidecar.handoff.config import ReviewSettings
from sidecar.handoff.lockout import LoginThrottle

SESSION_COOKIE = "railwatch_review"
LOGIN_COOKIE = "railwatch_review_login"
TOKEN_REVIEWER = "token"
_TICKET_TTL_S = 120.0
_MAX_TICKETS = 256
_MAX_REVOKED = 10_000


@dataclass(frozen=True, slots=True)
class Session:
    reviewer: str
    nonce: str
    expires: float


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# (scheme lower-cased, value, basic password or None when not a decodable "user:password",
#  basic user name or None when empty/absent)
_Parsed = tuple[str, str, str | None, str | None]


def retry_after(wait_s: float) -> str:
    """A lockout's remaining ``wait_s`` as a ``Retry-After`` value (whole seconds, >= 1)."""
    return str(max(1, math.ceil(wait_s)))


class LoginLockedOut(RequestError):
    """The client is locked out after failed sign-ins (the review UI's and the
    dashboard's, counted together): 429 with ``Retry-After``, before any credential is
    looked at."""

    status = 429
    error_type = "rate_limit_error"
    code = "too_many_failed_logins"

    def __init__(self, wait_s: float) -> None:
        retry = retry_after(wait_s)
        super().__init__(f"too many failed sign-ins; retry after {retry} s",
                         headers={"Retry-After": retry, "Cache-Control": "no-store"})


def _parse_header(authorization: str | None) -> _Parsed:
    """Split an ``Authorization`` header once; a basic value is base64-decoded here."""
    scheme, _, value = (authorization or "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme != "basic" or not value:
        return scheme, value, None, None
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return scheme, value, None, None
    if not sep:
        return scheme, value, None, None
    return scheme, value, password, user or None


class ReviewAuth:
    """Checks review credentials and signs sessions. State: the per-process key,
    outstanding login tickets. Event-loop use only (not thread-safe)."""

    def __init__(
        self,
        *,
        token: str | None = None,
        basic_user: str | None = None,
        basic_password: str | None = None,
        session_ttl_s: float = 12 * 3600,
        secure_cookies: bool = False,
        secret: bytes | None = None,
        generated: bool = False,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self._revoked: dict[str, float] = {}  # signed-out session nonce -> expiry
        if token is None and basic_user is None:
            raise ValueError("a token or basic credentials are required")
        self._token = _digest(token) if token is not None else None
        self._basic_user = basic_user
        self._basic_password = _digest(basic_password) if basic_password is not None else None
        self._key = secret or secrets.token_bytes(32)
        self.session_ttl_s = session_ttl_s
        self.secure_cookies = secure_cookies
        self._pending_notice: str | None = token if generated else None
        self._tickets: dict[bytes, tuple[str, float]] = {}

    @classmethod
    def from_settings(cls, review: ReviewSettings) -> ReviewAuth:
        """From ``handoff.review``; generates a token when no credential is configured."""
        token = review.token.get_secret_value() if review.token is not None else None
        password = (review.basic_password.get_secret_value()
                    if review.basic_password is not None else None)
        generated = token is None and review.basic_user is None
        if generated:
            token = secrets.token_urlsafe(32)
        return cls(
            token=token, basic_user=review.basic_user, basic_password=password,
            session_ttl_s=review.session_ttl_s,
            secure_cookies=bool(review.public_url and review.public_url.startswith("https:")),
            generated=generated,
            throttle=LoginThrottle(free_failures=review.login_free_failures,
                                   backoff_s=review.login_backoff_s,
                                   backoff_max_s=review.login_backoff_max_s),
        )

    @property
    def uses_basic(self) -> bool:
        return self._basic_user is not None

    @property
    def uses_token(self) -> bool:
        return self._token is not None

    def startup_notice(self, base_url: str, label: str = "review UI",
                       path: str = "/review/login") -> str | None:
        """The line to print once at start-up when the token was generated; ``None``
        on every later call (and when a credential was configured). ``label`` names the
        UI and ``path`` its login page (the dashboard reuses this with its own)."""
        token, self._pending_notice = self._pending_notice, None
        if token is None:
            return None
        return (f"railwatch {label}: {base_url.rstrip('/')}{path}  "
                f"token (generated, valid until restart): {token}")

    # -- credentials -----------------------------------------------------------------------

    def check_token(self, token: str) -> bool:
        return self._token is not None and hmac.compare_digest(_digest(token), self._token)

    def check_basic(self, user: str, password: str) -> bool:
        if self._basic_user is None or self._basic_password is None:
            return False
        user_ok = hmac.compare_digest(_digest(user), _digest(self._basic_user))
        password_ok = hmac.compare_digest(_digest(password), self._basic_password)
        return user_ok and password_ok

    def lockout_s(self, address: str | None, user: str | None) -> float:
        """Seconds before a sign-in from ``address`` (as ``user``) may be checked."""
        return self.throttle.locked_for(address, user)

    def _outcome(self, address: str | None, user: str | None, reviewer: str | None) -> None:
        if reviewer is None:
            self.throttle.failed(address, user)
        else:
            self.throttle.succeeded(address, user)

    def check_login(self, token: str | None, user: str | None, password: str | None,
                    address: str | None = None) -> str | None:
        """The reviewer name for a login form's fields, or ``None`` (a failure,
        counted against ``address`` and ``user``)."""
        reviewer = None
        if token and self.check_token(token):
            reviewer = TOKEN_REVIEWER
        elif user and password is not None and self.check_basic(user, password):
            reviewer = user
        self._outcome(address, user or None, reviewer)
        return reviewer

    def authorize_header(self, authorization: str | None,
                         address: str | None = None) -> tuple[str | None, float]:
        """(reviewer, seconds to wait) for an ``Authorization`` header, lockout included.

        A positive wait means the address or the claimed user is locked out: nothing
        was checked or counted, answer 429 with ``Retry-After``. Otherwise the reviewer,
        or ``None`` for no header or a wrong one (counted as a failed sign-in). Never
        raises; the header is decoded once.
        """
        if not authorization:
            return None, 0.0
        parsed = _parse_header(authorization)
        wait = self.lockout_s(address, parsed[3])
        if wait > 0.0:
            return None, wait
        return self._check_parsed(parsed, address), 0.0

    def _check_parsed(self, parsed: _Parsed, address: str | None) -> str | None:
        scheme, value, password, user = parsed
        reviewer = None
        if scheme == "bearer" and value:
            reviewer = TOKEN_REVIEWER if self.check_token(value) else None
        elif scheme == "basic" and password is not None:
            if self.check_basic(user or "", password):
                reviewer = user or ""
        self._outcome(address, user, reviewer)
        return reviewer

    # -- sessions and CSRF -----------------------------------------------------------------

    def _sign(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def new_session(self, reviewer: str, now: float | None = None) -> tuple[Session, str]:
        """A new session and its cookie value."""
        now = time.time() if now is None else now
        session = Session(reviewer, secrets.token_urlsafe(16), now + self.session_ttl_s)
        payload = orjson.dumps({"u": session.reviewer, "n": session.nonce, "e": session.expires})
        return session, f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def session(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value proves, or ``None`` (bad signature, expired)."""
        if not cookie or "." not in cookie or len(cookie) > 4096:
            return None
        body, _, sig = cookie.partition(".")
        try:
            payload, signature = _unb64(body), _unb64(sig)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            doc = orjson.loads(payload)
            session = Session(str(doc["u"]), str(doc["n"]), float(doc["e"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        current = time.time() if now is None else now
        if session.expires <= current or session.nonce in self._revoked:
            return None
        return session

    def revoke(self, session: Session, now: float | None = None) -> None:
        """Sign-out: the session's cookie stops working here, not only in the browser.

        Revoked nonces are kept until their session would have expired (bounded: the
        oldest are dropped first past ``_MAX_REVOKED``, and expired ones on each call).
        """
        current = time.time() if now is None else now
        for nonce, expires in list(self._revoked.items()):
            if expires <= current:
                del self._revoked[nonce]
        self._revoked[session.nonce] = session.expires
        while len(self._revoked) > _MAX_REVOKED:
            self._revoked.pop(next(iter(self._revoked)))

    def csrf_token(self, session: Session) -> str:
        return _b64(self._sign(b"csrf:" + session.nonce.encode()))

    def check_csrf(self, session: Session | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(token.encode(), self.csrf_token(session).encode())

    def login_nonce(self) -> tuple[str, str]:
        """(pre-login cookie value, the login form's CSRF token)."""
        nonce = secrets.token_urlsafe(16)
        return nonce, self.login_csrf(nonce)

    def login_csrf(self, nonce: str) -> str:
        return _b64(self._sign(b"login:" + nonce.encode()))

    def check_login_csrf(self, nonce: str | None, token: str | None) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(token.encode(), self.login_csrf(nonce).encode())

    # -- one-time login links --------------------------------------------------------------

    def issue_ticket(self, reviewer: str = TOKEN_REVIEWER, now: float | None = None) -> str:
        """A one-time login ticket for ``reviewer``, valid 120 s."""
        now = time.time() if now is None else now
        self._tickets = {k: v for k, v in self._tickets.items() if v[1] > now}
        while len(self._tickets) >= _MAX_TICKETS:
            self._tickets.pop(next(iter(self._tickets)))
        ticket = secrets.token_urlsafe(24)
        self._tickets[_digest(ticket)] = (reviewer, now + _TICKET_TTL_S)
        return ticket

    def redeem_ticket(self, ticket: str, now: float | None = None) -> str | None:
        """The ticket's reviewer, once; ``None`` if unknown, used or expired."""
        entry = self._tickets.pop(_digest(ticket), None)
        if entry is None or entry[1] <= (time.time() if now is None else now):
            return None
        return entry[0]


class PollTokens:
    """The hand-off poll credential: ``base64url(HMAC-SHA256(key, "poll:" + id))``.

    Stateless (nothing stored per hand-off). ``secret`` (``handoff.poll_secret``)
    keeps tokens valid across restarts and replicas; without it a random key per
    process is used, and a restart invalidates outstanding tokens.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._key = secret or secrets.token_bytes(32)

    def token(self, handoff_id: str) -> str:
        return _b64(hmac.new(self._key, b"poll:" + handoff_id.encode(), hashlib.sha256).digest())

    def check(self, handoff_id: str, token: str | None) -> bool:
        """Constant-time comparison; ``False`` for a missing token."""
        if not token or len(token) > 128:
            return False
        return hmac.compare_digest(token.encode(), self.token(handoff_id).encode())
