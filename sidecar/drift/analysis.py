"""Window statistics over every pod's rows: the current window against its reference.

For each (model, route) with at least ``min_window_size`` rows in both windows, every
numeric feature gets a KS test and every categorical one a chi-square test
(:mod:`.stats`); the prompt embeddings get an MMD permutation test (:mod:`.mmd`).

False positives are controlled per window and (model, route): the scalar tests share
the significance level by Bonferroni (each is held to ``significance / m``), and a
scalar alarm also needs an effect of at least ``min_effect_ks`` / ``min_effect_js``
(on large windows a p-value alone flags differences too small to matter). The
embedding test is held to ``significance`` on its own; the family-wise rate of a
window is then at most ``2 * significance`` (measured in ``bench/bench_drift.py``).

The reference is the window before the current one, or the baseline pinned with
``railwatch drift baseline`` (per model, or for every model). Blocks (ClickHouse
reads, numpy); call from a worker thread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from exporters.clickhouse.drift_store import DriftStore, WindowResult, WindowSample
from sidecar.drift import mmd
from sidecar.drift.config import DriftSettings
from sidecar.drift.stats import Test, chi2_test, ks_test

logger = logging.getLogger(__name__)

EMBEDDING_METRIC = "prompt_embedding"


@dataclass(frozen=True, slots=True)
class Windows:
    ref: tuple[float, float]
    cur: tuple[float, float]


def current_windows(now: float, window_s: float) -> Windows:
    """The last complete window before ``now`` (aligned to ``window_s``) and the one before."""
    end = math.floor(now / window_s) * window_s
    return Windows((end - 2 * window_s, end - window_s), (end - window_s, end))


def compare(ref: WindowSample, cur: WindowSample, settings: DriftSettings, *,
            windows: Windows, model: str, route: str, store_text: bool) -> list[WindowResult]:
    """Every test of ``cur`` against ``ref``; pure CPU (see the module docstring)."""
    minimum = settings.min_window_size
    tests: list[tuple[str, Test]] = []
    for name in sorted({k for row in ref.num for k in row} | {k for row in cur.num for k in row}):
        a = [row[name] for row in ref.num if name in row]
        b = [row[name] for row in cur.num if name in row]
        if len(a) >= minimum and len(b) >= minimum and (np.ptp(a) > 0 or np.ptp(b) > 0 or
                                                          a[0] != b[0]):
            tests.append((name, ks_test(a, b)))
    for name in sorted({k for row in ref.cat for k in row} | {k for row in cur.cat for k in row}):
        a2 = [row[name] for row in ref.cat if name in row]
        b2 = [row[name] for row in cur.cat if name in row]
        if len(a2) >= minimum and len(b2) >= minimum:
            tests.append((name, chi2_test(a2, b2)))
    alpha = settings.significance
    corrected = alpha / max(len(tests), 1)
    out = []
    for name, t in tests:
        floor = settings.min_effect_ks if t.statistic == "ks" else settings.min_effect_js
        drifted = t.p_value < corrected and t.value >= floor
        out.append(_result(windows, model, route, name, t, corrected, len(ref), len(cur), drifted))
    emb_min = min(minimum, settings.embeddings.max_window)
    if len(ref.embeddings) >= emb_min and len(cur.embeddings) >= emb_min:
        res = mmd.mmd_test(np.array(ref.embeddings), np.array(cur.embeddings),
                           permutations=settings.embeddings.permutations,
                           seed=int(windows.cur[1]))
        drifted = res.test.p_value < alpha
        why = _examples(res, cur, store_text) if drifted else ""
        out.append(_result(windows, model, route, EMBEDDING_METRIC,
                           Test("mmd", res.test.value, res.test.p_value, why), alpha,
                           len(ref.embeddings), len(cur.embeddings), drifted))
    return out


def _examples(res: mmd.MmdResult, cur: WindowSample, store_text: bool) -> str:
    """The nearest cluster of new prompts: text where it may be stored, else hashes/lengths."""
    parts = []
    for i in mmd.explain(res, 3):
        text, phash, chars = cur.examples[i]
        if store_text and text:
            parts.append(repr(text[:120]))
        else:
            parts.append(f"prompt {phash} ({chars} chars)")
    return "new prompts like: " + "; ".join(parts)


def _result(w: Windows, model: str, route: str, metric: str, t: Test, threshold: float,
            n_ref: int, n_cur: int, drifted: bool) -> WindowResult:
    return WindowResult(
        window_start=w.cur[0], window_end=w.cur[1], reference_start=w.ref[0],
        reference_end=w.ref[1], model=model, route=route, metric=metric,
        statistic=t.statistic, value=round(t.value, 6), threshold=threshold,
        p_value=t.p_value, n_reference=n_ref, n_current=n_cur, drifted=drifted,
        explanation=t.explanation)


def analyze(store: DriftStore, settings: DriftSettings, windows: Windows, *,
            store_text: bool) -> list[WindowResult]:
    """Compare ``windows.cur`` with its reference for every (model, route); store results.

    A pinned baseline replaces ``windows.ref`` for its model (or for all, model "").
    Returns what was stored. Raises the driver's errors.
    """
    pinned = store.baselines()
    results: list[WindowResult] = []
    emb = settings.embeddings.max_window if settings.embeddings.enabled else 0
    for model, route, n in store.groups(*windows.cur):
        if n < settings.min_window_size:
            continue
        ref_range = pinned.get(model) or pinned.get("") or windows.ref
        w = Windows(ref_range, windows.cur)
        kwargs = {"max_rows": settings.max_window_rows, "max_embeddings": emb}
        ref = store.window(model, route, *w.ref, **kwargs)
        if len(ref) < settings.min_window_size:
            continue  # not enough reference: the current window is not even read
        cur = store.window(model, route, *w.cur, **kwargs)
        results.extend(compare(ref, cur, settings, windows=w, model=model, route=route,
                               store_text=store_text))
    store.insert_windows(results)
    return results


def drifted(results: Sequence[WindowResult]) -> list[WindowResult]:
    return [r for r in results if r.drifted]
