"""The conversation of an OpenAI request body as hand-off parts, with finding spans.

The guard checks each text of a body separately (a chat message's content, each
text part of a multi-part content, each prompt), so finding offsets are relative
to that text, keyed by its path in the body (``("messages", 2, "content")``,
``("messages", 2, "content", 0, "text")``, ``("prompt", 1)``: the guard's
``Segment.path``). :func:`parts_from_body` builds one part per message (text
parts joined by a newline) and moves each span to the joined text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sidecar.handoff.model import ConversationPart, Span

Path = tuple[str | int, ...]
_NO_SPANS: Mapping[Path, Sequence[Span]] = {}


def parts_from_body(
    route: str,
    body: Mapping[str, Any] | None,
    spans: Mapping[Path, Sequence[Span]] | None = None,
) -> list[ConversationPart]:
    """Chat messages (role and text), or a completion's prompts (role ``prompt``)."""
    if body is None:
        return []
    spans = spans or _NO_SPANS
    messages = body.get("messages")
    if route == "chat" or isinstance(messages, list):
        parts = []
        for i, m in enumerate(messages if isinstance(messages, list) else ()):
            if isinstance(m, Mapping):
                text, found = _content(m.get("content"), ("messages", i, "content"), spans)
                parts.append(ConversationPart(str(m.get("role") or "user"), text, found))
        return parts
    key = "prompt" if route == "text_completion" else "input"
    value = body.get(key)
    if isinstance(value, str):
        return [ConversationPart("prompt", value, tuple(spans.get((key,), ())))]
    if isinstance(value, list):
        return [ConversationPart("prompt", v, tuple(spans.get((key, k), ())))
                for k, v in enumerate(value) if isinstance(v, str)]
    return []


def _content(
    content: Any, path: Path, spans: Mapping[Path, Sequence[Span]]
) -> tuple[str, tuple[Span, ...]]:
    if isinstance(content, str):
        return content, tuple(spans.get(path, ()))
    if not isinstance(content, list):
        return "", ()
    texts: list[str] = []
    found: list[Span] = []
    offset = 0
    for j, part in enumerate(content):
        if not (isinstance(part, Mapping) and isinstance(part.get("text"), str)):
            continue
        if texts:
            offset += 1  # the joining newline
        text = part["text"]
        for s in spans.get((*path, j, "text"), ()):
            found.append(Span(s.start + offset, s.end + offset, s.label, s.detector, s.score,
                              s.stage, s.action))
        texts.append(text)
        offset += len(text)
    return "\n".join(texts), tuple(found)
