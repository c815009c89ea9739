"""Fixtures of the drift end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.servers import LoopThread


@pytest.fixture
def own_upstream(loop_thread: LoopThread) -> Iterator[Any]:
    """A demo upstream of this test's own: its behaviour is changed mid-test."""
    from sidecar.demo.upstream import start_demo_upstream

    demo = loop_thread.run(start_demo_upstream(host="127.0.0.1", port=0))
    yield demo
    loop_thread.run(demo.close())
