"""Drift end to end: synthetic traffic through the real sidecar and demo upstream, rows in
the real ClickHouse engine, window statistics and events as an operator would see them.

Stated detection delay: each shift is found in the first window that holds it (one
window of 120 sampled requests); unshifted windows raise no alarm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter
from exporters.clickhouse.drift_store import DriftStore
from sidecar import semconv as sc
from sidecar.drift.analysis import Windows
from sidecar.drift.service import run_job
from tests.helpers.servers import LoopThread, RunningSidecar
from tests.sidecar.drift._support import behave, flush, metrics_text, traffic
from tests.sidecar.drift.synth import SUPPORT, prompts

if TYPE_CHECKING:
    from tests.conftest import Backend

N = 120  # requests per window


@pytest.fixture
def drift_sidecar(backend: Backend, database: str, tmp_path: Any, start_sidecar: Any,
                  own_upstream: Any) -> RunningSidecar:
    ch = ClickHouseExporter(ClickHouseConfig(
        dsn=backend.dsn, database=database, data_dir=tmp_path, spill_dir=tmp_path / "spill",
        insert_max_rows=200, insert_max_age_s=0.05, ttl_text_days=None))
    sidecar: RunningSidecar = start_sidecar(
        own_upstream.url, exporters=[ch],
        drift={"min_window_size": 100, "run_in_sidecar": False, "pod": "pod-test",
               "max_rows_per_s": 1e6})
    return sidecar


def _store(backend: Backend, database: str) -> DriftStore:
    return DriftStore.for_client(backend.admin, database)


def _run(sidecar: RunningSidecar, store: DriftStore, ref: tuple[float, float],
         cur: tuple[float, float]) -> list[Any]:
    return run_job(store, sidecar.runtime.settings.drift, sidecar.runtime.drift.state,
                   pod="test", store_text=True, windows=Windows(ref, cur))


# Timings are real measurements of a shared test machine: load moves them between
# windows (that is drift, and reported), so the "no alarm" checks leave them out.
SCALARS_NOT_TIMING = ("latency_ms", "upstream_ms", "ttft_ms", "tpot_ms")


def test_longer_answers_and_a_new_fingerprint_are_detected(
    backend: Backend, database: str, drift_sidecar: RunningSidecar, own_upstream: Any,
    loop_thread: LoopThread,
) -> None:
    sc_ = drift_sidecar
    ref = traffic(sc_, prompts(SUPPORT, N, seed=1))
    same = traffic(sc_, prompts(SUPPORT, N, seed=2))
    behave(loop_thread, own_upstream, pad_words=30)
    longer = traffic(sc_, prompts(SUPPORT, N, seed=3))
    behave(loop_thread, own_upstream, pad_words=0, system_fingerprint="fp_new_build")
    traffic(sc_, prompts(SUPPORT, 3, seed=4))
    traffic(sc_, prompts(SUPPORT, 3, seed=5), system="You are a pirate. Answer in rhymes.")
    flush(sc_)
    store = _store(backend, database)

    quiet = _run(sc_, store, ref, same)
    assert quiet, "no window was tested"
    metrics = {r.metric for r in quiet}
    assert {"prompt_tokens", "completion_tokens", "output_chars", "language", "refusal"} <= metrics
    assert [r.metric for r in quiet if r.drifted and r.metric not in SCALARS_NOT_TIMING] == []

    shifted = _run(sc_, store, same, longer)
    moved = {r.metric for r in shifted if r.drifted}
    assert {"completion_tokens", "output_chars"} <= moved
    assert "prompt_tokens" not in moved
    explained = next(r for r in shifted if r.metric == "completion_tokens")
    assert "median" in explained.explanation

    events = {(e["kind"], e["new_value"]) for e in store.events(ref[0] - 1)}
    assert (sc.DRIFT_EVENT_FINGERPRINT, "fp_new_build") in events
    assert any(kind == sc.DRIFT_EVENT_SYSTEM_PROMPT for kind, _ in events)
    assert any(kind == sc.DRIFT_EVENT_WINDOW for kind, _ in events)
    # the events were seen by this sidecar at once, before any window job ran
    assert sc_.runtime.drift.state.events[sc.DRIFT_EVENT_FINGERPRINT] == 1
    assert sc_.runtime.drift.state.events[sc.DRIFT_EVENT_SYSTEM_PROMPT] == 1
    text = metrics_text(loop_thread, sc_)
    assert 'railwatch_drift_events_total{kind="fingerprint_changed"} 1.0' in text
    assert ('railwatch_drift_drifted{metric="completion_tokens",model="railwatch-demo-scripted",'
            'route="chat",statistic="ks"} 1.0') in text
    assert "railwatch_drift_sampled_requests_total" in text


def test_pinned_baseline_replaces_the_trailing_window(
    backend: Backend, database: str, drift_sidecar: RunningSidecar, own_upstream: Any,
    loop_thread: LoopThread,
) -> None:
    sc_ = drift_sidecar
    behave(loop_thread, own_upstream, pad_words=25)
    pinned = traffic(sc_, prompts(SUPPORT, N, seed=11))
    behave(loop_thread, own_upstream, pad_words=0)
    prev = traffic(sc_, prompts(SUPPORT, N, seed=12))
    cur = traffic(sc_, prompts(SUPPORT, N, seed=13))
    flush(sc_)
    store = _store(backend, database)
    assert not any(r.drifted for r in _run(sc_, store, prev, cur)
                   if r.metric not in SCALARS_NOT_TIMING)
    store.set_baseline(*pinned)
    against_pin = _run(sc_, store, prev, cur)
    assert {"completion_tokens", "output_chars"} <= {r.metric for r in against_pin if r.drifted}
    assert all(abs(r.reference_start - pinned[0]) < 0.002 for r in against_pin)  # ms precision
