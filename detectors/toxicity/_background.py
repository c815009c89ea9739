"""Fetch Detoxify in a background thread and hand the loaded scorer over when ready.

Start-up never waits on the network: the detector starts on its offline backend, this
thread fetches (:func:`.fetch.fetch_detoxify`, bounded by its time limits) and loads the
model, then calls ``on_ready(scorer)``; the detector swaps its scorer (one reference
assignment, so calls in flight finish on the old one). A failure calls
``on_failed(code, message)`` once and the offline backend stays. ``state()`` is text-free
for ``/readyz``; ``stop()`` asks the download to stop between chunks and never raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from detectors.errors import DetectorError
from detectors.toxicity.fetch import FetchError, FetchPlan, fetch_detoxify
from detectors.toxicity.folder import read_model_folder

log = logging.getLogger(__name__)


class BackgroundFetch:
    """One fetch-and-load attempt on a daemon thread (see the module docstring)."""

    def __init__(
        self,
        plan: FetchPlan,
        load: Callable[[Any], Any],
        on_ready: Callable[[Any], None],
        on_failed: Callable[[str, str], None],
    ) -> None:
        self._plan = plan
        self._load = load
        self._on_ready = on_ready
        self._on_failed = on_failed
        self._stop = threading.Event()
        self._state: dict[str, Any] = {"state": "pending", "checkpoint": plan.checkpoint}
        self._thread = threading.Thread(
            target=self._run, name="railwatch-toxicity-fetch", daemon=True
        )

    def start(self) -> None:
        self._state["state"] = "fetching"
        self._thread.start()

    def state(self) -> dict[str, Any]:
        return dict(self._state)

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            folder = read_model_folder(fetch_detoxify(self._plan, stop=self._stop))
            scorer = self._load(folder)
        except FetchError as exc:
            self._fail(exc.code, str(exc), t0)
            return
        except DetectorError as exc:  # the fetched folder does not load
            self._fail("load", str(exc), t0)
            return
        except Exception as exc:  # noqa: BLE001 - a thread must not die silently
            self._fail("crashed", f"{type(exc).__name__}: {exc}", t0)
            return
        if self._stop.is_set():
            scorer.close()
            self._state.update(state="stopped")
            return
        self._state.update(state="ready", seconds=round(time.monotonic() - t0, 1))
        self._on_ready(scorer)

    def _fail(self, code: str, message: str, t0: float) -> None:
        self._state.update(state="failed", error=code, seconds=round(time.monotonic() - t0, 1))
        if code == "stopped":
            self._state["state"] = "stopped"
            return
        self._on_failed(code, message)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout_s``. Blocks; never raises."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
