"""User feedback: the ``POST /v1/feedback`` API and implicit signals per request.

Explicit feedback names the trace the client got in ``x-railwatch-trace-id``::

    {"trace_id": "<32 hex>", "thumbs": "up" | "down"}          # or
    {"trace_id": "<32 hex>", "score": 1..5}
    # optional: "comment", "corrected_answer", "user"

Answers ``201 {"id", "trace_id", "known_trace"}``. Which trace ids are accepted
is :class:`~sidecar.feedback_gate.FeedbackGate`'s call (by default only ids this
service answered, 404 ``unknown_trace`` otherwise; a rate limit per address, 429);
without a gate every well-formed id is accepted, an unknown one marked
``known_trace: false``. Invalid bodies get a
400 in the OpenAI error shape naming the field (unknown fields too); bodies over
``max_body_bytes`` a 413; storage failures a 503. ``thumbs`` is stored as kind
``thumbs`` with value 1 / -1, ``score`` as kind ``score`` with its value.

Implicit signals (:class:`ImplicitSignals`) are derived at the end of every
request and returned as trace attributes: the same prompt resent by the same
user within a window (``railwatch.signal.regeneration``), a client that went
away mid-answer (``railwatch.signal.abandoned``), and the conversation's length
(``railwatch.conversation.turns``). Only hashes are kept, in bounded LRUs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from sidecar import semconv
from sidecar.errors import BadRequestError, FeedbackUnavailableError, RequestError
from sidecar.feedback_gate import FeedbackGate, IssuedTraces
from sidecar.handoff.store import FeedbackStore
from sidecar.pipeline.ingress import parse_json_object, read_body
from sidecar.pipeline.responses import plain_error_response
from sidecar.privacy import StoragePrivacy

logger = logging.getLogger(__name__)

ATTR_REGENERATION = semconv.ATTR_SIGNAL_REGENERATION
ATTR_ABANDONED = semconv.ATTR_SIGNAL_ABANDONED
ATTR_TURNS = semconv.ATTR_CONVERSATION_TURNS

MAX_COMMENT_CHARS = 4_000
MAX_ANSWER_CHARS = 32_768
MAX_USER_CHARS = 256
MAX_BODY_BYTES = 256 * 1024
_FIELDS = frozenset({"trace_id", "thumbs", "score", "comment", "corrected_answer", "user"})
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Feedback:
    trace_id: str
    kind: str  # "thumbs" | "score"
    value: float  # thumbs: 1 or -1; score: 1..5
    comment: str | None = None
    corrected_answer: str | None = None
    user: str | None = None


def _bad(param: str, message: str, code: str = "invalid_value") -> BadRequestError:
    return BadRequestError(message, param=param, code=code)


def _optional_text(body: Mapping[str, Any], name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(name, f"'{name}' must be a string", "invalid_type")
    if len(value) > limit:
        raise _bad(name, f"'{name}' exceeds {limit} characters", "string_too_long")
    return value or None


def parse_feedback(
    body: Mapping[str, Any],
    *,
    max_comment_chars: int = MAX_COMMENT_CHARS,
    max_answer_chars: int = MAX_ANSWER_CHARS,
) -> Feedback:
    """Validate a feedback body; raises ``BadRequestError`` naming the field."""
    for name in body:
        if name not in _FIELDS:
            raise _bad(str(name), f"unknown field '{name}'", "unknown_parameter")
    trace_id = body.get("trace_id")
    if not isinstance(trace_id, str):
        raise _bad("trace_id", "'trace_id' must be a string (the x-railwatch-trace-id header)",
                   "invalid_type" if "trace_id" in body else "missing_required_parameter")
    trace_id = trace_id.strip().lower()
    if len(trace_id) != 32 or not set(trace_id) <= _HEX or trace_id == "0" * 32:
        raise _bad("trace_id", "'trace_id' must be 32 hexadecimal characters")
    if "thumbs" in body and "score" in body:
        raise _bad("score", "give either 'thumbs' or 'score', not both")
    if "thumbs" in body:
        thumbs = body["thumbs"]
        if thumbs not in ("up", "down"):
            raise _bad("thumbs", "'thumbs' must be \"up\" or \"down\"")
        kind, value = "thumbs", 1.0 if thumbs == "up" else -1.0
    elif "score" in body:
        score = body["score"]
        if (isinstance(score, bool) or not isinstance(score, int | float)
                or not 1 <= score <= 5 or score != int(score)):
            raise _bad("score", "'score' must be an integer from 1 to 5")
        kind, value = "score", float(score)
    else:
        raise _bad("thumbs", "one of 'thumbs' or 'score' is required",
                   "missing_required_parameter")
    return Feedback(
        trace_id=trace_id, kind=kind, value=value,
        comment=_optional_text(body, "comment", max_comment_chars),
        corrected_answer=_optional_text(body, "corrected_answer", max_answer_chars),
        user=_optional_text(body, "user", MAX_USER_CHARS),
    )


def setup_feedback_routes(
    app: web.Application,
    store: FeedbackStore,
    *,
    signals: ImplicitSignals | None = None,
    store_text: bool = True,
    privacy: StoragePrivacy | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_comment_chars: int = MAX_COMMENT_CHARS,
    max_answer_chars: int = MAX_ANSWER_CHARS,
    gate: FeedbackGate | None = None,
) -> None:
    """Add ``POST /v1/feedback``. ``store_text=False`` keeps no comment or corrected
    answer. ``privacy`` applies ``privacy.capture`` to what is stored, like traces:
    ``masked`` masks PII and secrets in the comment and corrected answer and stores
    the user as a pseudonym, ``none`` keeps no text (in a worker thread, with the
    store call). ``signals`` answers "seen" for traces of this process that may not
    be in storage yet (writes are batched). ``gate`` decides which trace ids are
    accepted (module docstring)."""

    async def post_feedback(request: web.Request) -> web.Response:
        try:
            refused = gate.admit(request.remote) if gate is not None else None
            if refused is not None:
                raise refused
            body = parse_json_object(await read_body(request, max_body_bytes))
            fb = parse_feedback(body, max_comment_chars=max_comment_chars,
                                max_answer_chars=max_answer_chars)
            known = signals is not None and signals.seen_trace(fb.trace_id)
            try:
                if not known:
                    known = await asyncio.to_thread(store.trace_exists, fb.trace_id)
            except Exception as exc:  # any backend failure is one public error
                logger.error("feedback trace look-up failed (%s)", type(exc).__name__)
                raise FeedbackUnavailableError("feedback storage is unavailable") from exc
            if not known and gate is not None:
                refused = gate.refuse_unknown(gate.privileged(request.headers))
                if refused is not None:
                    raise refused
            try:
                fid = await asyncio.to_thread(store_feedback, store, fb, known, store_text, privacy)
            except Exception as exc:  # any backend failure is one public error
                logger.error("feedback not stored (%s)", type(exc).__name__)
                raise FeedbackUnavailableError("feedback storage is unavailable") from exc
        except RequestError as exc:
            return plain_error_response(exc)
        return web.Response(
            body=orjson.dumps({"id": fid, "object": "railwatch.feedback",
                               "trace_id": fb.trace_id, "known_trace": known}),
            status=201, content_type="application/json")

    app.router.add_post("/v1/feedback", post_feedback)


def store_feedback(
    store: FeedbackStore, fb: Feedback, known: bool, store_text: bool,
    privacy: StoragePrivacy | None = None,
) -> str:
    """Apply the privacy setting (``None``: none) and store; returns the feedback id.
    Blocks (detectors run, storage writes); raises whatever the store raises."""
    comment, answer, user = fb.comment, fb.corrected_answer, fb.user
    if privacy is not None:
        comment, answer = privacy.text(comment), privacy.text(answer)
        user = privacy.pseudonym(user)
        store_text = store_text and privacy.keeps_text
    return store.add_feedback(
        trace_id=fb.trace_id, kind=fb.kind, value=fb.value, comment=comment,
        corrected_answer=answer, known_trace=known, user=user, store_text=store_text)


# --- implicit signals ----------------------------------------------------------------------


def prompt_hash(body: Mapping[str, Any] | None) -> str | None:
    """A hash of what was asked (chat ``messages``, else ``prompt`` / ``input``),
    blind to sampling parameters and the model, so a regenerate matches."""
    if body is None:
        return None
    for key in ("messages", "prompt", "input"):
        value = body.get(key)
        if value is not None:
            try:
                data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
            except TypeError:
                return None
            return hashlib.blake2b(key.encode() + b"\0" + data, digest_size=16).hexdigest()
    return None


def _key(*parts: str) -> int:
    """64 bits of BLAKE2b: an int key costs about half an OrderedDict's bytes key entry,
    and a collision (odds about n / 2**64) only misreads one signal."""
    digest = hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


class ImplicitSignals:
    """Regeneration, abandonment and conversation length per request.

    Memory is bounded: at most ``max_entries`` per table, least recently used
    dropped first, in plain insertion-ordered dicts of 64-bit keys (about 65 bytes an
    entry, measured; an ``OrderedDict`` of 16-byte keys took 148), so 50,000 entries
    are about 3 MB a table. Prompt hashes older than the regeneration window are
    dropped too (they can no longer match). This per-user state is what grew in the
    issue 9 soak (unique users at 100 requests/s): it levels off at the bound. Trace
    ids answered go to ``issued`` (what feedback accepts). Event-loop use only (not
    thread-safe).
    """

    def __init__(
        self,
        *,
        regeneration_window_s: float = 600.0,
        max_entries: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
        issued: IssuedTraces | None = None,
    ) -> None:
        self.window_s = regeneration_window_s
        self.max_entries = max_entries
        self._clock = clock
        self._prompts: dict[int, float] = {}  # (who, prompt) -> last seen; oldest first
        self._turns: dict[int, int] = {}  # conversation -> turns; least recently used first
        self.issued = (issued if issued is not None
                       else IssuedTraces(max_entries=max_entries, clock=clock))

    def _put(self, table: dict[int, Any], key: int, value: Any) -> None:
        table.pop(key, None)  # re-inserted last: the most recently used
        table[key] = value
        if len(table) > self.max_entries:
            del table[next(iter(table))]

    def _expire_prompts(self, now: float) -> None:
        prompts = self._prompts  # least recently seen first
        while prompts:
            key = next(iter(prompts))
            if now - prompts[key] <= self.window_s:
                break
            del prompts[key]

    def seen_trace(self, trace_id: str) -> bool:
        """Whether a request of this process had ``trace_id`` (recent ones only)."""
        return trace_id in self.issued

    def observe(
        self,
        *,
        user: str | None,
        conversation_id: str | None,
        prompt_hash: str | None,
        client_disconnected: bool,
        message_count: int,
        trace_id: str | None = None,
    ) -> dict[str, str]:
        """Call once at the end of each request; returns trace attributes to add."""
        attributes: dict[str, str] = {}
        now = self._clock()
        if trace_id:
            self.issued.add(trace_id)
        self._expire_prompts(now)
        who = conversation_id or user
        regenerated = False
        if who and prompt_hash:
            key = _key("p", who, prompt_hash)
            last = self._prompts.get(key)
            regenerated = last is not None and now - last <= self.window_s
            self._put(self._prompts, key, now)
        if regenerated:
            attributes[ATTR_REGENERATION] = "1"
        if client_disconnected:
            attributes[ATTR_ABANDONED] = "1"
        turns = max(message_count, 0)
        if who:
            key = _key("c", who)
            previous = self._turns.get(key, 0)
            turns = max(previous + (0 if regenerated else 1), turns)
            self._put(self._turns, key, turns)
        if turns:
            attributes[ATTR_TURNS] = str(turns)
        return attributes
