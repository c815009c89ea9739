"""JSON-lines exporter: one JSON object per finished request, to stdout or a file.

``path`` of ``"-"`` (the default) writes to standard output; any other value is a
file opened for appending. Text fields are written exactly as the record holds
them: the privacy setting decides what the record holds.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from exporters.base import ExportResult
from sidecar.record import TraceRecord

logger = logging.getLogger(__name__)


class JsonLinesExporter:
    """Writes each record as one line of JSON; ``fsync`` on flush when writing a file."""

    name = "jsonl"

    def __init__(self, path: str = "-") -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stream: IO[bytes] | None = None
        self.failed_batches = 0
        self.written = 0

    @classmethod
    def from_options(cls, options: dict[str, Any], *, data_dir: Path) -> JsonLinesExporter:
        """Build from settings; ``{data_dir}`` in ``path`` expands to the data directory."""
        unknown = set(options) - {"path"}
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}; known: ['path']")
        path = str(options.get("path", "-"))
        return cls(path.replace("{data_dir}", str(data_dir)))

    def _open(self) -> IO[bytes]:
        if self._stream is None:
            if self.path == "-":
                self._stream = sys.stdout.buffer
            else:
                directory = os.path.dirname(os.path.abspath(self.path))
                os.makedirs(directory, exist_ok=True)
                # 0600: the file may hold prompt text
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._stream = os.fdopen(fd, "ab")
        return self._stream

    def export(self, batch: Sequence[TraceRecord]) -> ExportResult:
        try:
            payload = b"".join(
                orjson.dumps(r.as_dict(), option=orjson.OPT_APPEND_NEWLINE) for r in batch
            )
            with self._lock:
                stream = self._open()
                stream.write(payload)
                stream.flush()
            self.written += len(batch)
            return ExportResult.SUCCESS
        except (OSError, TypeError, ValueError) as exc:
            self.failed_batches += 1
            logger.error("jsonl exporter could not write a batch: %s", type(exc).__name__)
            return ExportResult.FAILURE

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        with self._lock:
            if self._stream is None:
                return True
            try:
                self._stream.flush()
                if self.path != "-":
                    os.fsync(self._stream.fileno())
            except OSError:
                return False
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        self.force_flush(timeout_s)
        with self._lock:
            if self._stream is not None and self.path != "-":
                self._stream.close()
            self._stream = None

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "written": self.written,
                "failed_batches": self.failed_batches}
