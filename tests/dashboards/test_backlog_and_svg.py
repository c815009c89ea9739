"""The hand-off backlog gauges (read from the real ClickHouse store of the traffic run,
failures counted) and the SVG charts (series drawn, text escaped, empty data said)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from sidecar import semconv as sc
from sidecar.dashboard.backlog import BacklogGauges
from sidecar.dashboard.svg import line_chart
from sidecar.handoff.model import ConversationPart
from tests.dashboards.traffic import Traffic


def _exposed(gauges: BacklogGauges) -> str:
    registry = CollectorRegistry()
    registry.register(gauges)
    return generate_latest(registry).decode()


def test_gauges_read_pending_handoffs_from_clickhouse(traffic: Traffic, loop_thread: Any) -> None:
    runtime = traffic.sidecar.runtime
    gauges = BacklogGauges(runtime.feedback_store)
    gauges.refresh()
    before, _ = gauges.values()
    handoff = loop_thread.run(runtime.handoff.create(
        reason="test: backlog", messages=[ConversationPart("user", "help")], route="chat",
        model="m"))
    gauges.refresh()
    open_count, age = gauges.values(now=handoff.created_at + 90)
    assert open_count == before + 1
    assert 89 <= age <= 91 + (time.time() - handoff.created_at)
    text = _exposed(gauges)
    assert f"{sc.METRIC_HANDOFFS_OPEN} {float(open_count)}" in text
    assert sc.METRIC_HANDOFF_OLDEST_AGE in text
    loop_thread.run(runtime.handoff.resolve(handoff.id, "reject", "no", "alice"))
    gauges.refresh()
    assert gauges.values()[0] == before


class _Broken:
    def pending_backlog(self, max_scan: int) -> tuple[int, float | None]:
        raise ConnectionError("down")


def test_a_failed_refresh_keeps_values_and_counts() -> None:
    gauges = BacklogGauges(_Broken())
    gauges.refresh()
    gauges.refresh()
    assert gauges.values() == (0, 0.0)
    assert f"{sc.METRIC_HANDOFF_REFRESH_ERRORS}_total 2.0" in _exposed(gauges)


def test_line_chart_draws_escapes_and_says_no_data() -> None:
    rows = [(1_700_000_000, "<b>chat</b>", 3.0), (1_700_000_060, "<b>chat</b>", 5.0),
            (1_700_000_000, "embeddings", 1.0), (1_700_000_000, "nan", float("nan"))]
    svg = str(line_chart(rows, unit="ms", title="t<script>"))
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1
    assert "<b>" not in svg and "&lt;b&gt;chat&lt;/b&gt; 5 ms" in svg
    assert "<script>" not in svg and "nan" not in svg.split("</text>")[-2]
    empty = str(line_chart([], title="x"))
    assert "no data" in empty and "<polyline" not in empty


def test_memory_backlog_caps_the_count_and_keeps_the_oldest_exact() -> None:
    from sidecar.handoff.store import MemoryHandoffStore

    store = MemoryHandoffStore()
    for i, status in enumerate(["pending", "resolved", "pending", "pending"]):
        store.save_handoff({"id": f"h{i}", "status": status, "created_at": 1000.0 + 10 * i})
    assert store.pending_backlog(10) == (3, 1000.0)
    assert store.pending_backlog(2) == (2, 1000.0)
    assert MemoryHandoffStore().pending_backlog(10) == (0, None)
