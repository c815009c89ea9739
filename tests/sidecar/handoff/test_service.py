"""HandoffService on the real ClickHouse engine (shared chDB path, own database per test)."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

import pytest

from exporters.clickhouse import review
from sidecar.errors import BadRequestError, NotFoundError
from sidecar.handoff.clickhouse import ClickHouseHandoffStore, locked_runner
from sidecar.handoff.config import HandoffSettings
from sidecar.handoff.content import ContentPolicy
from sidecar.handoff.model import ConversationPart, Handoff, Span
from sidecar.handoff.service import (
    HandoffConflictError,
    HandoffService,
    HandoffUnavailableError,
)
from sidecar.handoff.store import MemoryHandoffStore

if TYPE_CHECKING:
    from tests.conftest import Backend

SETTINGS = HandoffSettings(enabled=True)
EMAIL = "jane.doe@example.com"


def _conversation() -> list[ConversationPart]:
    text = f"My email is {EMAIL}, you idiot."
    return [
        ConversationPart("system", "You are helpful."),
        ConversationPart("user", text, (
            Span(12, 12 + len(EMAIL), "EMAIL_ADDRESS", "pii", 0.99, "input", "flag"),
            Span(text.index("idiot"), text.index("idiot") + 5, "insult", "toxicity", 0.91,
                 "input", "handoff"),
        )),
    ]


async def _service(store: Any, **kwargs: Any) -> HandoffService:
    service = HandoffService(SETTINGS, store, **kwargs)
    await service.start()
    return service


async def test_create_get_and_list_newest_first(ch_store: ClickHouseHandoffStore) -> None:
    service = await _service(ch_store)
    try:
        first = await service.create(reason="policy", messages=_conversation(),
                                     answer="Here is my answer.", trace_id="a" * 32,
                                     request_id="b" * 32, route="chat", model="m1",
                                     tenant="acme", conversation_id="conv-1")
        await asyncio.sleep(0.003)  # stored with ms precision: keep the order unambiguous
        second = await service.create(reason="client_request", messages=_conversation())
        got = await service.get(first.id)
        assert got is not None
        assert got.status == "pending" and got.reason == "policy"
        assert got.trace_id == "a" * 32 and got.tenant == "acme" and got.model == "m1"
        assert [m.text for m in got.messages] == [m.text for m in _conversation()]
        assert got.answer_text == "Here is my answer."
        assert got.messages[1].spans == _conversation()[1].spans
        assert abs(got.created_at - first.created_at) < 0.01
        assert [h.id for h in await service.list_open()] == [second.id, first.id]
        assert await service.get("f" * 32) is None
        assert await service.get("not-an-id") is None
    finally:
        await service.close()


async def test_resolve_approve_edit_reject(
    ch_store: ClickHouseHandoffStore, backend: Backend, review_database: str
) -> None:
    service = await _service(ch_store)
    try:
        approve = await service.create(reason="policy", messages=_conversation(),
                                       answer="Original.", trace_id="1" * 32)
        edit = await service.create(reason="policy", messages=_conversation(),
                                    answer="Original answer.", trace_id="2" * 32,
                                    request_id="3" * 32)
        reject = await service.create(reason="policy", messages=_conversation())

        done = await service.resolve(approve.id, "approve", None, "alice")
        assert done.status == "resolved" and done.human_answer == "Original."
        assert done.assignee == "alice" and done.resolved_at is not None
        edited = await service.resolve(edit.id, "edit", "Better answer.\r\n", "token")
        assert edited.human_answer == "Better answer."
        rejected = await service.resolve(reject.id, "reject", "We cannot help.", "bob")
        assert rejected.status == "rejected"

        stored = await service.get(edit.id)
        assert stored is not None
        assert stored.public_view() == {
            "id": edit.id, "object": "railwatch.handoff", "status": "resolved",
            "answer": "Better answer.", "resolution": "edited",
            "created_at": int(edit.created_at), "updated_at": int(stored.updated_at),
        }
        stored_reject = await service.get(reject.id)
        assert stored_reject is not None
        assert stored_reject.public_view()["resolution"] == "rejected"
        assert await service.list_open() == []

        pairs = review.list_feedback(backend.admin, review_database, trace_id="2" * 32)
        assert len(pairs) == 1
        assert pairs[0]["kind"] == "preference"
        assert pairs[0]["comment"] == "Original answer."  # rejected
        assert pairs[0]["corrected_answer"] == "Better answer."  # chosen
        assert pairs[0]["user"] == "token" and pairs[0]["request_id"] == "3" * 32
        # approving or rejecting makes no pair
        assert review.list_feedback(backend.admin, review_database, trace_id="1" * 32) == []
    finally:
        await service.close()


async def test_resolve_errors(ch_store: ClickHouseHandoffStore) -> None:
    service = await _service(ch_store)
    try:
        h = await service.create(reason="policy", messages=_conversation())  # no model answer
        with pytest.raises(BadRequestError) as exc:
            await service.resolve(h.id, "approve", None, "alice")
        assert exc.value.param == "action"
        with pytest.raises(BadRequestError) as exc:
            await service.resolve(h.id, "edit", "   ", "alice")
        assert exc.value.param == "answer"
        with pytest.raises(BadRequestError):
            await service.resolve(h.id, "delete", "x", "alice")
        with pytest.raises(BadRequestError) as exc:
            await service.resolve(h.id, "reject", "x" * (SETTINGS.max_answer_chars + 1), "a")
        assert exc.value.code == "string_too_long"
        with pytest.raises(NotFoundError):
            await service.resolve("e" * 32, "reject", "no", "alice")
        await service.resolve(h.id, "reject", "No.", "alice")
        with pytest.raises(HandoffConflictError):
            await service.resolve(h.id, "reject", "Again.", "bob")
    finally:
        await service.close()


async def test_concurrent_resolutions_one_wins(ch_store: ClickHouseHandoffStore) -> None:
    service = await _service(ch_store)
    try:
        h = await service.create(reason="policy", messages=_conversation(), answer="A.")
        results = await asyncio.gather(
            *(service.resolve(h.id, "edit", f"answer {i}", f"r{i}") for i in range(4)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, Handoff) for r in results) == 1
        assert sum(isinstance(r, HandoffConflictError) for r in results) == 3
    finally:
        await service.close()


async def test_privacy_none_keeps_no_text_but_findings(ch_store: ClickHouseHandoffStore) -> None:
    service = await _service(ch_store, content=ContentPolicy("none"))
    try:
        h = await service.create(reason="policy", messages=_conversation(), answer="secret")
        got = await service.get(h.id)
        assert got is not None and not got.content_stored
        assert got.messages == () and got.answer is None
        assert {s.label for _, s in got.findings} == {"EMAIL_ADDRESS", "insult"}
    finally:
        await service.close()


async def test_privacy_masked_moves_spans_onto_placeholders(
    ch_store: ClickHouseHandoffStore,
) -> None:
    def pii(text: str) -> list[Span]:
        i = text.find(EMAIL)
        return [Span(i, i + len(EMAIL), "EMAIL_ADDRESS", "pii", 0.99)] if i >= 0 else []

    service = await _service(ch_store, content=ContentPolicy("masked", pii=pii))
    try:
        h = await service.create(reason="policy", messages=_conversation(),
                                 answer=ConversationPart("assistant", f"Mail {EMAIL} back."))
        got = await service.get(h.id)
        assert got is not None and got.content_stored
        user = got.messages[1]
        assert EMAIL not in user.text and "<EMAIL_ADDRESS_1>" in user.text
        marked = {user.text[s.start:s.end] for s in user.spans}
        assert marked == {"<EMAIL_ADDRESS_1>", "idiot"}
        assert got.answer_text == "Mail <EMAIL_ADDRESS_1> back."  # same value, same placeholder
    finally:
        await service.close()


async def test_masked_without_pii_finder_keeps_no_text() -> None:
    store = MemoryHandoffStore()
    service = await _service(store, content=ContentPolicy("masked"))
    h = await service.create(reason="policy", messages=_conversation())
    assert not h.content_stored
    await service.close()


async def test_store_failure_is_a_public_503(caplog: pytest.LogCaptureFixture) -> None:
    def broken(fn: Any, /) -> Any:
        raise ConnectionError(f"cannot reach clickhouse; row held {EMAIL}")

    service = await _service(ClickHouseHandoffStore(broken))
    with pytest.raises(HandoffUnavailableError) as exc:
        await service.create(reason="policy", messages=_conversation())
    assert exc.value.status == 503
    assert EMAIL not in caplog.text and "ConnectionError" in caplog.text
    await service.close()


async def test_store_serialises_through_the_runner(
    backend: Backend, review_database: str
) -> None:
    calls: list[str] = []
    lock = threading.Lock()
    inner = locked_runner(backend.admin, review_database, lock)

    def run(fn: Any, /) -> Any:
        calls.append(threading.current_thread().name)
        assert not lock.locked()
        return inner(fn)

    service = await _service(ClickHouseHandoffStore(run))
    h = await service.create(reason="policy", messages=_conversation())
    assert await service.get(h.id) is not None
    assert calls and all(name != threading.main_thread().name for name in calls)
    await service.close()


async def test_memory_store_matches_the_service_contract() -> None:
    store = MemoryHandoffStore(max_rows=2)
    service = await _service(store)
    ids = []
    for _ in range(3):
        ids.append((await service.create(reason="policy", messages=_conversation(),
                                         answer="A.")).id)
        await asyncio.sleep(0.003)
    assert [h.id for h in await service.list_open()] == ids[:0:-1]  # oldest evicted
    await service.resolve(ids[2], "edit", "B.", "alice")
    assert [r["kind"] for r in store.feedback.values()] == ["preference"]
    await service.close()
