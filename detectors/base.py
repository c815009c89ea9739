"""The detector contract: text in, findings out.

A detector turns a batch of texts into findings and nothing else: no thresholds,
no actions, no rewriting (the policy and the masker do those). Everything in the
``detectors`` package builds on the three types here.

Contract of :class:`Detector`:

- ``start()`` loads models or compiles patterns. It is awaited once at application
  start-up, never at import or in ``__init__``. It may raise
  :class:`detectors.errors.DetectorStartError` (bad configuration, missing model).
- ``detect(texts, contexts)`` is batch-first: one list of findings per input text,
  in input order. Offsets are character offsets into that text. It may raise; the
  runner turns an exception or a timeout into the configured ``on_error`` outcome.
  Detectors that do heavy CPU or GPU work set ``blocking = True`` and implement
  ``detect_sync``; the runner then calls it in a worker thread, off the event loop.
- ``close()`` releases resources; it must not raise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

_NO_META: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a detector found in one text.

    ``start``/``end`` are character offsets (``text[start:end]`` is the span); a
    finding about the whole text (toxicity, invalid JSON) spans ``0..len(text)``.
    ``score`` is in ``[0, 1]``. ``label`` uses presidio's entity names for PII
    (``EMAIL_ADDRESS``...) and Detoxify's label names for toxicity.
    ``metadata`` holds detector-specific, text-free details (a JSON path, the
    backend name); never the matched text itself.
    """

    detector: str
    label: str
    score: float
    start: int
    end: int
    metadata: Mapping[str, Any] = field(default_factory=lambda: _NO_META)


@dataclass(frozen=True, slots=True)
class TextContext:
    """What a detector may need to know about a text beyond the text itself.

    ``response_format`` is the request's OpenAI ``response_format`` object;
    ``tools`` the request's ``tools`` list; ``tool_calls`` the answer's tool calls
    (each ``{"name": str, "arguments": str}``). Detectors that do not need them
    ignore them.
    """

    stage: str = "output"  # "input" | "output"
    response_format: Mapping[str, Any] | None = None
    tools: Sequence[Mapping[str, Any]] | None = None
    tool_calls: Sequence[Mapping[str, Any]] | None = None


@runtime_checkable
class Detector(Protocol):
    """Batch-first detector protocol (see module docstring for the contract)."""

    name: str
    blocking: bool

    async def start(self) -> None: ...

    async def detect(
        self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
    ) -> list[list[Finding]]: ...

    async def close(self) -> None: ...


@runtime_checkable
class ChunkableDetector(Protocol):
    """A detector whose findings are local: none spans more than ``max_span_chars``
    characters, none depends on text further than that from it, and no two overlap
    (the detector resolves overlaps, as an e-mail inside a URL). The runner may
    then split a long text into chunks overlapping by ``max_span_chars``, call
    ``detect_sync`` on each (in a worker thread) and shift the offsets back, so a huge
    text can be abandoned between chunks when its time is up."""

    max_span_chars: int

    def detect_sync(
        self, texts: Sequence[str], contexts: Sequence[TextContext] | None = None
    ) -> list[list[Finding]]: ...
