"""The stream guard's outbox: held events, released in order once their text is cleared.

Events of one choice go out in upstream order; an event outside any choice
(comment, error, usage, unknown) goes out only after everything before it. An event
goes out whole, once all of its text is cleared: upstream chunks are never re-cut
(a hold-back that ends inside a chunk holds the whole chunk). An event whose text is
not changed goes out byte for byte; one whose text changed (an output mask got its
placeholder, an input placeholder was restored, a placeholder split across chunks
moved to the chunk that completes it) is re-serialised with the new text, still one
event. Synthetic chunks (``id``/``object``/``created``/``model``/
``system_fingerprint`` copied) are only written for restorer tails at the end and
for a cut.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sidecar.masking import Masker, PlaceholderPrefixes
from sidecar.sse import DONE, encode
from sidecar.pipeline._stream_state import Choice, Item
from sidecar.pipeline._stream_text import PlaceholderRestorer, apply_edits, whole_span

__all__ = ["META_KEYS", "Outbox"]

META_KEYS = ("id", "object", "created", "model", "system_fingerprint")


class Outbox:
    """Held items and the bytes released so far (``out``, taken by the guard).

    ``open`` is false until something may go out at all (the first window passed).
    ``tokens`` counts the released events that carry output (content or tool calls),
    so the caller can time tokens where the client sees them.
    """

    __slots__ = ("choices", "early", "hold_ends", "masker", "meta", "open", "out", "prefixes",
                 "queue", "restore", "tokens")

    def __init__(
        self,
        choices: dict[int, Choice],
        *,
        masker: Masker | None,
        restore: Callable[[str], str] | None,
        prefixes: PlaceholderPrefixes,
        open_: bool,
    ) -> None:
        self.choices = choices
        self.masker = masker
        self.restore = restore
        self.prefixes = prefixes
        self.open = open_
        self.queue: list[Item] = []
        self.out: list[bytes] = []
        self.meta: dict[str, Any] = {}
        self.tokens = 0
        self.hold_ends = False  # a whole-answer verdict failed: what ends a choice stays
        self.early = False  # headers went early: text-free leading events go out at once

    def take(self) -> bytes:
        data = b"".join(self.out) if len(self.out) != 1 else self.out[0]
        self.out.clear()
        return data

    # --- holding and releasing ----------------------------------------------------------

    def add_global(self, raw: bytes) -> None:
        if not self.queue and self.open:
            self.out.append(raw)
        else:
            self.queue.append(Item(-1, raw))

    def add(self, ch: Choice, item: Item) -> None:
        ready = self.open or (self.early and item.end == 0 and not (item.finish or item.tools))
        if not self.queue and ready and item.end <= ch.cleared:
            data = self._emit(ch, item, item.end)
            if data:
                self.out.append(data)
        else:
            self.queue.append(item)

    def drain(self) -> None:
        """Release every held item whose text is cleared, in order."""
        if not self.open or not self.queue:
            return
        out = self.out
        keep: list[Item] = []
        blocked: set[int] = set()
        queue = self.queue
        for i, item in enumerate(queue):
            lane = item.lane
            if lane < 0:
                if keep:  # waits for everything before it, and everything after waits
                    keep.extend(queue[i:])
                    break
                out.append(item.raw)  # type: ignore[arg-type]
                continue
            if lane in blocked:
                keep.append(item)
                continue
            ch = self.choices[lane]
            if item.end <= ch.cleared and not (item.finish and self.hold_ends):
                data = self._emit(ch, item, item.end)
                if data:
                    out.append(data)
                continue
            keep.append(item)  # partly cleared: waits whole (never re-cut)
            blocked.add(lane)
            if len(blocked) == len(self.choices):
                keep.extend(queue[i + 1 :])
                break
        self.queue = keep

    def _emit(self, ch: Choice, item: Item, upto: int) -> bytes:
        """The bytes for ``item``'s text up to ``upto`` (all of it when ``upto == end``)."""
        text: str | None = None
        if item.end > item.start:
            s = item.start
            text = item.text[s - item.origin : upto - item.origin]
            if ch.edits:
                self._placeholders(ch, upto)
                text = apply_edits(text, s, ch.edits)
                ch.past_edits.extend((e.start, e.end) for e in ch.edits if e.end <= upto)
                ch.edits = [e for e in ch.edits if e.end > upto]
            if self.restore is not None:
                text = self._restorer(ch).feed(text)
            ch.released = upto
            item.start = upto
            self.tokens += 1
            if upto < item.end:
                item.raw = None
                return encode(self.content_chunk(ch, item.doc, text)) if text else b""
        prefix = b""
        if item.finish:
            ch.closed = True
            if self.restore is not None:
                tail = self._restorer(ch).flush()
                if tail:
                    text = (text or "") + tail
                prefix = self._flush_tools(ch, item.doc)
        if item.tools:
            self.tokens += 1
            if self.restore is not None and self._restore_tools(ch, item):
                item.raw = None
        if item.raw is not None and (text is None or text == item.text):
            return prefix + item.raw
        choice = item.choice
        if text is not None and choice is not None:
            if ch.chat:
                choice["delta"]["content"] = text
            else:
                choice["text"] = text
        return prefix + encode(item.doc)

    def _placeholders(self, ch: Choice, upto: int) -> None:
        """Issue the placeholders of the masks that start before ``upto``."""
        for edit in ch.edits:
            if edit.start >= upto:
                break
            if not edit.placeholder:
                if self.masker is None:
                    self.masker = Masker()
                span = whole_span(edit.span, len(edit.value))
                edit.placeholder = self.masker.mask(edit.value, [span])

    def content_chunk(self, ch: Choice, doc: dict[str, Any] | None, text: str) -> dict[str, Any]:
        out = {k: v for k, v in (doc or self.meta).items() if k in META_KEYS}
        choice: dict[str, Any] = {"index": ch.index}
        if ch.chat:
            choice["delta"] = {"content": text}
        else:
            choice["text"] = text
        choice["logprobs"] = None
        choice["finish_reason"] = None
        out["choices"] = [choice]
        return out

    # --- input placeholders ---------------------------------------------------------------

    def _restorer(self, ch: Choice) -> PlaceholderRestorer:
        if ch.restorer is None:
            ch.restorer = PlaceholderRestorer(self.restore, self.prefixes)  # type: ignore[arg-type]
        return ch.restorer

    def _restore_tools(self, ch: Choice, item: Item) -> bool:
        changed = False
        for call in item.choice["delta"]["tool_calls"]:  # type: ignore[index]
            fn = call.get("function") if type(call) is dict else None
            args = fn.get("arguments") if type(fn) is dict else None
            if type(args) is str and args:
                k = call.get("index", 0)
                r = ch.tool_restorers.get(k)
                if r is None:
                    r = PlaceholderRestorer(self.restore, self.prefixes)  # type: ignore[arg-type]
                    ch.tool_restorers[k] = r
                restored = r.feed(args)
                if restored is not args:
                    fn["arguments"] = restored  # type: ignore[index]
                    changed = True
        return changed

    def _flush_tools(self, ch: Choice, doc: dict[str, Any] | None) -> bytes:
        calls = []
        for k, r in sorted(ch.tool_restorers.items()):
            tail = r.flush()
            if tail:
                calls.append({"index": k, "function": {"arguments": tail}})
        if not calls:
            return b""
        chunk = self.content_chunk(ch, doc, "")
        chunk["choices"][0]["delta"] = {"tool_calls": calls}
        return encode(chunk)

    # --- endings --------------------------------------------------------------------------

    def finish(self, *, send_done: bool) -> None:
        """Everything was checked: release all, restorer tails of unfinished choices,
        then ``[DONE]``."""
        self.open = True
        self.drain()
        if self.restore is not None:
            for ch in self.choices.values():
                if ch.closed:
                    continue
                tail = ch.restorer.flush() if ch.restorer is not None else ""
                if tail:
                    self.out.append(encode(self.content_chunk(ch, None, tail)))
                tools = self._flush_tools(ch, None)
                if tools:
                    self.out.append(tools)
        if send_done:
            self.out.append(DONE)

    def cut(self, action: str, reasons: tuple[str, ...]) -> None:
        """Drop what is held; end each open choice with ``content_filter``, name the
        reasons in a chunk-shaped event, then ``[DONE]``."""
        self.queue = []
        meta = {k: v for k, v in self.meta.items() if k in META_KEYS}
        chat = not self.choices or next(iter(self.choices.values())).chat
        meta.setdefault("object", "chat.completion.chunk" if chat else "text_completion")
        for index in sorted(self.choices):
            ch = self.choices[index]
            if ch.closed:
                continue
            choice: dict[str, Any] = {"index": index}
            if ch.chat:
                choice["delta"] = {}
            else:
                choice["text"] = ""
            choice["logprobs"] = None
            choice["finish_reason"] = "content_filter"
            self.out.append(encode({**meta, "choices": [choice]}))
        event = {"event": "guardrail", "action": action, "stage": "output", "reasons": list(reasons)}
        self.out.append(encode({**meta, "choices": [], "railwatch": event}))
        self.out.append(DONE)
