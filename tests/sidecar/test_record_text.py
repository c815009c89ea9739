"""Records carry text only when some exporter reads it; masking runs only for those."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from exporters.base import reads_text
from exporters.batch import BatchProcessor, ExportPipeline
from exporters.memory import MemoryExporter
from exporters.otel.exporter import OtelExporter
from exporters.prometheus.exporter import PrometheusExporter
from sidecar.app import build_guard, build_records
from sidecar.context import RequestContext
from sidecar.policy import load_policy
from sidecar.settings import load_settings

PROMPT = "mail me at jane.doe@example.com please"


def _ctx() -> RequestContext:
    ctx = RequestContext(request_id="1" * 32, trace_id="2" * 32, span_id="3" * 16,
                         parent_span_id=None, trace_flags="01", method="POST",
                         path="/v1/chat/completions", route="chat", upstream="u")
    ctx.prompt_text = PROMPT
    ctx.user = "alice"
    return ctx


def test_which_exporters_read_text() -> None:
    assert reads_text(MemoryExporter())
    assert not reads_text(PrometheusExporter(process_metrics=False))
    assert not reads_text(OtelExporter(capture_content=False))
    assert reads_text(OtelExporter(capture_content=True))


@pytest.mark.parametrize(("capture", "readers", "stored"), [
    ("masked", "memory", "mail me at <EMAIL_ADDRESS_1> please"),
    ("masked", "prometheus", None),
    ("raw", "memory", PROMPT),
    ("raw", "prometheus", None),
])
def test_stored_text_follows_the_exporters_that_read_it(
    tmp_path: Path, capture: str, readers: str, stored: str | None
) -> None:
    """The records reach every processor; with only text-free readers they carry no
    text (and the identifiers are still pseudonymised under ``masked``)."""
    settings = load_settings(overrides={"data_dir": str(tmp_path),
                                        "privacy": {"capture": capture}})
    guard = build_guard(load_policy(settings.guardrails.policy))
    asyncio.run(guard.runner.start())
    sink = MemoryExporter()
    exports = ExportPipeline([BatchProcessor(sink, max_batch=8, schedule_delay_s=0.01)])
    declared = [sink] if readers == "memory" else [PrometheusExporter(process_metrics=False)]
    intake, _, emitter = build_records(settings, guard, exports, declared)
    intake.start()
    try:
        emitter.emit(_ctx())
        intake.force_flush()
        (record,) = sink.records
    finally:
        intake.shutdown()
        asyncio.run(guard.runner.close())
    assert record.prompt_text == stored
    assert (record.user == "alice") == (capture == "raw")
