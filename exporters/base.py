"""The exporter contract (after OpenTelemetry's ``SpanExporter``).

An exporter receives finished :class:`~sidecar.record.TraceRecord` values in
batches, from a background worker thread (see :mod:`exporters.batch`), never on
the request path.

- ``export(batch)`` delivers one batch and returns an :class:`ExportResult`. It
  may block (it runs in the worker thread) but must not raise: a failure is
  reported as ``ExportResult.FAILURE`` and counted by the exporter.
- ``force_flush(timeout_s)`` pushes out anything the exporter buffers itself;
  returns ``True`` when everything was delivered within the timeout.
- ``shutdown(timeout_s)`` flushes and releases resources; it is called once and
  must not raise.
- ``start()`` (optional) opens connections at application start-up.
- ``state()`` reports a small JSON-able dict for ``/readyz``.

Optional capabilities are protocols, not attribute names probed at run time:

- :class:`PrefersBatches`: the exporter names the batch size and delay it works
  best with (ClickHouse wants thousands of rows a second apart); the batch
  processor uses them instead of its defaults, so the exporter keeps no queue of
  its own.
- :class:`DurableExporter`: ``export`` returns only once the batch is stored or
  written to local disk (``ExportResult.FAILURE`` means the records are lost);
  the pipeline keeps a crash journal (:mod:`exporters.journal`) for such exporters.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from sidecar.record import TraceRecord


class ExportResult(enum.Enum):
    SUCCESS = "success"  # delivered (or durably spilled, to be delivered later)
    FAILURE = "failure"  # not delivered and not kept: the records are lost (dropped)


@runtime_checkable
class Exporter(Protocol):
    name: str

    def export(self, batch: Sequence[TraceRecord]) -> ExportResult: ...

    def force_flush(self, timeout_s: float = 10.0) -> bool: ...

    def shutdown(self, timeout_s: float = 10.0) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchPreference:
    """How an exporter wants to be fed: at most ``max_batch`` records per ``export``
    call, at least every ``schedule_delay_s`` seconds while records wait."""

    max_batch: int
    schedule_delay_s: float


@runtime_checkable
class PrefersBatches(Protocol):
    def batch_preference(self) -> BatchPreference: ...


@runtime_checkable
class DurableExporter(Protocol):
    """``export`` returns once the batch is stored or on local disk (see module doc)."""

    durable: Literal[True]


@runtime_checkable
class DeclaresText(Protocol):
    """Says whether ``export`` reads the records' ``prompt_text`` / ``output_text``.

    Under ``privacy.capture: masked`` the intake masks stored text (PII detectors, off
    the event loop) only when some exporter reads it; one that does not declare this is
    taken to read it."""

    reads_text: bool


def reads_text(exporter: Exporter) -> bool:
    """Does ``exporter`` read record text (see :class:`DeclaresText`)? True unless it
    says otherwise."""
    return bool(exporter.reads_text) if isinstance(exporter, DeclaresText) else True


@runtime_checkable
class StartableExporter(Protocol):
    """Opens its backend in ``start()`` (blocking; a coroutine result is awaited)."""

    def start(self) -> object: ...


@runtime_checkable
class ReportsState(Protocol):
    def state(self) -> dict[str, Any]: ...


def exporter_state(exporter: Exporter) -> dict[str, Any]:
    """The exporter's own ``state()`` if it has one, else a minimal dict."""
    if isinstance(exporter, ReportsState):
        result = exporter.state()
        if isinstance(result, dict):
            return result
    return {"name": exporter.name}
