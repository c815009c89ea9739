"""The emit stage's cost on the event loop, and the masking it moved to the intake's worker.

For 2 KB, 32 KB and 3 MB prompts of IP addresses and e-mails (the issue's attack) with
``privacy.capture: masked`` and the pattern PII and secrets detectors, it prints:

- ``emit on loop``: what :meth:`Emitter.emit` costs the event loop now (build the
  record, queue it with its finisher);
- ``worker``: the finisher in the intake's worker (cut to ``max_text_chars``, then
  mask), for text the guard did not check and for text it did (findings reused);
- ``before``: what the emit stage did on the event loop before this change (detect and
  mask the whole text, then cut).

Run: ``.venv/bin/python bench/bench_emit.py``
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from detectors.pii.detector import PiiDetector
from detectors.secrets import SecretsDetector
from sidecar.context import RequestContext
from sidecar.masking import Masker
from sidecar.pipeline.emit import Emitter
from sidecar.privacy import CheckedText, PrivacyDetectors, StoragePrivacy
from sidecar.record import TraceRecord
from sidecar.settings import PrivacySettings


class _Sink:
    def __init__(self) -> None:
        self.last: tuple[TraceRecord, Callable[[TraceRecord], TraceRecord] | None] | None = None

    def submit(self, record: TraceRecord,
               finish: Callable[[TraceRecord], TraceRecord] | None = None) -> None:
        self.last = (record, finish)


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1000


def main() -> None:
    pii, secrets = PiiDetector(name="pii"), SecretsDetector(name="secrets")
    asyncio.run(pii.start())
    asyncio.run(secrets.start())
    detectors = PrivacyDetectors({"pii": pii, "secrets": secrets})
    privacy = StoragePrivacy(PrivacySettings(), detectors, b"k" * 32)
    sink = _Sink()
    emitter = Emitter(sink, privacy)
    unit = "host 10.0.0.1 mail jane.doe@example.com ok. "
    print(f"{'prompt':>8} {'emit on loop ms':>16} {'worker ms':>10} {'worker, checked ms':>19} "
          f"{'before (on loop) ms':>20}")
    for size in (2_048, 32_768, 3_000_000):
        text = (unit * (size // len(unit) + 1))[:size]
        repeat = 3 if size > 100_000 else 20

        def ctx(checked: bool, text: str = text) -> RequestContext:
            c = RequestContext("0" * 32, "1" * 32, "2" * 16, None, "01", "POST",
                               "/v1/chat/completions", "chat", "http://u")
            c.prompt_text = text
            if checked and len(text) <= 32_768:
                c.privacy_checked.append(CheckedText(
                    "input", text, tuple(detectors(text)), detectors.names))
            return c

        loop_ms = _best(lambda: emitter.emit(ctx(False)), repeat)
        assert sink.last is not None and sink.last[1] is not None
        record, finish = sink.last
        worker_ms = _best(lambda: finish(record), repeat)  # noqa: B023
        emitter.emit(ctx(True))
        assert sink.last is not None and sink.last[1] is not None
        record_c, finish_c = sink.last
        checked_ms = _best(lambda: finish_c(record_c), repeat)  # noqa: B023
        before_ms = _best(lambda: Masker().mask(text, detectors(text))[:32_768], 1 if size > 100_000 else repeat)  # noqa: B023
        print(f"{size:>8} {loop_ms:>16.3f} {worker_ms:>10.3f} {checked_ms:>19.3f} "
              f"{before_ms:>20.1f}")


if __name__ == "__main__":
    main()
