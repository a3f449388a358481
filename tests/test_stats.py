"""mmcore.experiments.stats: mean ± std over seeds and McNemar's test, on known values."""

from __future__ import annotations

import numpy as np
import pytest

from mmcore.experiments.stats import format_mean_std, mcnemar, mean_std


def test_mean_std_sample_std():
    assert mean_std([1, 2, 3, 4]) == pytest.approx((2.5, 1.2909944))
    assert mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError, match="no values"):
        mean_std([])


def test_format_mean_std():
    assert format_mean_std([0.9, 0.92, 0.91]) == "0.910 ± 0.010"
    assert format_mean_std([0.9]) == "0.900"
    assert format_mean_std([0.5, 0.7], digits=2) == "0.60 ± 0.14"


def _pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_exact_for_few_discordant_pairs():
    # 1 vs 9 discordant: p = 2 * P(X <= 1 | n=10, 1/2) = 2 * 11/1024
    result = mcnemar(*_pairs(50, 1, 9, 3))
    assert (result.only_a, result.only_b, result.discordant) == (1, 9, 10)
    assert result.method == "exact"
    assert result.p_value == pytest.approx(22 / 1024)
    assert mcnemar(*_pairs(10, 3, 3, 0)).p_value == 1.0  # symmetric: capped at 1


def test_mcnemar_chi_square_with_continuity_correction():
    # Wikipedia's McNemar example: b = 121, c = 59 -> (|121 - 59| - 1)^2 / 180 = 20.672
    result = mcnemar(*_pairs(101, 121, 59, 33))
    assert result.method == "chi2"
    assert result.statistic == pytest.approx(20.6722, abs=1e-4)
    assert result.p_value == pytest.approx(5.4501e-6, rel=1e-3)


def test_mcnemar_no_discordant_pairs_and_bad_shapes():
    result = mcnemar([True, False, True], [True, False, True])
    assert (result.p_value, result.discordant) == (1.0, 0)
    with pytest.raises(ValueError, match="equal in length"):
        mcnemar([True, False], [True])
