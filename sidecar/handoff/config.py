"""Hand-off settings: the ``handoff:`` section of the sidecar's settings file.

Validated once at start-up (``extra="forbid"``: a misspelt key fails naming itself).
Secrets (``webhook_url``, ``review.token``, ``review.basic_password``) are
``SecretStr``: they print as ``**********`` in reprs, errors and logs. A webhook
URL's path and query often *are* the credential (Slack's ``/services/T.../B.../x``),
so logs only ever show its scheme and host (:func:`sidecar.handoff.webhook.redact_url`).

Units: every ``*_s`` is seconds.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DEFAULT_CLIENT_MESSAGE = (
    "Thank you for your patience. A member of our team will review this conversation "
    "and follow up with you shortly."
)


class _Model(BaseModel):
    # hide_input_in_errors: a rejected webhook URL or token must not be echoed back
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def long_secret(value: SecretStr | None, minimum: int) -> SecretStr | None:
    """A configured secret of at least ``minimum`` characters (``None`` passes);
    the error never shows the value."""
    if value is not None and len(value.get_secret_value()) < minimum:
        raise ValueError(f"must be at least {minimum} characters")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


class ReviewSettings(_Model):
    """Who may use the review UI (``/review``).

    A bearer ``token``, HTTP basic credentials, or both. With neither, the sidecar
    generates a random token at start-up and prints it once (never logs it).
    ``public_url`` is the sidecar's address as reviewers reach it
    (``https://railwatch.example.com``): used for links in webhooks and to mark
    the session cookie ``Secure`` when it is ``https``.
    """

    token: SecretStr | None = None
    basic_user: str | None = Field(default=None, min_length=1, max_length=128)
    basic_password: SecretStr | None = None
    public_url: str | None = None
    session_ttl_s: int = Field(default=12 * 3600, gt=0)  # review session cookie lifetime
    # failed sign-ins per address and per user: free ones, then 1 s, 2 s, 4 s ... locked
    login_free_failures: int = Field(default=5, ge=0)
    login_backoff_s: float = Field(default=1.0, gt=0)
    login_backoff_max_s: float = Field(default=900.0, gt=0)

    @field_validator("token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        return long_secret(value, 16)

    @field_validator("basic_password")
    @classmethod
    def _long_password(cls, value: SecretStr | None) -> SecretStr | None:
        return long_secret(value, 12)

    @field_validator("public_url")
    @classmethod
    def _valid_public_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value).rstrip("/")

    @model_validator(mode="after")
    def _basic_pair(self) -> ReviewSettings:
        if (self.basic_user is None) != (self.basic_password is None):
            raise ValueError("basic_user and basic_password must be set together")
        if self.basic_user is not None and ":" in self.basic_user:
            raise ValueError("basic_user must not contain ':'")
        return self


class HandoffSettings(_Model):
    """Human hand-off: triggers, the webhook, the client's answer and the review UI.

    ``max_turns``: hand off a conversation longer than this many turns (None: off).
    ``max_failures``: hand off after this many guardrail failures in one
    conversation (None: off). ``client_flag``: honour a client's explicit request
    (header ``x-railwatch-handoff: true`` or body ``metadata.railwatch_handoff``).
    ``webhook_retries`` is the number of retries after the first attempt; the n-th
    retry waits about ``webhook_backoff_s * 2**(n-1)`` (jittered, at most
    ``webhook_backoff_max_s``).
    """

    enabled: bool = False
    webhook_url: SecretStr | None = None
    webhook_format: Literal["generic", "slack"] = "generic"
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    webhook_retries: int = Field(default=3, ge=0, le=20)
    webhook_backoff_s: float = Field(default=0.5, ge=0)
    webhook_backoff_max_s: float = Field(default=30.0, ge=0)
    client_message: str = Field(default=DEFAULT_CLIENT_MESSAGE, min_length=1, max_length=4000)
    max_turns: int | None = Field(default=None, ge=1)
    max_failures: int | None = Field(default=None, ge=1)
    client_flag: bool = True
    max_conversations: int = Field(default=10_000, gt=0)  # tracker LRU size
    max_answer_chars: int = Field(default=32_768, gt=0)  # a reviewer's answer or reply
    # key of the hand-off poll tokens; set it (32+ characters) so tokens survive a
    # restart and work on every replica; unset: random per process
    poll_secret: SecretStr | None = None
    review: ReviewSettings = ReviewSettings()

    @field_validator("poll_secret")
    @classmethod
    def _long_poll_secret(cls, value: SecretStr | None) -> SecretStr | None:
        return long_secret(value, 32)

    @field_validator("webhook_url")
    @classmethod
    def _valid_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _http_url(value.get_secret_value())
        return value
