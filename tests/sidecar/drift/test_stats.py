"""The drift statistics: they find known shifts, and hold their false-positive rate."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.drift import mmd
from sidecar.drift.analysis import EMBEDDING_METRIC, Windows, compare
from sidecar.drift.config import DriftSettings
from sidecar.drift.stats import chi2_test, ks_test, psi
from tests.sidecar.drift.synth import feature_window

W = Windows((0.0, 100.0), (100.0, 200.0))


def _compare(ref, cur, **settings):  # type: ignore[no-untyped-def]
    cfg = DriftSettings(min_window_size=50, **settings)
    return compare(ref, cur, cfg, windows=W, model="m", route="chat", store_text=True)


@pytest.mark.parametrize(("shift", "expect"), [(0.0, False), (0.6, True)])
def test_ks_finds_a_location_shift(shift: float, expect: bool) -> None:
    rng = np.random.default_rng(1)
    t = ks_test(rng.normal(0, 1, 400).tolist(), rng.normal(shift, 1, 400).tolist())
    assert (t.p_value < 0.001) is expect
    assert "PSI" in t.explanation


def test_psi_is_small_for_one_distribution_and_large_for_two() -> None:
    rng = np.random.default_rng(2)
    same = psi(rng.normal(0, 1, 2000), rng.normal(0, 1, 2000))
    moved = psi(rng.normal(0, 1, 2000), rng.normal(1, 1, 2000))
    assert same < 0.05 < 0.25 < moved


def test_chi2_names_the_category_that_moved() -> None:
    ref = ["stop"] * 190 + ["length"] * 10
    cur = ["stop"] * 120 + ["length"] * 80
    t = chi2_test(ref, cur)
    assert t.p_value < 1e-6 and t.value > 0.1
    assert t.explanation.startswith(("length", "stop"))
    assert chi2_test(["a"] * 50, ["a"] * 60).p_value == 1.0


def test_rare_categories_are_pooled() -> None:
    # one-off languages in the current window alone must not look like drift
    ref = ["en"] * 200
    cur = ["en"] * 197 + ["fi", "ko", "sw"]
    t = chi2_test(ref, cur)
    assert t.p_value > 0.01


def test_mmd_finds_a_new_cluster_and_explains_it() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(8, 32))

    def draw(n: int, centers: np.ndarray) -> np.ndarray:
        x = centers[rng.integers(0, len(centers), n)] + 0.4 * rng.normal(size=(n, 32))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    same = mmd.mmd_test(draw(120, base), draw(120, base), permutations=200)
    assert same.test.p_value > 0.01
    new_center = rng.normal(size=(1, 32)) * 2
    cur = np.vstack([draw(80, base), draw(40, new_center)])
    moved = mmd.mmd_test(draw(120, base), cur, permutations=200)
    assert moved.test.p_value < 0.01
    cluster = mmd.explain(moved, 5)
    assert cluster and all(i >= 80 for i in cluster)  # the new prompts, not the old ones


def test_compare_alarms_on_longer_answers_only_where_they_changed() -> None:
    results = _compare(feature_window(300, 1), feature_window(300, 2, output_scale=1.6))
    drifted = {r.metric for r in results if r.drifted}
    assert drifted == {"completion_tokens"}
    threshold = {r.threshold for r in results}
    assert threshold == {0.01 / len(results)}  # Bonferroni over the window's tests


def test_compare_sees_a_refusal_rate_change() -> None:
    results = _compare(feature_window(400, 3), feature_window(400, 4, refusal=0.2))
    assert {r.metric for r in results if r.drifted} == {"refusal"}


def test_false_positive_rate_of_unshifted_windows_is_held() -> None:
    """40 pairs of windows from one distribution: at alpha 0.01 (Bonferroni), expect ~0
    alarms; more than 2 would mean the correction or a test is broken."""
    alarms = 0
    for seed in range(40):
        results = _compare(feature_window(250, 1000 + 2 * seed), feature_window(250, 1001 + 2 * seed))
        alarms += any(r.drifted for r in results)
    assert alarms <= 2


def test_embedding_windows_are_tested_when_present() -> None:
    rng = np.random.default_rng(5)
    ref, cur = feature_window(60, 1), feature_window(60, 2)
    for sample in (ref, cur):
        x = rng.normal(size=(60, 16))
        sample.embeddings = (x / np.linalg.norm(x, axis=1, keepdims=True)).tolist()
        sample.examples = [(f"prompt {i}", f"h{i}", 8) for i in range(60)]
    results = _compare(ref, cur)
    emb = [r for r in results if r.metric == EMBEDDING_METRIC]
    assert len(emb) == 1 and emb[0].statistic == "mmd" and not emb[0].drifted
