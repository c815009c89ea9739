"""Hand-off values: what the pipeline hands over, what is stored, what a client may see.

A hand-off is a conversation a person must look at. It is created ``pending``
and ends ``resolved`` (a reviewer approved the model's answer or sent an edited
one) or ``rejected`` (a reviewer refused and wrote a reply instead).

Stored form (the ``handoffs`` table, written through a :class:`HandoffStore`):

- ``content``: JSON ``{"v": 1, "messages": [{"role", "text"}], "answer": str|null}``
  holding only what the privacy setting allows (``None`` when no text may be kept);
- ``findings``: JSON list of ``{"stage", "detector", "label", "score", "action",
  "start", "end", "message"}`` (character offsets into the stored text of
  ``messages[message]``, or of the answer when ``message`` is null; ``message``
  -1 marks a finding that could not be placed in a text); never text;
- ``resolution``: JSON ``{"action": "approve"|"edit"|"reject", "answer": str}``.

Times are Unix epoch seconds (float).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from sidecar.timestamps import epoch_or_none

PENDING = "pending"
RESOLVED = "resolved"
REJECTED = "rejected"
OPEN_STATUSES = frozenset({PENDING, "assigned"})
UNPLACED = -1  # a finding's ``message`` when it is not placed in any stored text
ACTIONS = ("approve", "edit", "reject")
ResolveAction = Literal["approve", "edit", "reject"]
_RESOLUTION_NAMES = {"approve": "approved", "edit": "edited", "reject": "rejected"}


@dataclass(frozen=True, slots=True)
class Span:
    """A finding's place in one text: character offsets ``[start, end)``, no text."""

    start: int
    end: int
    label: str
    detector: str = ""
    score: float = 0.0
    stage: str = ""  # "input" | "output"
    action: str = ""  # the policy action the finding caused

    @classmethod
    def from_finding(cls, finding: Any, *, stage: str = "", action: str = "") -> Span:
        """From a ``detectors.base.Finding`` or a ``FindingRecord`` (duck-typed)."""
        return cls(
            start=int(finding.start),
            end=int(finding.end),
            label=str(finding.label),
            detector=str(getattr(finding, "detector", "")),
            score=round(float(getattr(finding, "score", 0.0)), 6),
            stage=str(getattr(finding, "stage", stage) or stage),
            action=str(getattr(finding, "action", action) or action),
        )


@dataclass(frozen=True, slots=True)
class ConversationPart:
    """One message of the conversation (``role``: system, user, assistant, tool,
    or ``prompt`` for a text completion) and the finding spans inside its text."""

    role: str
    text: str
    spans: tuple[Span, ...] = ()


@dataclass(frozen=True, slots=True)
class Handoff:
    id: str
    status: str
    reason: str
    created_at: float
    updated_at: float
    request_id: str | None = None
    trace_id: str | None = None
    conversation_id: str | None = None
    tenant: str | None = None
    route: str = ""
    model: str = ""
    content_stored: bool = False  # False: the privacy setting kept no text
    messages: tuple[ConversationPart, ...] = ()
    answer: ConversationPart | None = None  # the model's withheld answer, if there was one
    # (message index, None: the answer, UNPLACED: no text to mark, span)
    findings: tuple[tuple[int | None, Span], ...] = ()
    assignee: str | None = None
    action: str | None = None  # "approve" | "edit" | "reject" once resolved
    human_answer: str | None = None  # what the client receives: approved, edited or reply
    resolved_at: float | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def public_status(self) -> str:
        return self.status if self.status in (RESOLVED, REJECTED) else PENDING

    @property
    def answer_text(self) -> str | None:
        return self.answer.text if self.answer is not None else None

    def public_view(self) -> dict[str, Any]:
        """What ``GET /v1/handoffs/{id}`` returns: no conversation, no findings."""
        return {
            "id": self.id,
            "object": "railwatch.handoff",
            "status": self.public_status,
            "answer": self.human_answer if not self.is_open else None,
            "resolution": _RESOLUTION_NAMES.get(self.action or "") if not self.is_open else None,
            "created_at": int(self.created_at),
            "updated_at": int(self.updated_at),
        }

    def findings_summary(self) -> list[dict[str, Any]]:
        """Text-free finding metadata (webhooks, lists)."""
        return [
            {"stage": s.stage, "detector": s.detector, "label": s.label, "score": s.score,
             "action": s.action}
            for _, s in self.findings
        ]

    # --- storage rows -------------------------------------------------------------------

    def to_row(self) -> dict[str, Any]:
        """The mapping ``exporters.clickhouse.review.upsert_handoff`` takes."""
        content = None
        if self.content_stored:
            content = orjson.dumps({
                "v": 1,
                "messages": [{"role": m.role, "text": m.text} for m in self.messages],
                "answer": self.answer.text if self.answer is not None else None,
            }).decode()
        resolution = None
        if self.action is not None:
            resolution = orjson.dumps({"action": self.action, "answer": self.human_answer}).decode()
        return {
            "id": self.id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "request_id": self.request_id,
            "trace_id": self.trace_id,
            "conversation_id": self.conversation_id,
            "tenant": self.tenant,
            "route": self.route,
            "model": self.model,
            "content": content,
            "findings": [
                {"stage": s.stage, "detector": s.detector, "label": s.label, "score": s.score,
                 "action": s.action, "start": s.start, "end": s.end, "message": i}
                for i, s in self.findings
            ],
            "reason": self.reason,
            "status": self.status,
            "assignee": self.assignee,
            "resolution": resolution,
            "resolved_at": self.resolved_at,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Handoff:
        """From a stored row (``review.get_handoff``); tolerates text removed by a TTL."""
        findings: list[tuple[int | None, Span]] = []
        for f in row.get("findings") or ():
            if not isinstance(f, Mapping):
                continue
            index = f.get("message")
            findings.append((
                index if isinstance(index, int) else None,
                Span(int(f.get("start", 0)), int(f.get("end", 0)), str(f.get("label", "")),
                     str(f.get("detector", "")), float(f.get("score", 0.0)),
                     str(f.get("stage", "")), str(f.get("action", ""))),
            ))
        messages: list[ConversationPart] = []
        answer: ConversationPart | None = None
        content = _json_object(row.get("content"))
        if content is not None:
            for i, m in enumerate(content.get("messages") or ()):
                if isinstance(m, Mapping):
                    spans = tuple(s for j, s in findings if j == i)
                    messages.append(ConversationPart(str(m.get("role", "")),
                                                     str(m.get("text", "")), spans))
            text = content.get("answer")
            if isinstance(text, str):
                answer = ConversationPart("assistant", text,
                                          tuple(s for j, s in findings if j is None))
        resolution = _json_object(row.get("resolution")) or {}
        human = resolution.get("answer")
        action = resolution.get("action")
        return cls(
            id=str(row["id"]),
            status=str(row.get("status") or PENDING),
            reason=str(row.get("reason") or ""),
            created_at=epoch_or_none(row.get("created_at")) or 0.0,
            updated_at=epoch_or_none(row.get("updated_at")) or 0.0,
            request_id=row.get("request_id"),
            trace_id=row.get("trace_id"),
            conversation_id=row.get("conversation_id"),
            tenant=row.get("tenant"),
            route=str(row.get("route") or ""),
            model=str(row.get("model") or ""),
            content_stored=content is not None,
            messages=tuple(messages),
            answer=answer,
            findings=tuple(findings),
            assignee=row.get("assignee"),
            action=action if action in ACTIONS else None,
            human_answer=human if isinstance(human, str) else None,
            resolved_at=epoch_or_none(row.get("resolved_at")),
        )


def findings_of(
    messages: Sequence[ConversationPart],
    answer: ConversationPart | None,
    unplaced: Sequence[Span] = (),
) -> tuple[tuple[int | None, Span], ...]:
    out: list[tuple[int | None, Span]] = [(i, s) for i, m in enumerate(messages) for s in m.spans]
    if answer is not None:
        out.extend((None, s) for s in answer.spans)
    out.extend((UNPLACED, s) for s in unplaced)
    return tuple(out)


def _json_object(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None
