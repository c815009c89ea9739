"""Which output rules a stream checks per window, and which on the whole answer.

A detector that judges a whole answer (the format detector: JSON validity, the
request's schema) sets the class attribute ``whole_text = True``. On a stream its
rules run once, on each choice's whole text, before the choice's end goes out;
every other rule runs on windows (see :mod:`sidecar.pipeline.stream_guard`).
Judging ``{`` as an answer was how a valid streamed JSON answer came to be
retried and blocked.
"""

from __future__ import annotations

from sidecar.pipeline.guard import Guard
from sidecar.policy import Route

__all__ = ["StreamRules"]


class StreamRules:
    """Splits routes' output rules, once per route object (a reloaded policy's routes
    are new objects and are split again). Never raises."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[int, tuple[Route, Route, Route | None]] = {}

    def split(self, route: Route, guard: Guard) -> tuple[Route, Route | None]:
        """(the route with its window rules, the route with its whole-answer rules or
        None when it has none). Without whole-answer rules the first is ``route``."""
        cached = self._cache.get(id(route))
        if cached is not None and cached[0] is route:
            return cached[1], cached[2]
        whole_names = {
            name for name in route.detectors("output")
            if getattr(guard.detectors.get(name), "whole_text", False) is True
        }
        windows: Route = route
        whole: Route | None = None
        if whole_names:
            windows = route.model_copy(
                update={"output": [r for r in route.output if r.detector not in whole_names]}
            )
            whole = route.model_copy(
                update={"output": [r for r in route.output if r.detector in whole_names]}
            )
        if len(self._cache) >= 256:  # bounded: routes come from policy files
            self._cache.clear()
        self._cache[id(route)] = (route, windows, whole)
        return windows, whole
