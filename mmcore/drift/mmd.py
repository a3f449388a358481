"""Two-sample test on embeddings: unbiased MMD² with an RBF kernel and a permutation null.

The kernel is k(x, y) = exp(-|x - y|² / (2 ℓ²)), with ℓ² the median pairwise squared distance of
the pooled sample (reference + batch; the median heuristic). Because ℓ depends on the pooled sample
only, not on which rows are called "reference", every permutation sees the same kernel matrix and
the permutation test is exact: under "same distribution" the p-value is uniform.

Cost: the pooled kernel matrix (N x N, N = reference + batch rows after subsampling) is built once;
each permutation is a column of a 0/1 matrix B marking the rows it calls "batch", and one matrix
product K @ B per 256 permutations gives their statistics. Large inputs are subsampled (seeded) to
`max_reference` and `max_batch` rows first, so the check stays cheap on large data.

The null is drawn from the pooled sample, not from the reference alone (a bootstrap of the
reference alone, as Evidently's embedding check does, ignores the batch's own sampling noise and
so misstates the false-alarm rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Permutations are scored this many at a time: K @ B holds N x CHUNK floats.
CHUNK = 256


@dataclass(frozen=True)
class MMDResult:
    """One MMD² permutation test: the statistic, its p-value and the null it was ranked in."""

    statistic: float  # unbiased MMD² of the (subsampled) reference vs batch
    p_value: float  # (1 + #{null >= statistic}) / (1 + n_permutations)
    n_permutations: int
    bandwidth: float  # ℓ, the median pooled pairwise distance (module docstring)
    n_reference: int  # rows used, after subsampling
    n_batch: int
    null: np.ndarray = field(repr=False, compare=False)  # the permutation statistics


def min_permutations(alpha: float, n_tests: int = 1) -> int:
    """The fewest permutations whose p-value can fall to alpha / n_tests (Bonferroni).

    With the +1 correction the smallest p-value is 1 / (1 + n_permutations), so reaching
    alpha / n_tests takes n_permutations >= ceil(n_tests / alpha) - 1.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_tests < 1:
        raise ValueError(f"n_tests must be at least 1, got {n_tests}")
    return math.ceil(n_tests / alpha - 1e-9) - 1


def check_embeddings(name: str, x: np.ndarray) -> np.ndarray:
    """`x` as a finite float64 (n, d) array with n >= 2; ValueError naming `name` otherwise."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: embeddings must be a 2-D (rows, dims) array, "
                         f"got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 rows, got {arr.shape[0]}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}: row {int(np.argmax(bad))} has a NaN or infinite value")
    return arr


def subsample(x: np.ndarray, max_rows: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most `max_rows` rows of `x`, drawn without replacement (all rows, in order, if fewer)."""
    if max_rows is None or len(x) <= max_rows:
        return x
    return x[np.sort(rng.choice(len(x), size=max_rows, replace=False))]


def squared_distances(pooled: np.ndarray) -> np.ndarray:
    """All pairwise squared Euclidean distances of the rows, (N, N), clipped at 0."""
    norms = np.einsum("ij,ij->i", pooled, pooled)
    d2 = pooled @ pooled.T
    d2 *= -2.0
    d2 += norms[:, None]
    d2 += norms[None, :]
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def median_bandwidth(d2: np.ndarray) -> float:
    """ℓ = the square root of the median squared distance over distinct pairs (the median
    distance, but for an even number of pairs the mean of the middle two is taken on squares); the
    median of the non-zero ones if more than half the pairs coincide, and 1.0 if every row is the
    same (then any ℓ gives MMD² = 0).

    The full matrix holds each pair twice plus N zeros on its diagonal, which sort first; so the
    pairs' median is the mean of the full array's order statistics N + M/2 - 1 and N + M/2
    (M = N(N - 1) off-diagonal entries): one partition, no copy of the upper triangle.
    """
    size = len(d2)
    half = size * (size - 1) // 2
    lo, hi = np.partition(d2, [size + half - 1, size + half], axis=None)[
        [size + half - 1, size + half]]
    med = float(lo + hi) / 2.0
    if med <= 0.0:
        upper = d2[np.triu_indices(size, k=1)]
        positive = upper[upper > 0]
        med = float(np.median(positive)) if positive.size else 1.0
    return math.sqrt(med)


def rbf_kernel(d2: np.ndarray, bandwidth: float) -> np.ndarray:
    """exp(-d² / (2 ℓ²)), elementwise."""
    k = d2 * (-1.0 / (2.0 * bandwidth * bandwidth))
    return np.exp(k, out=k)


def _mmd2_from_sums(s_yy: np.ndarray, r_y: np.ndarray, total: float, m: int, n: int,
                    ) -> np.ndarray:
    """Unbiased MMD² from block sums of K, for one or many splits of the pooled rows.

    s_yy = sum of K over batch x batch (diagonal included), r_y = sum of K over batch rows x all
    rows, total = sum of K. Since K_ii = 1: the reference block sums to total - 2 r_y + s_yy,
    the cross block to r_y - s_yy.
    """
    xx = (total - 2.0 * r_y + s_yy - m) / (m * (m - 1))
    yy = (s_yy - n) / (n * (n - 1))
    xy = (r_y - s_yy) / (m * n)
    return xx + yy - 2.0 * xy


def mmd2_unbiased(k: np.ndarray, is_batch: np.ndarray) -> float:
    """Unbiased MMD² of the rows marked False (reference) vs True (batch) in kernel matrix `k`."""
    mask = np.asarray(is_batch, dtype=bool)
    n = int(mask.sum())
    m = len(mask) - n
    if m < 2 or n < 2:
        raise ValueError(f"MMD² needs at least 2 rows per sample, got {m} and {n}")
    s_yy = float(k[np.ix_(mask, mask)].sum())
    r_y = float(k[mask].sum())
    return float(_mmd2_from_sums(np.array(s_yy), np.array(r_y), float(k.sum()), m, n))


def split_statistics(k: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """MMD² of each split whose batch rows are one row of `picks` (splits x n_batch indices).

    Each chunk of splits is a 0/1 matrix B (N x chunk) marking its batch rows; one product
    K @ B gives every split's batch-batch sum (diag(BᵀKB)) and its batch-all sum (row sums of K
    picked by B). K is used in float32 here (twice as fast; the rounding, ~1e-7 of a sum, is far
    below the null's spread), so statistics to be ranked against each other all come from here.
    """
    size, n_batch = len(k), picks.shape[1]
    k32 = k.astype(np.float32)
    row_sums = k.sum(axis=1)
    total = float(row_sums.sum())
    out = np.empty(len(picks))
    for start in range(0, len(picks), CHUNK):
        chunk = picks[start:start + CHUNK]
        b = np.zeros((size, len(chunk)), dtype=np.float32)
        b[chunk, np.arange(len(chunk))[:, None]] = 1.0
        s_yy = np.einsum("ij,ij->j", b, k32 @ b, dtype=np.float64)
        r_y = row_sums @ b
        out[start:start + len(chunk)] = _mmd2_from_sums(s_yy, r_y, total, size - n_batch,
                                                       n_batch)
    return out


def random_splits(size: int, n_batch: int, n_permutations: int, rng: np.random.Generator,
                  ) -> np.ndarray:
    """`n_permutations` uniformly random n_batch-subsets of range(size), (n_permutations,
    n_batch): the batch rows of each permutation (order within a subset is irrelevant)."""
    keys = rng.random((n_permutations, size))
    return np.argpartition(keys, n_batch - 1, axis=1)[:, :n_batch]


def mmd_test(reference: np.ndarray, batch: np.ndarray, *, n_permutations: int, seed: int,
             max_reference: int | None = 2000, max_batch: int | None = 2000,
             name: str = "embeddings") -> MMDResult:
    """Permutation test of "reference and batch rows come from one distribution" by MMD².

    Both samples are first subsampled (seeded) to at most `max_reference` / `max_batch` rows;
    the same seed gives the same subsamples, permutations and p-value.
    """
    ref = check_embeddings(f"{name} (reference)", reference)
    new = check_embeddings(f"{name} (batch)", batch)
    if ref.shape[1] != new.shape[1]:
        raise ValueError(f"{name}: reference has {ref.shape[1]} dims, batch {new.shape[1]}")
    if n_permutations < 1:
        raise ValueError(f"{name}: n_permutations must be at least 1, got {n_permutations}")
    rng = np.random.default_rng(seed)
    ref = subsample(ref, max_reference, rng)
    new = subsample(new, max_batch, rng)
    d2 = squared_distances(np.concatenate([ref, new]))
    bandwidth = median_bandwidth(d2)
    k = rbf_kernel(d2, bandwidth)
    del d2
    is_batch = np.r_[np.zeros(len(ref), dtype=bool), np.ones(len(new), dtype=bool)]
    observed = mmd2_unbiased(k, is_batch)
    picks = np.concatenate([np.flatnonzero(is_batch)[None, :],
                            random_splits(len(k), len(new), n_permutations, rng)])
    ranked = split_statistics(k, picks)  # row 0: the observed split, on the null's footing
    null = ranked[1:]
    p_value = (1 + int(np.sum(null >= ranked[0]))) / (1 + n_permutations)
    return MMDResult(statistic=observed, p_value=p_value, n_permutations=n_permutations,
                     bandwidth=bandwidth, n_reference=len(ref), n_batch=len(new), null=null)
