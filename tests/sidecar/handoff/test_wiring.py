"""The hand-off service is built before the proxy and handed to its constructor: the
completions flow holds the very service the runtime starts and the review routes use."""

from __future__ import annotations

from exporters.memory import MemoryExporter
from sidecar.app import RUNTIME, create_app
from tests.helpers.servers import sidecar_settings

UPSTREAM = "http://127.0.0.1:9"  # never contacted: the app is built, not started


def test_the_completions_flow_gets_the_runtimes_handoff_service() -> None:
    app = create_app(sidecar_settings(UPSTREAM, handoff={"enabled": True}),
                     exporters=[MemoryExporter()])
    runtime = app[RUNTIME]
    flow = runtime.proxy.completions
    assert runtime.handoff is not None and runtime.review_auth is not None
    assert flow.handoff_service is runtime.handoff
    assert flow.handoff is not None


def test_without_handoff_nothing_is_built() -> None:
    app = create_app(sidecar_settings(UPSTREAM), exporters=[MemoryExporter()])
    runtime = app[RUNTIME]
    assert runtime.handoff is None and runtime.review_auth is None
    assert runtime.proxy.completions.handoff_service is None
    assert runtime.proxy.completions.handoff is None
