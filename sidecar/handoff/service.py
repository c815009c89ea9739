"""HandoffService: creates, stores, announces and resolves hand-offs.

It ties the store (blocking; always called through ``asyncio.to_thread``), the
webhook (delivered in a background task, so a client's answer never waits for
it), the conversation tracker (event loop only) and the privacy setting for text.

Errors: :class:`HandoffUnavailableError` (503) when the store fails; ``resolve``
raises ``NotFoundError`` (404), ``BadRequestError`` (400) and
:class:`HandoffConflictError` (409, already resolved). Messages are public and
hold no text; store errors are logged by type only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sidecar.errors import (
    BadRequestError,
    HandoffConflictError,
    HandoffUnavailableError,
    NotFoundError,
)
from sidecar.handoff.auth import PollTokens
from sidecar.handoff.config import HandoffSettings
from sidecar.handoff.content import ContentPolicy
from sidecar.handoff.model import (
    ACTIONS,
    PENDING,
    REJECTED,
    RESOLVED,
    ConversationPart,
    Handoff,
    Span,
    findings_of,
)
from sidecar.handoff.store import HandoffStore
from sidecar.handoff.tracker import ConversationState, ConversationTracker, handoff_reason
from sidecar.handoff.webhook import WebhookNotifier

logger = logging.getLogger(__name__)


class HandoffService:
    """Created cheap; ``start()`` opens the webhook session, ``close()`` drains it."""

    def __init__(
        self,
        settings: HandoffSettings,
        store: HandoffStore,
        *,
        content: ContentPolicy | None = None,
        tracker: ConversationTracker | None = None,
        notifier: WebhookNotifier | None = None,
        max_pending_webhooks: int = 256,
    ) -> None:
        self.settings = settings
        self.store = store
        secret = settings.poll_secret.get_secret_value().encode() if settings.poll_secret else None
        self.poll_tokens = PollTokens(secret)  # the client's credential for GET /v1/handoffs/{id}
        self.content = content or ContentPolicy("raw")
        self.tracker = tracker or ConversationTracker(settings.max_conversations)
        if notifier is None and settings.webhook_url is not None:
            notifier = WebhookNotifier(
                settings.webhook_url.get_secret_value(),
                fmt=settings.webhook_format,
                timeout_s=settings.webhook_timeout_s,
                retries=settings.webhook_retries,
                backoff_s=settings.webhook_backoff_s,
                backoff_max_s=settings.webhook_backoff_max_s,
                public_url=settings.review.public_url,
            )
        self.notifier = notifier
        self._deliveries: set[asyncio.Task[bool]] = set()
        self._resolve_lock = asyncio.Lock()
        self.max_pending_webhooks = max_pending_webhooks
        self.created = 0
        self.resolved = 0
        self.webhooks_skipped = 0  # not sent: too many deliveries already in flight

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self.notifier is not None:
            await self.notifier.start()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Let webhook deliveries in flight finish for up to ``timeout_s``, then stop."""
        await self.wait_deliveries(timeout_s)
        for task in list(self._deliveries):
            task.cancel()
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self.notifier is not None:
            await self.notifier.close()

    async def wait_deliveries(self, timeout_s: float = 5.0) -> None:
        if self._deliveries:
            await asyncio.wait(list(self._deliveries), timeout=timeout_s)

    # -- triggers ------------------------------------------------------------------------

    def observe_turn(self, conversation: str | None, turns: int = 0) -> ConversationState | None:
        """Once per request, at ingress (``tracker.conversation_key`` gives ``conversation``)."""
        return self.tracker.observe_turn(conversation, turns)

    def record_failure(self, conversation: str | None) -> None:
        """Once per stage decision that failed (``tracker.is_guardrail_failure``)."""
        self.tracker.record_failure(conversation)

    def reason(
        self, *, conversation: str | None, action: str | None = None, requested: bool = False
    ) -> str | None:
        """Why this request must go to a person now, or ``None``."""
        return handoff_reason(
            action=action,
            requested=requested and self.settings.client_flag,
            state=self.tracker.get(conversation),
            max_turns=self.settings.max_turns,
            max_failures=self.settings.max_failures,
        )

    # -- the queue -----------------------------------------------------------------------

    async def create(
        self,
        *,
        reason: str,
        messages: Sequence[ConversationPart],
        answer: ConversationPart | str | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
        conversation_id: str | None = None,
        conversation: str | None = None,
        tenant: str | None = None,
        route: str = "",
        model: str = "",
        unplaced: Sequence[Span] = (),
    ) -> Handoff:
        """Store a new pending hand-off, announce it, return it. Raises
        :class:`HandoffUnavailableError` when it cannot be stored.

        ``messages``/``answer`` are raw; the privacy setting decides what is kept.
        ``conversation`` is the tracker key (marks the conversation handed off).
        ``unplaced``: findings known but not placed in a text (listed, not marked).
        """
        if isinstance(answer, str):
            answer = ConversationPart("assistant", answer)
        raw_ids = (conversation_id, tenant)
        kept, (conversation_id, tenant) = await asyncio.to_thread(
            lambda: (self.content.apply(messages, answer),
                     self.content.identifiers(*raw_ids)))
        now = time.time()
        stored_messages, stored_answer = kept if kept is not None else ((), None)
        handoff = Handoff(
            id=uuid.uuid4().hex,
            status=PENDING,
            reason=reason,
            created_at=now,
            updated_at=now,
            request_id=request_id,
            trace_id=trace_id,
            conversation_id=conversation_id,
            tenant=tenant,
            route=route,
            model=model,
            content_stored=kept is not None,
            messages=stored_messages,
            answer=stored_answer,
            findings=findings_of(*(kept if kept is not None else (messages, answer)), unplaced),
        )
        await self._save(handoff)
        self.created += 1
        self.tracker.mark_handed_off(conversation, handoff.id)
        logger.info("hand-off %s created (reason %s, route %s)", handoff.id, reason, route or "-")
        if self.notifier is not None:
            self._announce(handoff)
        return handoff

    def _announce(self, handoff: Handoff) -> None:
        # bounded: a flood of hand-offs against a dead receiver must not pile up tasks
        if len(self._deliveries) >= self.max_pending_webhooks:
            self.webhooks_skipped += 1
            logger.warning("hand-off %s: webhook skipped, %d deliveries already in flight",
                           handoff.id, len(self._deliveries))
            return
        assert self.notifier is not None
        task = asyncio.create_task(self.notifier.deliver(handoff),
                                   name=f"railwatch-handoff-webhook-{handoff.id}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def get(self, handoff_id: str) -> Handoff | None:
        if not _valid_id(handoff_id):
            return None
        row = await self._call(self.store.get_handoff, handoff_id)
        return Handoff.from_row(row) if row is not None else None

    async def list_open(self, limit: int = 200) -> list[Handoff]:
        """Pending hand-offs, newest first."""
        rows = await self._call(self.store.list_handoffs, PENDING, limit)
        return [Handoff.from_row(r) for r in rows]

    async def resolve(
        self, handoff_id: str, action: str, answer: str | None, reviewer: str
    ) -> Handoff:
        """Approve the model's answer, send an edited one, or reject with a reply.

        An edit is also stored as a preference pair (rejected: the model's answer,
        chosen: the edit) when the model's answer was kept.
        """
        if action not in ACTIONS:
            raise BadRequestError("action must be approve, edit or reject", param="action",
                                  code="invalid_value")
        text = (answer or "").replace("\r\n", "\n").strip()
        if action != "approve" and not text:
            raise BadRequestError("an answer is required to edit or reject", param="answer",
                                  code="missing_value")
        if len(text) > self.settings.max_answer_chars:
            raise BadRequestError(
                f"the answer exceeds {self.settings.max_answer_chars} characters",
                param="answer", code="string_too_long")
        async with self._resolve_lock:  # one resolution per hand-off in this process
            handoff = await self.get(handoff_id)
            if handoff is None:
                raise NotFoundError("no such hand-off", code="handoff_not_found")
            if not handoff.is_open:
                raise HandoffConflictError("this hand-off is already resolved")
            original = handoff.answer_text
            if action == "approve":
                if original is None:
                    raise BadRequestError("there is no model answer to approve",
                                          param="action", code="no_answer")
                text = original
            now = time.time()
            done = replace(
                handoff, status=REJECTED if action == "reject" else RESOLVED, updated_at=now,
                assignee=reviewer, action=action, human_answer=text, resolved_at=now,
            )
            await self._save(done)
            self.resolved += 1
        logger.info("hand-off %s %s by a reviewer", handoff_id, done.public_view()["resolution"])
        if action == "edit" and original is not None and original != text:
            try:
                await asyncio.to_thread(
                    self.store.add_preference, trace_id=handoff.trace_id or "",
                    request_id=handoff.request_id, rejected=original, chosen=text,
                    user=reviewer)
            except Exception as exc:  # noqa: BLE001 - the resolution itself is stored
                logger.error("hand-off %s: preference pair not stored (%s)", handoff_id,
                             type(exc).__name__)
        return done

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"created": self.created, "resolved": self.resolved,
                               "tracked_conversations": len(self.tracker),
                               "webhook_deliveries_in_flight": len(self._deliveries),
                               "webhooks_skipped": self.webhooks_skipped}
        if self.notifier is not None:
            out["webhook"] = self.notifier.state()
        return out

    # -- storage -------------------------------------------------------------------------

    async def _save(self, handoff: Handoff) -> None:
        await self._call(self.store.save_handoff, handoff.to_row())

    async def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:  # any backend failure is one public error
            logger.error("hand-off storage failed (%s)", type(exc).__name__)
            raise HandoffUnavailableError("hand-off storage is unavailable") from exc


def _valid_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)

