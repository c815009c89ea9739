"""Shared fixtures: a background event loop, the demo upstream, and sidecar factories."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers.servers import LoopThread, RunningSidecar, sidecar_settings, start_sidecar_async


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture(scope="session")
def demo_upstream(loop_thread: LoopThread) -> Iterator[Any]:
    from sidecar.demo.upstream import start_demo_upstream

    demo = loop_thread.run(start_demo_upstream(host="127.0.0.1", port=0))
    yield demo
    loop_thread.run(demo.close())


@pytest.fixture
def start_sidecar(loop_thread: LoopThread) -> Iterator[Callable[..., RunningSidecar]]:
    """Factory: ``start_sidecar(upstream_url, server={...}, upstream={...})``; stopped after the test."""
    started: list[RunningSidecar] = []

    def factory(upstream_url: str, **sections: dict[str, Any]) -> RunningSidecar:
        settings = sidecar_settings(upstream_url, **sections)
        sc = loop_thread.run(start_sidecar_async(settings))
        started.append(sc)
        return sc

    yield factory
    for sc in started:
        loop_thread.run(sc.runner.cleanup())


@pytest.fixture
def sidecar(start_sidecar: Callable[..., RunningSidecar], demo_upstream: Any) -> RunningSidecar:
    return start_sidecar(demo_upstream.url)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
