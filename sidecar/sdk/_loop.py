"""The SDK's own event loop, on one daemon thread, shared by every caller in the process.

Detectors and exporters are asyncio components bound to the loop that started them
(the runner micro-batches across callers). Sync callers run their guarded calls
here; async callers on other loops hop here for each check and back
(:func:`call`), so one set of detectors serves every thread and every loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "railwatch-sdk") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` here and wait (from another thread). Raises what it raises."""
        if self.in_loop():
            coro.close()
            raise RuntimeError("LoopThread.run() called from its own loop")
        return self.submit(coro).result(timeout_s)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on this loop from any loop (directly when already here)."""
        if self.in_loop():
            return await coro
        future: Awaitable[T] = asyncio.wrap_future(self.submit(coro))
        return await future

    def in_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()
