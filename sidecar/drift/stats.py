"""Two-sample statistics for scalar features: KS for numbers, chi-square + JS for categories.

Each function takes a reference and a current sample and returns a :class:`Test`: an
effect size (``value``), a p-value under "both samples come from one distribution",
and a short explanation holding numbers only (never text). Pure, CPU-bound, no I/O.

- Numbers: two-sample Kolmogorov-Smirnov (``scipy.stats.ks_2samp``), effect = D (the
  largest gap between the two empirical CDFs, 0..1); the explanation adds the medians
  and the population stability index (PSI, ten reference-quantile bins), the number
  dashboards usually show.
- Categories: chi-square test of homogeneity on the contingency table (categories with
  fewer than 5 rows in both samples pooled into one, so small expected counts cannot
  inflate the false-positive rate), effect = Jensen-Shannon distance (base 2, 0..1).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

_POOL_BELOW = 5
_OTHER = "(rare)"


@dataclass(frozen=True, slots=True)
class Test:
    statistic: str  # "ks" | "chi2" | "mmd"
    value: float  # effect size
    p_value: float
    explanation: str


def psi(reference: Sequence[float] | NDArray[np.float64], current: Sequence[float] | NDArray[np.float64],
        bins: int = 10) -> float:
    """Population stability index over reference-quantile bins (0.0001 floor per bin)."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1)
    rp = np.maximum(r / max(len(ref), 1), 1e-4)
    cp = np.maximum(c / max(len(cur), 1), 1e-4)
    return float(np.sum((cp - rp) * np.log(cp / rp)))


def ks_test(reference: Sequence[float], current: Sequence[float]) -> Test:
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    result = sps.ks_2samp(ref, cur, method="asymp")
    d, p = float(result.statistic), float(result.pvalue)
    explanation = (f"median {np.median(ref):.4g} -> {np.median(cur):.4g}, "
                   f"mean {ref.mean():.4g} -> {cur.mean():.4g}, PSI {psi(ref, cur):.3f}")
    return Test("ks", d, p if math.isfinite(p) else 1.0, explanation)


def chi2_test(reference: Sequence[str], current: Sequence[str]) -> Test:
    rc, cc = Counter(reference), Counter(current)
    keys = sorted(set(rc) | set(cc))
    pooled_r: Counter[str] = Counter()
    pooled_c: Counter[str] = Counter()
    for k in keys:
        name = k if rc[k] + cc[k] >= _POOL_BELOW else _OTHER
        pooled_r[name] += rc[k]
        pooled_c[name] += cc[k]
    cats = sorted(set(pooled_r) | set(pooled_c))
    r = np.array([pooled_r[k] for k in cats], dtype=float)
    c = np.array([pooled_c[k] for k in cats], dtype=float)
    nr, nc = r.sum(), c.sum()
    if len(cats) < 2 or nr == 0 or nc == 0:
        return Test("chi2", 0.0, 1.0, f"one category ({cats[0] if cats else 'none'})")
    js = float(jensenshannon(r / nr, c / nc, base=2))
    p = float(sps.chi2_contingency(np.vstack([r, c]), correction=False).pvalue)
    shift = c / nc - r / nr
    top = int(np.argmax(np.abs(shift)))
    explanation = (f"{cats[top]}: {100 * r[top] / nr:.1f}% -> {100 * c[top] / nc:.1f}% "
                   f"({len(cats)} categories)")
    return Test("chi2", js if math.isfinite(js) else 0.0, p if math.isfinite(p) else 1.0,
                explanation)
