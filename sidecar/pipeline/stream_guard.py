"""The stream guard: output checks on an OpenAI SSE completion stream, in windows.

:class:`StreamGuard` sits between the upstream's SSE bytes and the client. It is
pure: no network; its clock is ``perf_counter`` (for ``first_release_at`` and the
hold-back's time bound); the proxy feeds it upstream chunks, writes what it
returns, and calls :meth:`StreamGuard.poll` when :attr:`StreamGuard.deadline` passes. Detection is the
``checker``'s job (the proxy builds it from the runner and the policy); the guard
decides *what* text to check *when*, and what may go out.

Modes (per route):

- ``windowed`` (default): each choice's text is checked in windows. The first
  window is checked as soon as the first content arrives (time to first token);
  later ones when ``window_chars`` of new text (or ``window_tokens`` content
  deltas) arrived, when new text ends a sentence or clause (``boundaries``), or
  when the oldest held event has waited ``max_hold_ms`` while unchecked text
  waits, whichever comes first: text is held about ``max_hold_ms`` plus one
  check at most, beyond the wait for the text that completes a held word.
  Each window starts with up to ``overlap_chars`` of already checked text (at
  least the held-back tail), so an insult or an e-mail split across windows or
  network chunks is seen whole. After a passed window a small tail that may still
  be the start of an entity or a placeholder is held back (at most
  ``max_holdback_chars``; see :func:`~sidecar.pipeline._stream_text.holdback`),
  with the rest of the upstream chunk it ends in (chunks are never re-cut); the
  rest goes out. Released text never changes.
- ``whole_text``: some rules judge the whole answer (JSON validity, schemas). The
  last window of each choice then carries its whole text
  (:attr:`WindowCheck.whole`); what ends the choice (its ``finish_reason`` chunk)
  and ``[DONE]`` wait for that verdict. Text released before can only be cut.
- ``early_headers``: the caller sent the headers before the first window passed;
  events before the first content (the role chunk) then go out at once too.
- ``buffered``: nothing goes out until the stream ended; the whole text is checked
  once, then released (masked where the verdict says so), or reported.
- ``passthrough``: bytes go out as they come (rewritten only to restore input
  placeholders or strip usage); ``close`` checks the whole text, for the record.

Verdicts: ``pass``/``flag`` release; ``mask`` replaces the spans in the not yet
released text with the request masker's placeholders, then releases. Anything
else stops the stream: before the first byte went out it is reported
(``before_first_byte``: the caller may retry, fall back, hand off or send an
error; nothing is sent, not even headers, because the caller prepares its
response on the first bytes returned); after, the stream is *cut*: a final chunk
per open choice with ``finish_reason: "content_filter"``, a chunk-shaped event
``{"choices": [], "railwatch": {"event": "guardrail", ...}}`` naming the reasons,
then ``[DONE]``. The violating window's text never goes out.

Order and bytes of what goes out: see :mod:`sidecar.pipeline._stream_release`.

Checks run one round at a time (every window due, of every choice, gathered so the
runner can batch them) in a background task while more chunks arrive. The first
round, the rounds at the end, and rounds while more than ``max_pending_chars``
wait unchecked are awaited inline (backpressure). Text a background round clears
goes out with the next ``feed``; a caller that wants it the moment the check
finishes races :attr:`StreamGuard.in_flight` with its read and calls
:meth:`StreamGuard.poll`.

``feed``/``close``/``poll`` raise only what the checker raises (the guard then
stops). Not safe for concurrent calls: one stream, one task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal


from sidecar import jsonio

from sidecar.masking import Masker, PlaceholderPrefixes
from sidecar.pipeline._stream_release import META_KEYS, Outbox
from sidecar.pipeline._stream_sse import RawEvent, RawSplitter, drop_usage_null
from sidecar.sse import encode
from sidecar.pipeline._stream_state import Choice, Item
from sidecar.pipeline._stream_windows import (
    CONTINUE,
    Planned,
    WindowCheck,
    Windows,
    WindowVerdict,
)
from sidecar.policy import SEVERITY

__all__ = ["Checker", "StreamGuard", "StreamStep", "WindowCheck", "WindowVerdict"]

Mode = Literal["passthrough", "windowed", "buffered"]
Checker = Callable[[WindowCheck], Awaitable[WindowVerdict]]


@dataclass(frozen=True, slots=True)
class StreamStep:
    """What to do after a feed/close/poll: send ``data`` (may be empty). ``verdict`` is
    set when the stream stopped in this step: ``before_first_byte`` (nothing was
    sent; the caller acts) or ``cut`` (``data`` ends with the cut events and
    ``[DONE]``). In passthrough mode ``close`` sets it, for the record, to the most
    severe non-pass verdict."""

    data: bytes = b""
    verdict: WindowVerdict | None = None
    before_first_byte: bool = False
    cut: bool = False


_EMPTY = StreamStep()


class StreamGuard:
    """Checks one SSE completion stream; see the module docstring.

    Sizes are in characters (``window_tokens``: content deltas). ``masker`` is the
    request's masker: output masks get its placeholders; with ``restore_input`` the
    placeholders it issued *so far* (input masking) are restored in what goes out,
    even split across deltas, in content and tool-call arguments; output masks
    issued later are not. So construct it after input masking.
    """

    def __init__(
        self,
        *,
        checker: Checker,
        mode: Mode = "windowed",
        window_chars: int = 256,
        window_tokens: int | None = None,
        overlap_chars: int = 64,
        max_holdback_chars: int = 64,
        max_pending_chars: int = 8192,
        max_hold_ms: float | None = 150.0,
        boundaries: bool = True,
        whole_text: bool = False,
        early_headers: bool = False,
        masker: Masker | None = None,
        restore_input: bool = False,
        strip_usage: bool = False,
        observe: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if mode not in ("passthrough", "windowed", "buffered"):
            raise ValueError(f"unknown stream guard mode {mode!r}")
        if window_chars < 1 or (window_tokens is not None and window_tokens < 1):
            raise ValueError("window sizes must be at least 1")
        self._checker = checker
        self._observe = observe  # sees each parsed event as the upstream sent it
        self._windowed = mode == "windowed"
        self._passthrough = mode == "passthrough"
        self._max_pending = max(max_pending_chars, window_chars)
        self._windows = Windows(
            window=window_chars, tokens=window_tokens, overlap=max(0, overlap_chars),
            cap=max(0, max_holdback_chars), max_pending=self._max_pending,
            buffered=mode == "buffered", boundaries=boundaries, whole=whole_text,
        )
        # Seconds the oldest unchecked text may wait for a check (None: no time bound).
        self._hold = max_hold_ms / 1000.0 if max_hold_ms is not None and self._windowed else None
        self._tokens = window_tokens is not None
        self._strip = strip_usage
        restore, prefixes = None, PlaceholderPrefixes(())
        if restore_input and masker is not None and len(masker):
            restore, prefixes = masker.snapshot()
        # Passthrough with nothing to rewrite forwards the caller's bytes as they are.
        self._fast = self._passthrough and restore is None and not strip_usage
        self._choices: dict[int, Choice] = {}
        self._box = Outbox(self._choices, masker=masker, restore=restore, prefixes=prefixes,
                           open_=self._passthrough)
        self._box.early = early_headers  # the role chunk need not wait for the first window
        self._split = RawSplitter()
        self._task: asyncio.Future[list[WindowVerdict]] | None = None
        self._plan: list[Planned] = []
        self._due = False  # a window may be due: plan at the next chance
        self._freed = False  # held text became releasable: drain
        self._unchecked = 0
        self._stopped = False
        self._ended = False
        self._recorded = False
        self.done = False  # the upstream sent [DONE]
        self.released_any = False
        self.cut = False
        self.verdicts: list[tuple[WindowCheck, WindowVerdict]] = []
        self.usage: dict[str, Any] | None = None
        self.counted_tokens = 0
        self.first_release_at: float | None = None

    # --- public ---------------------------------------------------------------------

    @property
    def deadline(self) -> float | None:
        """``perf_counter`` time by which the guard wants :meth:`poll` called (the oldest
        unreleased text reaches ``max_hold_ms`` while unchecked text waits), or None;
        None while a check is in flight (race that instead)."""
        if self._task is not None or self._stopped:
            return None
        oldest, hold = self._oldest(), self._hold
        return None if oldest is None or hold is None else oldest + hold

    def _oldest(self) -> float | None:
        """Arrival of the oldest held event, when there is unchecked text to check."""
        if not self._unchecked or self._hold is None:
            return None
        for item in self._box.queue:
            if item.at:
                return item.at
        return None

    @property
    def in_flight(self) -> asyncio.Future[list[WindowVerdict]] | None:
        """The running check round, to race with the upstream read (then :meth:`poll`)."""
        return self._task

    @property
    def unchecked_chars(self) -> int:
        """Characters received but not passed by a check yet; in windowed mode at most
        ``max_pending_chars`` plus one chunk after each ``feed``."""
        return self._unchecked

    @property
    def late_spans(self) -> int:
        """Mask spans that reached into text already sent (only their rest was masked)."""
        return self._windows.late_spans

    @property
    def released_tokens(self) -> int:
        """Events carrying output (content, tool calls) released so far."""
        return self.counted_tokens if self._fast else self._box.tokens

    def delivered(self) -> dict[int, int]:
        """Characters of each choice's upstream text released so far."""
        return {i: ch.released for i, ch in self._choices.items()}

    @property
    def choices(self) -> list[int]:
        return sorted(self._choices)

    def text(self, choice: int = 0) -> str:
        """The choice's whole upstream text so far (placeholders as the model wrote them)."""
        ch = self._choices.get(choice)
        return "".join(ch.parts) if ch is not None else ""

    async def feed(self, chunk: bytes) -> StreamStep:
        """Take an upstream chunk; returns what may go to the client now."""
        if self._stopped or self._ended:
            return _EMPTY
        if self._fast:
            for event in self._split.feed(chunk):
                self._on_event(event)
            return self._sent(chunk) if chunk else _EMPTY
        for event in self._split.feed(chunk):
            self._on_event(event)
            if self.done:
                break  # nothing after [DONE] counts
        if self._unchecked and not self._due and self._overdue():
            self._due = True
        if not self._passthrough and self._has_work():
            stop = await self._progress(final=self.done)
            if stop is not None:
                return stop
        if self.done:
            self._end(send_done=True)
        return self._step()

    async def poll(self) -> StreamStep:
        """Wait for the check round in flight (if any), or start the one the clock made
        due (:attr:`deadline` passed; then awaited too); return what it released."""
        if self._stopped or self._ended:
            return _EMPTY
        if self._task is None:
            if not self._overdue():
                return _EMPTY
            self._due = True
        stop = await self._progress(final=False, wait=True)
        if stop is None and self._task is not None:  # started by this call: wait for it too
            stop = await self._progress(final=False, wait=True)
        return stop if stop is not None else self._step()

    def _overdue(self) -> bool:
        oldest = self._oldest()
        # a millisecond early counts: a timer that fires a hair before the deadline
        # must not leave the caller spinning
        return (oldest is not None and self._hold is not None
                and time.perf_counter() - oldest >= self._hold - 0.001)

    async def close(self, *, broken: bool = False) -> StreamStep:
        """End of the upstream body: check and release what is held, then ``[DONE]``
        unless ``broken`` (the caller then appends its error event) or it went out."""
        if self._stopped:
            return _EMPTY
        if not self._ended and not self.done:
            for event in self._split.close():
                self._on_event(event)
        if self._passthrough:
            if not self._ended:
                self._end(send_done=not broken and not self.done)
            verdict = await self._record_whole()
            step = self._step()
            return StreamStep(step.data, verdict) if verdict is not None else step
        if self._ended:
            return _EMPTY
        stop = await self._progress(final=True)
        if stop is not None:
            return stop
        self._end(send_done=not broken)
        return self._step()

    def abort(self) -> None:
        """Stop: cancel a check in flight; later calls return nothing. Never raises."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved, so asyncio does not log it

    # --- parsing --------------------------------------------------------------------

    def _on_event(self, event: RawEvent) -> None:
        data = event.data
        if data is None:
            self._add_global(event.raw)
            return
        if data == b"[DONE]":
            self.done = True
            return
        try:
            doc, _lenient = jsonio.loads(data)  # NaN/Infinity too: checked, never bypassed
        except ValueError:
            self._add_global(event.raw)
            return
        if self._observe is not None and type(doc) is dict:
            self._observe(doc)  # before any edit below: the trace sees the upstream's text
        choices = doc.get("choices") if type(doc) is dict else None
        if type(choices) is not list:
            self._add_global(event.raw)
            return
        box = self._box
        if not box.meta:
            box.meta = {k: doc[k] for k in META_KEYS if k in doc}
        raw: bytes | None = event.raw
        if "usage" in doc:
            usage = doc["usage"]
            if type(usage) is dict:
                self.usage = usage
            if self._strip:
                if not choices:
                    return  # the usage-only chunk the client did not ask for
                del doc["usage"]
                raw = drop_usage_null(event.raw) if usage is None else None
        if not choices:
            self._add_global(event.raw)
        elif len(choices) == 1:
            self._on_choice(choices[0], doc, raw)
        else:
            for choice in choices:  # one item per choice, so each follows its own windows
                self._on_choice(choice, {**doc, "choices": [choice]}, None)

    def _on_choice(self, choice: Any, doc: dict[str, Any], raw: bytes | None) -> None:
        if type(choice) is not dict:
            self._add_global(raw if raw is not None else encode(doc))
            return
        index = choice.get("index", 0)
        if type(index) is not int:
            index = 0
        delta = choice.get("delta")
        chat = type(delta) is dict
        if chat:
            content = delta.get("content")  # type: ignore[union-attr]
            tools = bool(delta.get("tool_calls"))  # type: ignore[union-attr]
        else:
            content = choice.get("text")
            tools = False
        ch = self._choices.get(index)
        if ch is None:
            ch = self._choices[index] = Choice(index, chat)
        finish = bool(choice.get("finish_reason"))
        start = ch.length
        if type(content) is str and content:
            ch.parts.append(content)
            ch.length += len(content)
            self.counted_tokens += 1
            if self._passthrough:
                ch.checked = ch.cleared = ch.length
            else:
                ch.pending.append(content)
                self._unchecked += len(content)
                if self._tokens:
                    ch.deltas.append(ch.length)
                if self._windowed and not self._due and (finish or self._windows.due(ch, content)):
                    self._due = True
        else:
            content = ""
            if tools:
                self.counted_tokens += 1
                if self._windowed and not self._box.open:
                    # tool calls are not checked: nothing to wait for before they go
                    self._box.open = self._freed = True
        if finish:
            ch.finished = True
            self._due = self._due or self._windowed
        if not self._fast:
            at = time.perf_counter() if self._hold is not None else 0.0
            self._box.add(ch, Item(index, raw, doc, choice, start, content, finish, tools, at))

    def _add_global(self, raw: bytes) -> None:
        if not self._fast:
            self._box.add_global(raw)

    # --- checks ---------------------------------------------------------------------

    async def _progress(self, *, final: bool, wait: bool = False) -> StreamStep | None:
        """Apply finished rounds, start due ones; a stop step, or None."""
        applied = False
        try:
            while True:
                task = self._task
                if task is not None:
                    if not (task.done() or wait or final or self._must_wait()):
                        break
                    wait = False
                    verdicts = await task
                    self._task = None
                    applied = True
                    stop = self._apply(verdicts)
                    if stop is not None:
                        return self._stop(stop)
                if not (self._due or final):
                    break
                self._due = False
                self._plan, freed = self._windows.plan(self._choices.values(), final)
                self._freed = self._freed or freed
                if not self._plan:
                    break
                checks = [p.check for p in self._plan]
                if final or self._must_wait():
                    verdicts = await self._run(checks)
                    applied = True
                    stop = self._apply(verdicts)
                    if stop is not None:
                        return self._stop(stop)
                else:
                    self._task = asyncio.ensure_future(self._run(checks))
                    break
        except BaseException:
            self.abort()
            raise
        if applied or self._freed:
            self._freed = False
            self._box.drain()
        return None

    def _has_work(self) -> bool:
        """Is there anything for :meth:`_progress` to do now (saves a coroutine per chunk)?"""
        task = self._task
        if task is not None and not task.done():
            return self.done or self._must_wait()
        return task is not None or self._due or self.done or self._freed

    def _must_wait(self) -> bool:
        return not self._box.open or self._unchecked > self._max_pending

    async def _run(self, checks: Sequence[WindowCheck]) -> list[WindowVerdict]:
        if len(checks) == 1:
            return [await self._checker(checks[0])]
        return list(await asyncio.gather(*(self._checker(c) for c in checks)))

    def _apply(self, verdicts: Sequence[WindowVerdict]) -> WindowVerdict | None:
        """Record a round's verdicts in window order; the first stopping one, if any."""
        plan, self._plan = self._plan, []
        for p, verdict in zip(plan, verdicts, strict=True):
            self.verdicts.append((p.check, verdict))
            if verdict.action not in CONTINUE:
                if verdict.whole_only:  # the text passed; the answer as a whole did not
                    self._unchecked -= p.end - p.choice.checked
                    self._windows.passed(p, WindowVerdict())
                    self._box.hold_ends = True  # its text goes out, its end is cut
                return verdict
            self._unchecked -= p.end - p.choice.checked
            self._windows.passed(p, verdict)
            self._box.open = True
        if self._windows.deferred:
            self._due = True  # text the round left for later
        return None

    async def _record_whole(self) -> WindowVerdict | None:
        """Passthrough: check each choice's whole text once, for the record."""
        if self._recorded:
            return None
        self._recorded = True
        texts = {i: self.text(i) for i in sorted(self._choices)}
        checks = [WindowCheck(i, t, 0, True, t) for i, t in texts.items() if t]
        if not checks:
            return None
        verdicts = await self._run(checks)
        self.verdicts.extend(zip(checks, verdicts, strict=True))
        worst = max(verdicts, key=lambda v: SEVERITY.get(v.action, len(SEVERITY)))
        return worst if worst.action != "pass" else None

    # --- endings --------------------------------------------------------------------

    def _end(self, *, send_done: bool) -> None:
        self._ended = True
        self._box.finish(send_done=send_done)

    def _stop(self, verdict: WindowVerdict) -> StreamStep:
        self.abort()
        box = self._box
        if not self.released_any and not box.out:
            box.queue = []
            return StreamStep(b"", verdict, before_first_byte=True)
        box.drain()  # what passed before the violation
        box.cut(verdict.action, verdict.reasons)
        self.cut = True
        return StreamStep(self._step().data, verdict, cut=True)

    def cut_now(self, verdict: WindowVerdict) -> bytes:
        """The cut events for a stop reported ``before_first_byte`` whose caller had
        already sent the headers (``early_headers``): the stream can only be cut."""
        self._box.cut(verdict.action, verdict.reasons)
        self.cut = True
        return self._box.take()

    def _step(self) -> StreamStep:
        if not self._box.out:
            return _EMPTY
        data = self._box.take()
        return self._sent(data) if data else _EMPTY

    def _sent(self, data: bytes) -> StreamStep:
        if not self.released_any:
            self.released_any = True
            self.first_release_at = time.perf_counter()
        return StreamStep(data)
