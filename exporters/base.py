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
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from sidecar.record import TraceRecord


class ExportResult(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"


@runtime_checkable
class Exporter(Protocol):
    name: str

    def export(self, batch: Sequence[TraceRecord]) -> ExportResult: ...

    def force_flush(self, timeout_s: float = 10.0) -> bool: ...

    def shutdown(self, timeout_s: float = 10.0) -> None: ...


def exporter_state(exporter: Any) -> dict[str, Any]:
    """The exporter's own ``state()`` if it has one, else a minimal dict."""
    state = getattr(exporter, "state", None)
    if callable(state):
        result = state()
        if isinstance(result, dict):
            return result
    return {"name": getattr(exporter, "name", type(exporter).__name__)}
