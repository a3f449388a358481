"""Uncertainty for comparisons: mean ± std over seeds, McNemar's paired test.

A comparison of learning modes on one seed is a handful of test samples apart; these say how far
apart is more than chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Below this many discordant pairs the chi-square approximation is poor: use the exact test.
EXACT_BELOW = 25


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_std of no values")
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std


def format_mean_std(values: Sequence[float], digits: int = 3) -> str:
    """'0.912 ± 0.011' (just '0.912' for a single value)."""
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired predictions of models A and B over the same samples.

    only_a: samples A got right and B wrong; only_b: the reverse. The test asks whether
    only_a and only_b differ by more than chance (the concordant samples carry no information).
    """

    only_a: int
    only_b: int
    statistic: float  # exact: min(only_a, only_b); chi-square: corrected chi-square statistic
    p_value: float
    method: str  # "exact" (binomial) or "chi2" (with continuity correction)

    @property
    def discordant(self) -> int:
        return self.only_a + self.only_b


def mcnemar(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray,
            ) -> McNemarResult:
    """Two-sided McNemar test: exact binomial below EXACT_BELOW discordant pairs, else the
    chi-square with continuity correction, (|b - c| - 1)^2 / (b + c), one degree of freedom.

    Pairs from several seeds may be pooled by concatenating them (each seed its own test split).
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired correctness vectors must be 1-D and equal in length, "
                         f"got {a.shape} and {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    if n == 0:
        return McNemarResult(only_a, only_b, 0.0, 1.0, "exact")
    if n < EXACT_BELOW:
        low = min(only_a, only_b)
        p = min(1.0, 2.0 * float(stats.binom.cdf(low, n, 0.5)))
        return McNemarResult(only_a, only_b, float(low), p, "exact")
    statistic = (abs(only_a - only_b) - 1) ** 2 / n
    return McNemarResult(only_a, only_b, float(statistic), float(stats.chi2.sf(statistic, 1)),
                         "chi2")
