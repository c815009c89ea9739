"""What text a hand-off keeps: raw, masked or none, as ``privacy.capture`` says.

A reviewer needs the conversation, so a hand-off stores it, but never more than
the trace would: ``raw`` keeps the text (each part cut at ``max_chars``),
``masked`` replaces PII with placeholders (``<EMAIL_ADDRESS_1>``) first, ``none``
keeps no text at all (findings' labels and scores remain).

Masking uses the one :class:`sidecar.masking.Masker` on the spans of a PII
finder (the policy's PII detector), one masker per hand-off so a value gets the
same placeholder in every message. Finding spans are then moved to the masked
text: a span touching a masked value grows to cover its placeholder, so the
reviewer sees the placeholder highlighted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from sidecar.handoff.model import ConversationPart, Span
from sidecar.masking import PLACEHOLDER_PATTERN, Masker
from sidecar.privacy import StoragePrivacy

logger = logging.getLogger(__name__)

PiiFinder = Callable[[str], Sequence[Any]]  # text -> findings with label/score/start/end
Capture = Literal["raw", "masked", "none"]

# (original start, original end, masked start, masked end) of one replaced value
_Replacement = tuple[int, int, int, int]


class ContentPolicy:
    """Applies the privacy setting to a hand-off's texts. Blocking (the PII finder
    may run a model): call it off the event loop. Never raises on text."""

    def __init__(
        self, capture: Capture = "raw", *, max_chars: int = 32_768, pii: PiiFinder | None = None,
        storage: StoragePrivacy | None = None,
    ) -> None:
        self.capture = capture
        self.max_chars = max_chars
        self.pii = pii
        self.storage = storage  # identifiers (conversation id, tenant) as traces store them

    @classmethod
    def from_privacy(
        cls, privacy: Any, pii: PiiFinder | None = None, storage: StoragePrivacy | None = None
    ) -> ContentPolicy:
        """From ``sidecar.settings.PrivacySettings`` (``capture``, ``max_text_chars``)."""
        return cls(privacy.capture, max_chars=privacy.max_text_chars, pii=pii, storage=storage)

    def identifiers(
        self, conversation_id: str | None, tenant: str | None
    ) -> tuple[str | None, str | None]:
        """Conversation id and tenant as stored: pseudonym and masked under ``masked`` and
        ``none``, like the trace's (blocking: the tenant may go through the detectors)."""
        if self.storage is None:
            return conversation_id, tenant
        return self.storage.pseudonym(conversation_id), self.storage.tenant(tenant)

    @property
    def keeps_text(self) -> bool:
        return self.capture == "raw" or (self.capture == "masked" and self.pii is not None)

    def apply(
        self, messages: Sequence[ConversationPart], answer: ConversationPart | None
    ) -> tuple[tuple[ConversationPart, ...], ConversationPart | None] | None:
        """The parts as they may be stored, or ``None`` when no text may be kept."""
        if not self.keeps_text:
            return None
        masker = Masker() if self.capture == "masked" else None
        try:
            kept = tuple(self._part(p, masker) for p in messages)
            kept_answer = self._part(answer, masker) if answer is not None else None
        except Exception as exc:  # noqa: BLE001 - a failing masker must not leak raw text
            logger.warning("hand-off text not kept: masking failed (%s)", type(exc).__name__)
            return None
        return kept, kept_answer

    def _part(self, part: ConversationPart, masker: Masker | None) -> ConversationPart:
        text, spans = part.text, part.spans
        if masker is not None:
            # cut before masking (plus a margin, so no value at the cut is half-seen):
            # the detectors' work stays bounded by max_chars, not by the prompt
            text, spans = _cut(text, spans, self.max_chars + 256)
            assert self.pii is not None
            text, spans = mask_with_spans(masker, text, self.pii(text), spans)
        text, spans = _cut(text, spans, self.max_chars)
        return ConversationPart(part.role, text, spans)


def _cut(text: str, spans: tuple[Span, ...], limit: int) -> tuple[str, tuple[Span, ...]]:
    """``text`` cut to ``limit`` characters, and ``spans`` clipped to it (those starting
    past the cut dropped); unchanged when it is short enough."""
    if len(text) <= limit:
        return text, spans
    return text[:limit], tuple(
        Span(s.start, min(s.end, limit), s.label, s.detector, s.score, s.stage, s.action)
        for s in spans if s.start < limit
    )


def mask_with_spans(
    masker: Masker, text: str, pii: Sequence[Any], spans: Sequence[Span]
) -> tuple[str, tuple[Span, ...]]:
    """``text`` masked on the ``pii`` findings, and ``spans`` moved onto the result."""
    masked = masker.mask(text, pii)
    if masked == text:
        return text, tuple(spans)
    replacements = _replacements(masker, text, masked)
    moved = []
    for s in spans:
        start = _map(replacements, max(0, min(s.start, len(text))), end=False)
        end = _map(replacements, max(0, min(s.end, len(text))), end=True)
        moved.append(Span(start, max(start, end), s.label, s.detector, s.score, s.stage, s.action))
    return masked, tuple(moved)


def _replacements(masker: Masker, text: str, masked: str) -> list[_Replacement]:
    """Where each placeholder the masker issued replaced a value of ``text``."""
    issued = masker.mapping
    out: list[_Replacement] = []
    delta = 0  # masked position - original position, before the current match
    for m in PLACEHOLDER_PATTERN.finditer(masked):
        value = issued.get(m.group(0))
        if value is None:
            continue
        start = m.start() - delta
        if text[start : start + len(value)] != value:
            continue  # a literal that merely looks like one of ours
        out.append((start, start + len(value), m.start(), m.end()))
        delta = m.end() - (start + len(value))
    return out


def _map(replacements: Sequence[_Replacement], pos: int, *, end: bool) -> int:
    """An original offset in masked coordinates; inside a value it snaps to the
    placeholder's start (for a span's start) or end (for a span's end)."""
    delta = 0
    for o_start, o_end, m_start, m_end in replacements:
        if pos <= o_start:
            return pos + delta
        if pos < o_end:
            return m_end if end else m_start
        delta = m_end - o_end
    return pos + delta
