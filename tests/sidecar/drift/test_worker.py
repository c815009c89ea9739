"""The drift worker as the export pipeline drives it: sampling, the row cap, events."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from exporters.base import ExportResult
from exporters.batch import BatchProcessor
from exporters.clickhouse import migrate
from exporters.clickhouse.drift_store import DriftEvent, DriftStore
from sidecar import semconv as sc
from sidecar.drift.config import DriftSettings
from sidecar.drift.features import features, language, sampled
from sidecar.drift.state import DriftState
from sidecar.drift.worker import DriftExporter
from sidecar.record import FindingRecord, TraceRecord

if TYPE_CHECKING:
    from tests.conftest import Backend


def _record(prompt: str = "user: How do I reset my password?", *, status: int = 200,
            fingerprint: str = "fp1", output: str | None = "Echo: ok",
            route: str = "chat", **attrs: str) -> TraceRecord:
    now = time.time()
    return TraceRecord(
        request_id=uuid.uuid4().hex, trace_id="0" * 32, span_id="0" * 16, parent_span_id=None,
        started_at=now, ended_at=now, method="POST", path="/v1/chat/completions", route=route,
        upstream="http://u", model_requested="m", model_served="m-2024",
        system_fingerprint=fingerprint, finish_reasons=("stop",), status=status,
        prompt_tokens=10, completion_tokens=5, total_ms=3.0, prompt_text=prompt,
        output_text=output, attributes={sc.RAILWATCH_PROMPT_TURNS: "1", **attrs},
        findings=(FindingRecord("input", "pii", "EMAIL", 0.9, 0, 3, "mask"),))


def test_features_of_a_record() -> None:
    f = features(_record("system: be nice\nuser: first\nassistant: hi\nuser: ¿Cómo puedo "
                         "cambiar la contraseña de mi cuenta?", output='{"a": 1'))
    assert f.user_text == "¿Cómo puedo cambiar la contraseña de mi cuenta?"
    assert f.cat["language"] == "es" and f.cat["json"] == "invalid" and f.cat["refusal"] == "no"
    assert f.num["score.input.pii"] == 0.9 and f.num["turns"] == 1.0 and f.model == "m-2024"
    refusal = features(_record(output="I'm sorry, but I can't help with that."))
    assert refusal.cat["refusal"] == "yes" and "json" not in refusal.cat
    blind = features(_record(prompt="", output=None))
    assert "language" not in blind.cat and "output_chars" not in blind.num


def test_language_tags() -> None:
    assert [language(t) for t in ("How do I reset my password?", "Как изменить пароль?",
                                  "パスワードを変更するには？", "12345")] == ["en", "ru", "ja", "none"]


def test_sampling_is_deterministic_and_near_its_rate() -> None:
    ids = [uuid.uuid4().hex for _ in range(4000)]
    share = sum(sampled(i, 0.25) for i in ids) / len(ids)
    assert 0.2 < share < 0.3
    assert all(sampled(i, 0.25) == sampled(i, 0.25) for i in ids[:100])


def test_the_row_cap_bounds_what_is_stored_and_events_see_every_record(
    backend: Backend, database: str,
) -> None:
    migrate(backend.admin, database)
    store = DriftStore.for_client(backend.admin, database)
    state = DriftState()
    worker = DriftExporter(DriftSettings(max_rows_per_s=10), store, state, pod="p",
                           store_text=False)
    worker.start()
    processor = BatchProcessor(worker, max_batch=500)
    try:
        for _ in range(499):
            processor.submit(_record())
        processor.submit(_record(fingerprint="fp2"))  # the last one, past the cap
        processor.submit(_record(status=500, fingerprint="fp3"))  # errors are not changes
        assert processor.force_flush(20)
    finally:
        processor.shutdown(5)
    stored = backend.admin.query(f"SELECT count(), countIf(example IS NULL) "
                                 f"FROM {database}.drift_requests").result_rows[0]
    assert 10 <= stored[0] <= 21 and stored[1] == stored[0]
    assert state.sampled == stored[0] and state.skipped["rate"] == 500 - stored[0]
    assert state.events == {sc.DRIFT_EVENT_FINGERPRINT: 1}
    assert worker.export([]) is ExportResult.SUCCESS


def test_every_drift_event_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    state = DriftState()
    events = [DriftEvent(event_id=str(i), ts=time.time(), kind=kind, model="m", route="chat",
                         upstream="http://u", subject="system_fingerprint", old_value="fp1",
                         new_value="fp2") for i, kind in enumerate(
                             (sc.DRIFT_EVENT_FINGERPRINT, sc.DRIFT_EVENT_FINGERPRINT,
                              sc.DRIFT_EVENT_WINDOW))]
    with caplog.at_level(logging.WARNING, logger="railwatch.drift"):
        state.note_events(events)
    assert state.events == {sc.DRIFT_EVENT_FINGERPRINT: 2, sc.DRIFT_EVENT_WINDOW: 1}
    lines = [r for r in caplog.records if r.getMessage().startswith("drift event ")]
    assert [getattr(r, sc.RAILWATCH_DRIFT_KIND) for r in lines] == [e.kind for e in events]
    assert all(r.levelno == logging.WARNING and "'fp1' -> 'fp2'" in r.getMessage()
               for r in lines)
