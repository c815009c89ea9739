"""POST /v1/feedback over real HTTP into the real ClickHouse engine; implicit signals."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web

from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter, review
from sidecar.errors import BadRequestError
from sidecar.feedback import (
    ATTR_ABANDONED,
    ATTR_REGENERATION,
    ATTR_TURNS,
    ImplicitSignals,
    parse_feedback,
    prompt_hash,
    setup_feedback_routes,
)
from sidecar.handoff.clickhouse import ClickHouseHandoffStore, locked_runner
from sidecar.handoff.store import MemoryHandoffStore
from sidecar.record import TraceRecord

if TYPE_CHECKING:
    from tests.conftest import Backend

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class FeedbackServer:
    def __init__(self, url: str, signals: ImplicitSignals) -> None:
        self.url = url
        self.signals = signals

    async def post(self, body: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            if isinstance(body, bytes | str):
                kwargs["data"] = body
            else:
                kwargs["json"] = body
            async with http.post(f"{self.url}/v1/feedback", **kwargs) as resp:
                return resp.status, await resp.json()


async def _serve(store: Any, **options: Any) -> tuple[web.AppRunner, FeedbackServer]:
    signals = ImplicitSignals()
    app = web.Application()
    setup_feedback_routes(app, store, signals=signals, **options)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, FeedbackServer(f"http://{host}:{port}", signals)


@pytest.fixture
async def server(backend: Backend, review_database: str) -> AsyncIterator[FeedbackServer]:
    store = ClickHouseHandoffStore(locked_runner(backend.admin, review_database, threading.Lock()))
    runner, srv = await _serve(store, max_comment_chars=100, max_body_bytes=4096)
    yield srv
    await runner.cleanup()


def _rows(backend: Backend, database: str, trace_id: str = TRACE) -> list[dict[str, Any]]:
    return review.list_feedback(backend.admin, database, trace_id=trace_id)


async def test_thumbs_up_and_down(
    server: FeedbackServer, backend: Backend, review_database: str
) -> None:
    status, body = await server.post({"trace_id": TRACE, "thumbs": "up", "user": "u1"})
    assert status == 201
    assert body["trace_id"] == TRACE and body["known_trace"] is False and len(body["id"]) == 32
    status, _ = await server.post({"trace_id": TRACE.upper(), "thumbs": "down",
                                   "comment": "wrong", "corrected_answer": "Paris."})
    assert status == 201
    rows = sorted(_rows(backend, review_database), key=lambda r: r["value"])
    assert [(r["kind"], r["value"]) for r in rows] == [("thumbs", -1.0), ("thumbs", 1.0)]
    assert rows[0]["comment"] == "wrong" and rows[0]["corrected_answer"] == "Paris."
    assert rows[1]["user"] == "u1" and rows[0]["known_trace"] is False


async def test_score(server: FeedbackServer, backend: Backend, review_database: str) -> None:
    status, body = await server.post({"trace_id": TRACE, "score": 4})
    assert status == 201
    (row,) = _rows(backend, review_database)
    assert (row["kind"], row["value"], row["id"]) == ("score", 4.0, body["id"])


@pytest.mark.parametrize(("body", "param"), [
    ({"thumbs": "up"}, "trace_id"),
    ({"trace_id": 5, "thumbs": "up"}, "trace_id"),
    ({"trace_id": "xyz", "thumbs": "up"}, "trace_id"),
    ({"trace_id": "0" * 32, "thumbs": "up"}, "trace_id"),
    ({"trace_id": TRACE}, "thumbs"),
    ({"trace_id": TRACE, "thumbs": "sideways"}, "thumbs"),
    ({"trace_id": TRACE, "thumbs": True}, "thumbs"),
    ({"trace_id": TRACE, "score": 0}, "score"),
    ({"trace_id": TRACE, "score": 6}, "score"),
    ({"trace_id": TRACE, "score": 3.5}, "score"),
    ({"trace_id": TRACE, "score": True}, "score"),
    ({"trace_id": TRACE, "score": "5"}, "score"),
    ({"trace_id": TRACE, "score": 5, "thumbs": "up"}, "score"),
    ({"trace_id": TRACE, "score": 5, "comment": 7}, "comment"),
    ({"trace_id": TRACE, "score": 5, "corrected_answer": ["x"]}, "corrected_answer"),
    ({"trace_id": TRACE, "score": 5, "user": "u" * 300}, "user"),
    ({"trace_id": TRACE, "score": 5, "rating": 5}, "rating"),
])
async def test_invalid_bodies_name_the_field(
    server: FeedbackServer, body: dict[str, Any], param: str
) -> None:
    status, answer = await server.post(body)
    assert status == 400
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["param"] == param
    assert answer["error"]["type"] == "invalid_request_error"


async def test_malformed_and_oversize(server: FeedbackServer) -> None:
    status, answer = await server.post(b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400 and answer["error"]["code"] == "invalid_json"
    status, answer = await server.post([1, 2])
    assert status == 400
    status, answer = await server.post({"trace_id": TRACE, "score": 5, "comment": "c" * 101})
    assert status == 400
    assert answer["error"]["param"] == "comment" and answer["error"]["code"] == "string_too_long"
    status, answer = await server.post({"trace_id": TRACE, "score": 5, "comment": "c" * 5000})
    assert status == 413 and answer["error"]["code"] == "payload_too_large"


async def test_known_trace(
    server: FeedbackServer, backend: Backend, review_database: str, tmp_path: Path
) -> None:
    exporter = ClickHouseExporter(ClickHouseConfig(
        dsn=backend.dsn, database=review_database, data_dir=tmp_path / "data",
        spill_dir=tmp_path / "spill", ttl_text_days=None))
    exporter.start()
    try:
        now = time.time()
        exporter.export([TraceRecord(
            request_id="1" * 32, trace_id=TRACE, span_id="2" * 16, parent_span_id=None,
            started_at=now, ended_at=now + 0.1, method="POST", path="/v1/chat/completions",
            route="chat", upstream="http://127.0.0.1:1", status=200)])
        assert exporter.force_flush(10)
    finally:
        exporter.shutdown(5)
    status, body = await server.post({"trace_id": TRACE, "thumbs": "up"})
    assert status == 201 and body["known_trace"] is True
    other = "5" * 32
    status, body = await server.post({"trace_id": other, "thumbs": "up"})
    assert status == 201 and body["known_trace"] is False
    assert _rows(backend, review_database)[0]["known_trace"] is True


async def test_a_trace_of_this_process_is_known_before_it_is_stored() -> None:
    store = MemoryHandoffStore()
    runner, srv = await _serve(store)
    try:
        srv.signals.observe(user=None, conversation_id=None, prompt_hash=None,
                            client_disconnected=False, message_count=1, trace_id=TRACE)
        status, body = await srv.post({"trace_id": TRACE, "score": 2})
        assert status == 201 and body["known_trace"] is True
    finally:
        await runner.cleanup()


async def test_privacy_none_keeps_no_text() -> None:
    store = MemoryHandoffStore()
    runner, srv = await _serve(store, store_text=False)
    try:
        status, _ = await srv.post({"trace_id": TRACE, "thumbs": "down", "comment": "my secret",
                                    "corrected_answer": "secret answer"})
        assert status == 201
    finally:
        await runner.cleanup()
    (row,) = store.feedback.values()
    assert row["comment"] is None and row["corrected_answer"] is None


async def test_storage_failure_is_a_503(caplog: pytest.LogCaptureFixture) -> None:
    def broken(fn: Any, /) -> Any:
        raise ConnectionError("down; comment was my secret")

    runner, srv = await _serve(ClickHouseHandoffStore(broken))
    try:
        status, body = await srv.post({"trace_id": TRACE, "thumbs": "up",
                                       "comment": "my secret"})
    finally:
        await runner.cleanup()
    assert status == 503 and body["error"]["code"] == "feedback_unavailable"
    assert "my secret" not in caplog.text


def test_parse_feedback_normalises() -> None:
    fb = parse_feedback({"trace_id": f" {TRACE.upper()} ", "score": 5.0, "comment": ""})
    assert fb.trace_id == TRACE and fb.value == 5.0 and fb.comment is None
    with pytest.raises(BadRequestError):
        parse_feedback({"trace_id": TRACE, "score": float("nan")})


# --- implicit signals ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_regeneration_within_the_window() -> None:
    clock = Clock()
    signals = ImplicitSignals(regeneration_window_s=60, clock=clock)
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.1}
    h = prompt_hash(body)
    first = signals.observe(user="u", conversation_id=None, prompt_hash=h,
                            client_disconnected=False, message_count=1)
    assert ATTR_REGENERATION not in first and first[ATTR_TURNS] == "1"
    clock.now += 10
    again = signals.observe(user="u", conversation_id=None,
                            prompt_hash=prompt_hash({**body, "temperature": 0.9}),
                            client_disconnected=False, message_count=1)
    assert again[ATTR_REGENERATION] == "1"
    assert again[ATTR_TURNS] == "1"  # a regenerate is not a new turn
    other_user = signals.observe(user="v", conversation_id=None, prompt_hash=h,
                                 client_disconnected=False, message_count=1)
    assert ATTR_REGENERATION not in other_user
    clock.now += 120
    late = signals.observe(user="u", conversation_id=None, prompt_hash=h,
                           client_disconnected=False, message_count=1)
    assert ATTR_REGENERATION not in late
    anonymous = [signals.observe(user=None, conversation_id=None, prompt_hash=h,
                                 client_disconnected=False, message_count=0) for _ in range(2)]
    assert anonymous == [{}, {}]


def test_abandonment_and_turns() -> None:
    signals = ImplicitSignals()
    attrs = signals.observe(user="u", conversation_id="c1", prompt_hash="p1",
                            client_disconnected=True, message_count=3)
    assert attrs == {ATTR_ABANDONED: "1", ATTR_TURNS: "3"}
    attrs = signals.observe(user="u", conversation_id="c1", prompt_hash="p2",
                            client_disconnected=False, message_count=1)
    assert attrs == {ATTR_TURNS: "4"}  # a client sending only the new message


def test_signals_are_bounded_and_hold_no_text() -> None:
    signals = ImplicitSignals(max_entries=10)
    for i in range(100):
        signals.observe(user=f"user-{i}", conversation_id=None, prompt_hash=f"p{i}",
                        client_disconnected=False, message_count=1, trace_id=f"{i:032x}")
    tables = (signals._prompts, signals._turns, signals.issued)
    assert all(len(t) <= 10 for t in tables)
    assert not any("user-" in str(k) for k in signals._prompts)
    assert signals.seen_trace(f"{99:032x}") and not signals.seen_trace(f"{0:032x}")


@pytest.mark.parametrize(("a", "b", "same"), [
    ({"messages": [{"role": "user", "content": "x"}]},
     {"messages": [{"content": "x", "role": "user"}], "model": "other"}, True),
    ({"prompt": "x"}, {"prompt": "y"}, False),
    ({"prompt": "x"}, {"input": "x"}, False),
])
def test_prompt_hash(a: dict[str, Any], b: dict[str, Any], same: bool) -> None:
    assert (prompt_hash(a) == prompt_hash(b)) is same
    assert prompt_hash(None) is None and prompt_hash({"model": "m"}) is None
