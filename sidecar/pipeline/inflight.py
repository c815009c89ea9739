"""How many requests the proxy is serving right now: one counter, shared.

The envelope (:meth:`sidecar.pipeline.proxy.Proxy._guarded`) counts requests in and
out; the guard reads the count to choose how to run queued detectors. (The
``/v1/guardrails/check`` API always queues: concurrent checks only overlap while a
queued detector waits for its batch.) A queued
detector (``run.inline: false``) waits one loop turn so that texts from concurrent
requests form one batch, then runs the batch in a task; with one request in flight
there is nobody to batch with, so the guard runs it directly (no queue, no task, three
loop turns fewer per stage).
"""

from __future__ import annotations


class InFlight:
    """A request counter; used on one event loop (no locking)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    @property
    def alone(self) -> bool:
        """At most one request in flight (the caller's own)."""
        return self.count <= 1
