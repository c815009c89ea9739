"""Restoring input placeholders inside an SSE completion stream.

When the input guard masked PII, the model answers with placeholders such as
``<EMAIL_ADDRESS_1>``; the client must get the original values back, even when a
placeholder arrives split across deltas (``<EMAIL_`` then ``ADDRESS_1>``). Each
choice keeps a small hold-back: text that could still be the start of a
placeholder is held until the next delta decides it (at most
``MAX_PLACEHOLDER`` characters), and is flushed with the choice's
``finish_reason`` or at the end of the stream.

Only streams whose request was masked pass through here; the others are forwarded
byte for byte. Events are re-serialised, so this costs one JSON parse and dump per
event.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import orjson

from sidecar.sse import SseEvent, SseParser

MAX_PLACEHOLDER = 64
_PARTIAL = re.compile(r"<[A-Z0-9_]*\Z")


class _Restores(Protocol):
    def restore(self, text: str) -> str: ...


def split_safe(text: str) -> tuple[str, str]:
    """(text that can go out now, tail that may be the start of a placeholder)."""
    cut = text.rfind("<", max(0, len(text) - MAX_PLACEHOLDER))
    if cut == -1 or not _PARTIAL.match(text, cut):
        return text, ""
    return text[:cut], text[cut:]


class StreamPlaceholderRestorer:
    """Rewrites an OpenAI SSE stream, restoring placeholders in content deltas."""

    def __init__(self, masker: _Restores) -> None:
        self.masker = masker
        self.parser = SseParser()
        self.held: dict[int, str] = {}
        self.last_doc: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        out = [self._event(e) for e in self.parser.feed(chunk)]
        return b"".join(out)

    def close(self) -> bytes:
        out = [self._event(e) for e in self.parser.close()]
        out.append(self._flush_all())
        return b"".join(out)

    def _release(self, index: int, text: str, final: bool) -> str:
        pending = self.held.pop(index, "") + text
        if final:
            return self.masker.restore(pending)
        ready, tail = split_safe(pending)
        if tail:
            self.held[index] = tail
        return self.masker.restore(ready) if ready else ""

    def _flush_all(self) -> bytes:
        if not self.held or self.last_doc is None:
            return b""
        doc = self.last_doc
        choices = []
        for index in sorted(self.held):
            text = self.masker.restore(self.held.pop(index))
            key = "delta" if "delta" in _first_choice(doc) else "text"
            choice: dict[str, Any] = {"index": index, "finish_reason": None}
            choice[key] = {"content": text} if key == "delta" else text
            choices.append(choice)
        event = {k: doc[k] for k in ("id", "object", "created", "model") if k in doc}
        event["choices"] = choices
        return b"data: " + orjson.dumps(event) + b"\n\n"

    def _event(self, event: SseEvent) -> bytes:
        data = event.data
        if data == b"[DONE]":
            return self._flush_all() + _encode(event)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return _encode(event)
        if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
            return _encode(event)
        self.last_doc = doc
        for choice in doc["choices"]:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            final = bool(choice.get("finish_reason"))
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) or (final and index in self.held):
                    delta["content"] = self._release(index, content or "", final)
            elif isinstance(choice.get("text"), str) or (final and index in self.held):
                choice["text"] = self._release(index, choice.get("text") or "", final)
        return b"data: " + orjson.dumps(doc) + b"\n\n"


def _first_choice(doc: dict[str, Any]) -> dict[str, Any]:
    choices = doc.get("choices") or [{}]
    first = choices[0]
    return first if isinstance(first, dict) else {}


def _encode(event: SseEvent) -> bytes:
    lines = []
    if event.event is not None:
        lines.append(b"event: " + event.event.encode())
    if event.id is not None:
        lines.append(b"id: " + event.id.encode())
    lines.extend(b"data: " + line for line in event.data.split(b"\n"))
    return b"\n".join(lines) + b"\n\n"
