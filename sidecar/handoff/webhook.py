"""Tell people a hand-off is waiting: one JSON POST, retried with exponential back-off.

Bodies carry no conversation text, only the hand-off's id, reason, labels and a
review link (``review.public_url``):

- ``generic``: ``{"type": "railwatch.handoff.created", "handoff": {...}}``;
- ``slack``: an incoming-webhook message ``{"text": ..., "blocks": [...]}``.

Delivery: up to ``1 + retries`` attempts. Retried: connect errors, timeouts, 5xx,
and 408/429 (a receiver asking to come back later; ``Retry-After`` is honoured up
to the back-off cap). Not retried: other 4xx and 3xx (redirects are not followed:
the URL is a credential). The n-th retry waits ``backoff_s * 2**(n-1)``, capped at
``backoff_max_s``, with equal jitter (half fixed, half random).

Logs name the hand-off id and the URL's scheme and host only: a webhook URL's
path and query usually are its secret.
"""

from __future__ import annotations

import math

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from sidecar.handoff.model import Handoff

logger = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({408, 429})
Sleep = Callable[[float], Awaitable[None]]


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: no credentials, path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def review_url(public_url: str | None, handoff_id: str) -> str | None:
    return f"{public_url}/review/{handoff_id}" if public_url else None


def generic_body(handoff: Handoff, public_url: str | None = None) -> dict[str, Any]:
    return {
        "type": "railwatch.handoff.created",
        "handoff": {
            "id": handoff.id,
            "status": handoff.public_status,
            "reason": handoff.reason,
            "created_at": _iso(handoff.created_at),
            "request_id": handoff.request_id,
            "trace_id": handoff.trace_id,
            "conversation_id": handoff.conversation_id,
            "tenant": handoff.tenant,
            "route": handoff.route,
            "model": handoff.model,
            "findings": handoff.findings_summary(),
            "review_url": review_url(public_url, handoff.id),
        },
    }


def slack_body(handoff: Handoff, public_url: str | None = None) -> dict[str, Any]:
    labels = sorted({f"{s.detector}/{s.label}" if s.detector else s.label
                     for _, s in handoff.findings})
    fields = [
        ("Reason", handoff.reason or "-"),
        ("Route", handoff.route or "-"),
        ("Model", handoff.model or "-"),
        ("Tenant", handoff.tenant or "-"),
        ("Findings", ", ".join(labels[:10]) or "none"),
        ("Hand-off", handoff.id),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header",
         "text": {"type": "plain_text", "text": "A conversation needs a person"}},
        {"type": "section",
         "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(value)[:200]}"}
                    for name, value in fields]},
    ]
    link = review_url(public_url, handoff.id)
    if link is not None:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Review"}, "url": link}]})
    text = f"railwatch hand-off {handoff.id}: {_slack_escape(handoff.reason or 'review needed')}"
    return {"text": text, "blocks": blocks}


def _slack_escape(text: str) -> str:
    # Slack mrkdwn control characters; model and tenant names come from clients
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class WebhookNotifier:
    """Posts hand-off notices. ``start()`` opens its client session, ``close()`` ends it.

    ``deliver`` never raises (but may be cancelled); it returns whether the
    receiver accepted the notice. Counters: ``attempts``, ``delivered``, ``failed``.
    """

    def __init__(
        self,
        url: str,
        *,
        fmt: str = "generic",
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        public_url: str | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._url = url
        self.target = redact_url(url)
        self.fmt = fmt
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.public_url = public_url
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self.attempts = 0
        self.delivered = 0
        self.failed = 0

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"User-Agent": "railwatch-handoff"},
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def body(self, handoff: Handoff) -> dict[str, Any]:
        if self.fmt == "slack":
            return slack_body(handoff, self.public_url)
        return generic_body(handoff, self.public_url)

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds before retry number ``retry`` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max_s)
        base = min(self.backoff_s * 2.0 ** (retry - 1), self.backoff_max_s)
        return base / 2 + random.uniform(0, base / 2)

    async def deliver(self, handoff: Handoff) -> bool:
        if self._session is None:
            await self.start()
        assert self._session is not None
        payload = orjson.dumps(self.body(handoff))
        total = self.retries + 1
        for attempt in range(1, total + 1):
            self.attempts += 1
            retry_after: float | None = None
            try:
                async with self._session.post(
                    self._url, data=payload, allow_redirects=False,
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    status = resp.status
                    await resp.read()
                    if 200 <= status < 300:
                        self.delivered += 1
                        return True
                    retryable = status >= 500 or status in _RETRY_STATUSES
                    if status in _RETRY_STATUSES:
                        retry_after = _retry_after(resp.headers.get("Retry-After"))
                    outcome = f"answered {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                retryable, outcome = True, f"failed ({type(exc).__name__})"
            if not retryable or attempt == total:
                logger.warning("hand-off %s: webhook to %s %s (attempt %d of %d); giving up",
                               handoff.id, self.target, outcome, attempt, total)
                self.failed += 1
                return False
            wait = self.delay(attempt, retry_after)
            logger.info("hand-off %s: webhook to %s %s (attempt %d of %d); retrying in %.2f s",
                        handoff.id, self.target, outcome, attempt, total, wait)
            await self._sleep(wait)
        return False  # pragma: no cover - the loop always returns

    def state(self) -> dict[str, Any]:
        return {"target": self.target, "format": self.fmt, "attempts": self.attempts,
                "delivered": self.delivered, "failed": self.failed}


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
