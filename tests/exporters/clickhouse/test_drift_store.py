"""DriftStore against the real engine: rows, windows, events, baselines, the lease."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from exporters.clickhouse import migrate
from exporters.clickhouse.drift_store import (
    CanaryAnswer,
    DriftEvent,
    DriftStore,
    RequestFeatures,
    WindowResult,
)

if TYPE_CHECKING:
    from tests.conftest import Backend


@pytest.fixture
def store(backend: Backend, database: str) -> DriftStore:
    migrate(backend.admin, database)
    return DriftStore.for_client(backend.admin, database)


def _row(i: int, ts: float, **kw: object) -> RequestFeatures:
    base: dict[str, object] = dict(
        ts=ts, request_id=f"{i:032x}", pod="pod-a", upstream="http://u", route="chat",
        model="m1", model_requested="m1", system_fingerprint="fp1", system_prompt_hash="s1",
        system_prompt_chars=40, prompt_hash=f"p{i}", prompt_chars=20,
        num={"prompt_tokens": float(i)}, cat={"language": "en"},
        embedding=[1.0, 0.0], example=f"prompt {i}")
    base.update(kw)
    return RequestFeatures(**base)  # type: ignore[arg-type]


def test_rows_read_back_per_window_and_group(store: DriftStore) -> None:
    now = time.time()
    store.insert_requests([_row(i, now - 50 + i % 10) for i in range(30)]
                          + [_row(100 + i, now - 5, model="m2", embedding=[]) for i in range(5)])
    groups = store.groups(now - 60, now)
    assert groups == [("m1", "chat", 30), ("m2", "chat", 5)]
    w = store.window("m1", "chat", now - 60, now, max_rows=20, max_embeddings=7)
    assert len(w) == 20 and len(w.embeddings) == 7
    assert w.num[0].keys() == {"prompt_tokens"} and w.cat[0] == {"language": "en"}
    assert w.examples[0][0] is not None and w.examples[0][0].startswith("prompt ")
    assert len(store.window("m2", "chat", now - 60, now, max_rows=20, max_embeddings=7)
               .embeddings) == 0
    known = set(store.known_values())
    assert ("fingerprint", "m1", "chat", "fp1") in known
    assert ("system_prompt", "m2", "chat", "s1") in known
    assert ("model", "m1", "chat", "m1") in known


def test_events_and_windows_collapse_duplicates(store: DriftStore) -> None:
    now = time.time()
    e = DriftEvent("id1", now, "fingerprint_changed", "m1", "chat", "u", "fingerprint",
                   "fp1", "fp2", "", "pod-a")
    store.insert_events([e])
    store.insert_events([e])  # a second pod, same change
    assert len(store.events(now - 10)) == 1
    w = WindowResult(now - 20, now - 10, now - 30, now - 20, "m1", "chat", "prompt_tokens",
                     "ks", 0.3, 0.001, 1e-6, 200, 200, True, "median 1 -> 2")
    store.insert_windows([w])
    store.insert_windows([w])  # a repeated run
    history = store.window_history(now - 60)
    assert len(history) == 1 and history[0]["drifted"] is True


def test_baseline_pin_and_clear(store: DriftStore) -> None:
    assert store.baselines() == {}
    store.set_baseline(100.0, 200.0)
    store.set_baseline(300.0, 400.0, "m1")
    assert store.baselines() == {"": (100.0, 200.0), "m1": (300.0, 400.0)}
    store.clear_baseline("m1")
    assert store.baselines() == {"": (100.0, 200.0)}


def test_the_lease_has_one_holder_until_it_expires(store: DriftStore) -> None:
    assert store.acquire_lease("drift", "pod-a", 30)
    assert not store.acquire_lease("drift", "pod-b", 30)
    assert store.acquire_lease("drift", "pod-a", 30)  # renewal
    assert store.acquire_lease("other", "pod-b", 0.2)
    time.sleep(0.3)
    assert store.acquire_lease("other", "pod-c", 30)  # expired: taken over


def test_canary_baseline_is_the_latest_baseline_answer(store: DriftStore) -> None:
    assert store.canary_baseline("primary", "m1", "capital") is None
    now = time.time()
    store.insert_canary(CanaryAnswer(now, "primary", "m1", "capital", "Paris.", "h1", [1.0],
                                     "fp1", 1.0, True, True))
    store.insert_canary(CanaryAnswer(now + 1, "primary", "m1", "capital", "Lyon.", "h2", [0.0],
                                     "fp2", 0.2, False, False))
    base = store.canary_baseline("primary", "m1", "capital")
    assert base is not None and base.answer == "Paris." and base.embedding == [1.0]
