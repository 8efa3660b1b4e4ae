"""Statistics against values worked out by hand or published."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.core.stats import mcnemar, paired_bootstrap, t_interval, welch_p_value


def test_t_interval_matches_the_textbook_formula() -> None:
    values = [0.97, 0.975, 0.973]
    interval = t_interval(values, 0.95)
    # mean 0.972667, s = 0.0025166, t(0.975, df=2) = 4.302653 -> half width 4.302653 * s / sqrt(3)
    half = 4.302652729911275 * np.std(values, ddof=1) / math.sqrt(3)
    assert interval.mean == pytest.approx(0.9726666667)
    assert (interval.low, interval.high) == pytest.approx((interval.mean - half, interval.mean + half))
    assert interval.half_width == pytest.approx(0.0062516, rel=1e-5)


def test_t_interval_of_one_value_is_undefined() -> None:
    interval = t_interval([0.9], 0.95)
    assert interval.mean == 0.9 and math.isnan(interval.low) and math.isnan(interval.high)


def paired(only_a: int, only_b: int, both: int = 50, neither: int = 5) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, dtype=bool)
    return a, b


def test_mcnemar_exact_p_value_is_the_binomial_tail() -> None:
    # b = 10, c = 2: p = 2 * P(X <= 2 | n=12, 1/2) = 2 * (1 + 12 + 66) / 4096 = 158 / 4096
    result = mcnemar(*paired(10, 2))
    assert (result.only_a_correct, result.only_b_correct) == (10, 2)
    assert result.p_value == pytest.approx(158 / 4096)


def test_mcnemar_is_symmetric_and_ignores_agreements() -> None:
    assert mcnemar(*paired(3, 3)).p_value == pytest.approx(1.0)
    assert mcnemar(*paired(10, 2)).p_value == pytest.approx(mcnemar(*paired(2, 10, both=900)).p_value)
    assert mcnemar(*paired(0, 0)).p_value == 1.0


def test_paired_bootstrap_brackets_the_difference() -> None:
    a, b = paired(30, 10, both=400, neither=60)
    result = paired_bootstrap(a, b, 0.95, 2000, seed=0)
    assert result.difference == pytest.approx(20 / 500)
    assert result.low < result.difference < result.high
    # The normal-approximation interval of a paired difference: sd of the per-item difference / sqrt(n).
    sd = np.std(a.astype(float) - b.astype(float), ddof=1) / math.sqrt(len(a))
    assert result.high - result.low == pytest.approx(2 * 1.96 * sd, rel=0.15)
    assert paired_bootstrap(a, b, 0.95, 2000, seed=0) == result  # seeded, so repeatable


def test_paired_bootstrap_averages_seeds_per_item() -> None:
    a, b = paired(30, 10)
    stacked = paired_bootstrap(np.stack([a, a]), np.stack([b, b]), 0.95, 1000, seed=1)
    single = paired_bootstrap(a, b, 0.95, 1000, seed=1)
    assert stacked == single


def test_welch_separates_clearly_different_means_only() -> None:
    assert welch_p_value([100.0, 101.0, 99.0], [10.0, 11.0, 9.0]) < 1e-4
    assert welch_p_value([100.0, 101.0, 99.0], [100.5, 99.5, 100.0]) > 0.5
    assert math.isnan(welch_p_value([1.0], [2.0, 3.0]))
    assert welch_p_value([5.0, 5.0], [5.0, 5.0]) == 1.0 and welch_p_value([5.0, 5.0], [6.0, 6.0]) == 0.0
