"""Hand-off triggers: the conversation tracker, the explicit flag, the reasons."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.handoff.tracker import (
    ConversationState,
    ConversationTracker,
    conversation_key,
    handoff_reason,
    handoff_requested,
    is_guardrail_failure,
    user_turns,
)


@pytest.mark.parametrize(("headers", "body", "expected"), [
    ({"x-railwatch-handoff": "true"}, None, True),
    ({"x-railwatch-handoff": " Yes "}, {}, True),
    ({"x-railwatch-handoff": "false"}, {}, False),
    ({}, {"metadata": {"railwatch_handoff": True}}, True),
    ({}, {"metadata": {"railwatch_handoff": "true"}}, True),
    ({}, {"metadata": {"railwatch_handoff": "no"}}, False),
    ({}, {"metadata": "railwatch_handoff"}, False),
    ({}, {"railwatch_handoff": True}, False),
    ({}, None, False),
])
def test_handoff_requested(headers: dict[str, str], body: Any, expected: bool) -> None:
    assert handoff_requested(headers, body) is expected


@pytest.mark.parametrize(("header", "user", "expected"), [
    ("conv-1", "alice", "conv-1"),
    (None, "alice", "alice"),
    ("", "alice", "alice"),
    (None, None, None),
    (None, 42, None),
])
def test_conversation_key(header: str | None, user: Any, expected: str | None) -> None:
    assert conversation_key(header, user) == expected


def test_long_conversation_ids_are_hashed() -> None:
    key = conversation_key("x" * 5000)
    assert key is not None and key.startswith("h:") and len(key) < 200
    assert key == conversation_key("x" * 5000)


@pytest.mark.parametrize(("route", "body", "turns"), [
    ("chat", {"messages": [{"role": "system"}, {"role": "user"}, {"role": "assistant"},
                           {"role": "user"}]}, 2),
    ("text_completion", {"prompt": "hi"}, 1),
    ("embeddings", {"input": "hi"}, 0),
    ("chat", None, 0),
])
def test_user_turns(route: str, body: Any, turns: int) -> None:
    assert user_turns(route, body) == turns


@pytest.mark.parametrize(("action", "failure"), [
    ("block", True), ("retry", True), ("fallback", True), ("handoff", True),
    ("pass", False), ("flag", False), ("mask", False),
])
def test_guardrail_failures(action: str, failure: bool) -> None:
    assert is_guardrail_failure(action) is failure


def test_turns_count_requests_or_the_history_whichever_is_longer() -> None:
    tracker = ConversationTracker()
    for _ in range(3):
        state = tracker.observe_turn("c", 1)  # a client sending only the new message
    assert state is not None and state.turns == 3
    state = tracker.observe_turn("c", 10)  # a client resending the history
    assert state is not None and state.turns == 10
    assert tracker.observe_turn(None, 5) is None


def test_tracker_is_a_bounded_lru() -> None:
    tracker = ConversationTracker(max_conversations=3)
    for key in ("a", "b", "c"):
        tracker.observe_turn(key)
    tracker.record_failure("a")  # touches a: b is now the oldest
    tracker.observe_turn("d")
    assert len(tracker) == 3
    assert tracker.get("b") is None
    assert tracker.get("a") == ConversationState(turns=1, failures=1)


def test_reasons_in_order_and_once_per_conversation() -> None:
    tracker = ConversationTracker()
    limits: dict[str, Any] = {"max_turns": 3, "max_failures": 2}
    state = tracker.observe_turn("c")
    assert handoff_reason(state=state, **limits) is None
    assert handoff_reason(requested=True, action="handoff", state=state) == "client_request"
    assert handoff_reason(action="handoff", state=state) == "policy"
    tracker.record_failure("c")
    assert handoff_reason(state=tracker.get("c"), **limits) is None
    tracker.record_failure("c")
    assert handoff_reason(state=tracker.get("c"), **limits) == "repeated_failures"
    tracker.mark_handed_off("c", "h1")
    assert handoff_reason(state=tracker.get("c"), **limits) is None  # the person owns it now
    assert handoff_reason(action="handoff", state=tracker.get("c"), **limits) == "policy"

    for _ in range(4):
        state = tracker.observe_turn("long")
    assert handoff_reason(state=state, **limits) == "max_turns"
    assert handoff_reason(state=state) is None  # thresholds off
