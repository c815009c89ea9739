"""Embedding drift: maximum mean discrepancy (MMD) with a permutation test.

Gaussian kernel on unit vectors, bandwidth by the median heuristic on the pooled
sample; statistic: the biased MMD² estimate. The p-value is the permutation p-value
``(1 + #{perm >= observed}) / (1 + permutations)``, exact in level: under "same
distribution" it is below ``alpha`` with probability at most ``alpha``, for any sample
size, which is why this test and not a parametric one. Cost: the pooled kernel matrix
(n² floats, n <= 2 * max_window) and one matrix product per batch of permutations.

:func:`explain` names the region of new prompts: the current-window points where the
*witness function* (mean kernel to current minus mean kernel to reference) is largest
are those the reference has least of; the nearest neighbours of the top one are the
cluster whose examples the alert shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sidecar.drift.stats import Test

Matrix = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MmdResult:
    test: Test
    witness: Matrix  # per current-window point
    kernel_cur: Matrix  # kernel among current-window points (for clustering)


def _kernel(z: Matrix) -> Matrix:
    sq = np.maximum(2.0 - 2.0 * (z @ z.T), 0.0) if _unit(z) else _sqdist(z)
    off = sq[~np.eye(len(z), dtype=bool)]
    bandwidth = float(np.median(off)) if off.size else 1.0
    return np.asarray(np.exp(-sq / max(bandwidth, 1e-12)), dtype=np.float64)


def _unit(z: Matrix) -> bool:
    return bool(np.allclose(np.einsum("ij,ij->i", z, z), 1.0, atol=1e-3))


def _sqdist(z: Matrix) -> Matrix:
    n = np.einsum("ij,ij->i", z, z)
    return np.asarray(np.maximum(n[:, None] + n[None, :] - 2.0 * (z @ z.T), 0.0), dtype=np.float64)


def mmd_test(reference: Matrix, current: Matrix, *, permutations: int = 500,
             seed: int = 0) -> MmdResult:
    """Two-sample MMD permutation test of ``reference`` (n×d) against ``current`` (m×d)."""
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(current, dtype=np.float64)
    nx, ny = len(x), len(y)
    k = _kernel(np.vstack([x, y]))
    a = np.concatenate([np.full(nx, 1.0 / nx), np.full(ny, -1.0 / ny)])
    observed = float(a @ k @ a)
    rng = np.random.default_rng(seed)
    exceed = 0
    done = 0
    while done < permutations:
        step = min(128, permutations - done)
        perms = np.stack([a[rng.permutation(nx + ny)] for _ in range(step)], axis=1)
        values = np.einsum("ip,ip->p", perms, k @ perms)
        exceed += int(np.sum(values >= observed - 1e-12))
        done += step
    p = (1 + exceed) / (1 + permutations)
    witness = k[nx:, nx:].mean(axis=1) - k[nx:, :nx].mean(axis=1)
    test = Test("mmd", max(observed, 0.0), p, "")
    return MmdResult(test, witness, k[nx:, nx:])


def explain(result: MmdResult, cluster_size: int = 5) -> list[int]:
    """Indexes (into the current sample) of the cluster of prompts the reference lacks most."""
    if result.witness.size == 0:
        return []
    center = int(np.argmax(result.witness))
    near = np.argsort(-result.kernel_cur[center])
    chosen = [int(i) for i in near if result.witness[i] > 0][:cluster_size]
    return chosen or [center]
