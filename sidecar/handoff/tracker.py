"""When to hand a conversation to a person: per-conversation counters and the triggers.

Triggers, checked by :func:`handoff_reason` in this order:

1. ``client_request``: the client asked (header ``x-railwatch-handoff: true``, or
   body ``metadata.railwatch_handoff`` true / ``"true"``), see :func:`handoff_requested`;
2. ``policy``: a detector rule's action was ``handoff``;
3. ``repeated_failures``: the conversation reached ``max_failures`` guardrail failures;
4. ``max_turns``: the conversation is longer than ``max_turns`` turns.

3 and 4 fire once per conversation: after a hand-off the tracker remembers its id
and stays quiet for that conversation (the person now owns it); 1 and 2 always fire.

A conversation is keyed by the ``x-railwatch-conversation-id`` header, else the
request's ``user`` field (:func:`conversation_key`). :class:`ConversationTracker`
is a bounded LRU and stores no text; it is used from the event loop only (not
thread-safe).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

HEADER_HANDOFF_REQUEST = "x-railwatch-handoff"
BODY_HANDOFF_FLAG = "railwatch_handoff"  # key inside the body's ``metadata`` object
FAILURE_ACTIONS = frozenset({"block", "retry", "fallback", "handoff"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_MAX_KEY_CHARS = 200


@dataclass(slots=True)
class ConversationState:
    turns: int = 0  # the longest the conversation has been, in turns
    failures: int = 0  # guardrail failures seen in it
    handoff_id: str | None = None  # set once the conversation was handed off


def conversation_key(conversation_id: str | None, user: Any = None) -> str | None:
    """The tracking key: the conversation header, else the ``user`` field; long
    client-chosen values are hashed so a key is at most 200 characters."""
    key = conversation_id if conversation_id else (user if isinstance(user, str) and user else None)
    if key is None:
        return None
    if len(key) > _MAX_KEY_CHARS:
        return "h:" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
    return key


def handoff_requested(headers: Mapping[str, str], body: Mapping[str, Any] | None) -> bool:
    """Whether the client explicitly asked for a person (header or body flag)."""
    value = headers.get(HEADER_HANDOFF_REQUEST)
    if value is not None and value.strip().lower() in _TRUE:
        return True
    metadata = body.get("metadata") if body is not None else None
    if isinstance(metadata, Mapping):
        flag = metadata.get(BODY_HANDOFF_FLAG)
        return flag is True or (isinstance(flag, str) and flag.strip().lower() in _TRUE)
    return False


def user_turns(route: str, body: Mapping[str, Any] | None) -> int:
    """Turns in a request body: user messages of a chat, 1 for a completion."""
    if body is None:
        return 0
    messages = body.get("messages")
    if isinstance(messages, list):
        return sum(1 for m in messages if isinstance(m, Mapping) and m.get("role") == "user")
    return 1 if route == "text_completion" else 0


def is_guardrail_failure(action: str) -> bool:
    """A stage decision that counts as a failure (block, retry, fallback, handoff)."""
    return action in FAILURE_ACTIONS


class ConversationTracker:
    """Per-conversation turns and guardrail failures, least recently used evicted."""

    def __init__(self, max_conversations: int = 10_000) -> None:
        self.max_conversations = max_conversations
        self._states: OrderedDict[str, ConversationState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def get(self, key: str | None) -> ConversationState | None:
        return self._states.get(key) if key is not None else None

    def _state(self, key: str) -> ConversationState:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = ConversationState()
            if len(self._states) > self.max_conversations:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(key)
        return state

    def observe_turn(self, key: str | None, turns: int = 0) -> ConversationState | None:
        """Count one request of the conversation; ``turns`` is what its body shows
        (:func:`user_turns`): clients that resend the history report it, clients that
        send only the new message are counted request by request."""
        if key is None:
            return None
        state = self._state(key)
        state.turns = max(state.turns + 1, turns)
        return state

    def record_failure(self, key: str | None) -> ConversationState | None:
        if key is None:
            return None
        state = self._state(key)
        state.failures += 1
        return state

    def mark_handed_off(self, key: str | None, handoff_id: str) -> None:
        if key is not None:
            self._state(key).handoff_id = handoff_id


def handoff_reason(
    *,
    action: str | None = None,
    requested: bool = False,
    state: ConversationState | None = None,
    max_turns: int | None = None,
    max_failures: int | None = None,
) -> str | None:
    """The first trigger that holds (module docstring), or ``None``."""
    if requested:
        return "client_request"
    if action == "handoff":
        return "policy"
    if state is None or state.handoff_id is not None:
        return None
    if max_failures is not None and state.failures >= max_failures:
        return "repeated_failures"
    if max_turns is not None and state.turns > max_turns:
        return "max_turns"
    return None
