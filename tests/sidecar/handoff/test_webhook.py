"""Webhook delivery to a real loopback receiver: retries, back-off, bodies, quiet logs."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sidecar.handoff.config import HandoffSettings
from sidecar.handoff.model import ConversationPart, Handoff, Span
from sidecar.handoff.service import HandoffService
from sidecar.handoff.store import MemoryHandoffStore
from sidecar.handoff.webhook import WebhookNotifier, generic_body, redact_url, slack_body
from tests.sidecar.handoff._support import Receiver

SECRET_TEXT = "my card is 4111 1111 1111 1111"


def _handoff(reason: str = "policy: toxicity") -> Handoff:
    return Handoff(
        id="0123456789abcdef0123456789abcdef", status="pending", reason=reason,
        created_at=1_700_000_000.0, updated_at=1_700_000_000.0, trace_id="a" * 32,
        route="chat", model="<b>m</b>", tenant="acme", content_stored=True,
        messages=(ConversationPart("user", SECRET_TEXT),),
        findings=((0, Span(11, 30, "CREDIT_CARD", "pii", 0.99, "input", "handoff")),),
    )


class _Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def test_500_then_200_is_delivered_once_after_backoff(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.script(500, 503, 200)
    sleeps = _Sleeps()
    notifier = WebhookNotifier(receiver.url, retries=3, backoff_s=0.1, sleep=sleeps)
    await notifier.start()
    try:
        assert await notifier.deliver(_handoff()) is True
    finally:
        await notifier.close()
    assert len(receiver.bodies) == 3 and receiver.bodies[0] == receiver.bodies[2]
    assert notifier.delivered == 1 and notifier.attempts == 3 and notifier.failed == 0
    # exponential with equal jitter: retry n waits within [b*2^(n-1)/2, b*2^(n-1)]
    assert 0.05 <= sleeps.waits[0] <= 0.1 and 0.1 <= sleeps.waits[1] <= 0.2
    assert "secretpart" not in caplog.text and "querysecret" not in caplog.text
    assert SECRET_TEXT not in caplog.text and "4111" not in caplog.text
    assert "answered 500" in caplog.text and "http://127.0.0.1:" in caplog.text


async def test_4xx_is_not_retried(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    receiver.script(400)
    notifier = WebhookNotifier(receiver.url, retries=3, backoff_s=0.01)
    try:
        assert await notifier.deliver(_handoff()) is False
    finally:
        await notifier.close()
    assert len(receiver.bodies) == 1 and notifier.failed == 1
    assert "answered 400" in caplog.text and "giving up" in caplog.text
    assert "secretpart" not in caplog.text


async def test_gives_up_after_the_retries(receiver: Receiver) -> None:
    receiver.script(500, 500, 500)
    sleeps = _Sleeps()
    notifier = WebhookNotifier(receiver.url, retries=2, backoff_s=1.0, backoff_max_s=1.5,
                               sleep=sleeps)
    try:
        assert await notifier.deliver(_handoff()) is False
    finally:
        await notifier.close()
    assert len(receiver.bodies) == 3 and len(sleeps.waits) == 2
    assert max(sleeps.waits) <= 1.5  # capped


async def test_429_honours_retry_after(receiver: Receiver) -> None:
    receiver.script(429, 200)
    sleeps = _Sleeps()
    notifier = WebhookNotifier(receiver.url, retries=1, sleep=sleeps)
    try:
        assert await notifier.deliver(_handoff()) is True
    finally:
        await notifier.close()
    assert sleeps.waits == [1.0]  # the receiver's Retry-After
    assert len(receiver.bodies) == 2


async def test_connect_errors_are_retried(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    sleeps = _Sleeps()
    url = f"http://user:s3cr3tpw@127.0.0.1:{closed_port}/hook/secret"
    notifier = WebhookNotifier(url, retries=2, backoff_s=0.01, sleep=sleeps)
    try:
        assert await notifier.deliver(_handoff()) is False
    finally:
        await notifier.close()
    assert notifier.attempts == 3 and len(sleeps.waits) == 2
    assert "ClientConnectorError" in caplog.text
    assert "s3cr3tpw" not in caplog.text and "/hook/secret" not in caplog.text


def test_generic_body_holds_no_text() -> None:
    body = generic_body(_handoff(), "https://rw.example.com")
    h = body["handoff"]
    assert body["type"] == "railwatch.handoff.created"
    assert h["id"] == _handoff().id and h["reason"] == "policy: toxicity"
    assert h["review_url"] == f"https://rw.example.com/review/{_handoff().id}"
    assert h["findings"] == [{"stage": "input", "detector": "pii", "label": "CREDIT_CARD",
                              "score": 0.99, "action": "handoff"}]
    assert h["created_at"] == "2023-11-14T22:13:20.000+00:00"
    assert SECRET_TEXT not in str(body)


def test_slack_body_shape_and_escaping() -> None:
    body = slack_body(_handoff("policy: <script>"), "https://rw.example.com")
    assert set(body) == {"text", "blocks"}
    assert "&lt;script&gt;" in body["text"] and "<script>" not in str(body)
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "actions"]
    fields = " ".join(f["text"] for f in body["blocks"][1]["fields"])
    assert "pii/CREDIT_CARD" in fields and "&lt;b&gt;m&lt;/b&gt;" in fields
    assert body["blocks"][2]["elements"][0]["url"].endswith(f"/review/{_handoff().id}")
    assert "actions" not in [b["type"] for b in slack_body(_handoff())["blocks"]]
    assert SECRET_TEXT not in str(body)


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/…"),
    ("https://user:pass@example.com:8443/?token=abc", "https://example.com:8443/…"),
    ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    ("http://[::1]:9000/x", "http://[::1]:9000/…"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("fmt", ["generic", "slack"])
async def test_service_posts_in_the_background(receiver: Receiver, fmt: str) -> None:
    receiver.script(500, 200)
    settings = HandoffSettings.model_validate({
        "enabled": True, "webhook_url": receiver.url, "webhook_format": fmt,
        "webhook_backoff_s": 0.01, "review": {"public_url": "https://rw.example.com"},
    })
    service = HandoffService(settings, MemoryHandoffStore())
    await service.start()
    try:
        h = await service.create(reason="policy", messages=[ConversationPart("user", SECRET_TEXT)])
        await asyncio.wait_for(receiver.event.wait(), 10)
        await service.wait_deliveries(5)
    finally:
        await service.close()
    assert len(receiver.bodies) == 2  # one retry, then delivered once
    body = receiver.bodies[-1]
    if fmt == "slack":
        assert set(body) == {"text", "blocks"} and h.id in body["text"]
    else:
        assert body["handoff"]["id"] == h.id
    assert SECRET_TEXT not in str(body)
    assert service.state()["webhook"]["delivered"] == 1
    assert "querysecret" not in str(service.state())


def test_settings_never_show_the_webhook_secret() -> None:
    from pydantic import ValidationError

    url = "https://hooks.slack.com/services/T0/B0/SECRETXYZ"
    settings = HandoffSettings.model_validate({"webhook_url": url})
    assert "SECRETXYZ" not in repr(settings) and "SECRETXYZ" not in str(settings.model_dump())
    with pytest.raises(ValidationError) as exc:
        HandoffSettings.model_validate({"webhook_url": "ftp://SECRETXYZ@x/y"})
    assert "SECRETXYZ" not in str(exc.value)
    with pytest.raises(ValidationError):
        HandoffSettings.model_validate({"webhook_format": "teams"})
    with pytest.raises(ValidationError):
        HandoffSettings.model_validate({"unknown": 1})
    with pytest.raises(ValidationError):
        HandoffSettings.model_validate({"review": {"basic_user": "alice"}})  # no password
    with pytest.raises(ValidationError):
        HandoffSettings.model_validate({"review": {"token": "short"}})


async def test_deliveries_in_flight_are_bounded(receiver: Receiver) -> None:
    gate = asyncio.Event()

    async def slow(_seconds: float) -> None:
        await gate.wait()

    receiver.script(*([500] * 10))
    notifier = WebhookNotifier(receiver.url, retries=1, sleep=slow)
    service = HandoffService(HandoffSettings(enabled=True), MemoryHandoffStore(),
                             notifier=notifier, max_pending_webhooks=2)
    await service.start()
    try:
        for _ in range(4):
            await service.create(reason="policy", messages=[ConversationPart("user", "x")])
        assert service.webhooks_skipped == 2
        assert service.state()["webhook_deliveries_in_flight"] == 2
        gate.set()
        await service.wait_deliveries(5)
    finally:
        await service.close()
    assert service.state()["webhook_deliveries_in_flight"] == 0
