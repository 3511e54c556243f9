"""report.stats: bootstrap intervals (coverage, reproducibility, against a loop), the hierarchical bootstrap over
seeds, the paired permutation test (exact against brute force, size under the null, power), Holm, input errors."""

import itertools
import math

import numpy as np
import pytest

from vtp_bench.report.stats import (
    binomial_half_width,
    bootstrap_ci,
    hierarchical_bootstrap_ci,
    holm,
    paired_permutation_test,
)


# ---------------------------------------------------------------------------------------------------- bootstrap_ci
def test_bootstrap_coverage_on_simulated_test_sets():
    rng = np.random.default_rng(123)
    p, n, sims = 0.4, 200, 300
    covered = 0
    for i in range(sims):
        lo, hi = bootstrap_ci(rng.random(n) < p, n_boot=1000, seed=i)
        assert lo <= hi
        covered += lo <= p <= hi
    assert 0.90 <= covered / sims <= 0.985


def test_bootstrap_constant_and_single_item_are_degenerate():
    assert bootstrap_ci([0.1] * 200, n_boot=500) == (0.1, 0.1)
    assert bootstrap_ci(np.ones(7), n_boot=500) == (1.0, 1.0)
    assert bootstrap_ci([3.5], n_boot=500) == (3.5, 3.5)
    lo, hi = bootstrap_ci([2.0], n_boot=50, statistic=lambda x: np.median(x, axis=1))
    assert lo == hi == 2.0


def test_bootstrap_reproducible_with_seed():
    x = np.random.default_rng(0).normal(size=300)
    assert bootstrap_ci(x, n_boot=2000, seed=7) == bootstrap_ci(x, n_boot=2000, seed=7)
    assert bootstrap_ci(x, n_boot=2000, seed=7) != bootstrap_ci(x, n_boot=2000, seed=8)


def _loop_percentile(sorted_values, q):
    """Linear interpolation between order statistics (numpy's default percentile), written out."""
    pos = q * (len(sorted_values) - 1)
    k = math.floor(pos)
    if k + 1 >= len(sorted_values):
        return sorted_values[-1]
    return sorted_values[k] + (pos - k) * (sorted_values[k + 1] - sorted_values[k])


def test_bootstrap_against_loop_implementation():
    x = np.random.default_rng(3).integers(1, 100, size=50).astype(float)
    n_boot, level = 2000, 0.9
    # the same draws (one [n_boot, n] block: n_boot * n is far below the chunk size), means and percentiles by hand
    idx = np.random.default_rng(11).integers(0, x.size, size=(n_boot, x.size))
    means = sorted(sum(float(x[j]) for j in row) / x.size for row in idx)
    expected = (_loop_percentile(means, 0.05), _loop_percentile(means, 0.95))
    assert bootstrap_ci(x, level=level, n_boot=n_boot, seed=11) == pytest.approx(expected, rel=1e-12)


def test_bootstrap_half_width_matches_normal_approximation_for_large_n():
    rng = np.random.default_rng(5)
    n, p = 20_000, 0.3
    x = rng.random(n) < p
    lo, hi = bootstrap_ci(x, n_boot=2000, seed=1)
    p_hat = x.mean()
    expected = 1.96 * math.sqrt(p_hat * (1 - p_hat) / n)
    assert (hi - lo) / 2 == pytest.approx(expected, rel=0.10)
    assert lo < p_hat < hi
    assert binomial_half_width(p_hat, n) == pytest.approx(expected, rel=1e-3)


def test_bootstrap_median_statistic():
    ranks = np.concatenate([np.ones(60), np.full(40, 50.0)])  # median 1 in most resamples, mean ~20.6
    med = bootstrap_ci(ranks, n_boot=1000, statistic=lambda r: np.median(r, axis=1))
    assert med == (1.0, 1.0)
    mean_lo, mean_hi = bootstrap_ci(ranks, n_boot=1000)
    assert mean_lo > 10 and mean_hi < 32
    x = np.random.default_rng(2).normal(size=301)
    lo, hi = bootstrap_ci(x, n_boot=1000, statistic=lambda r: np.median(r, axis=1))
    assert lo < float(np.median(x)) < hi
    with pytest.raises(ValueError, match="statistic"):
        bootstrap_ci(x, n_boot=10, statistic=lambda r: np.median(r))


def test_bootstrap_level_orders_intervals():
    x = np.random.default_rng(4).normal(size=200)
    lo80, hi80 = bootstrap_ci(x, level=0.8, n_boot=2000)
    lo99, hi99 = bootstrap_ci(x, level=0.99, n_boot=2000)
    assert lo99 < lo80 < hi80 < hi99


# ------------------------------------------------------------------------------------------ hierarchical_bootstrap_ci
def test_hierarchical_one_seed_equals_bootstrap():
    x = np.random.default_rng(8).random(150)
    for kw in ({}, {"level": 0.9, "n_boot": 700, "seed": 3},
               {"n_boot": 300, "statistic": lambda r: np.median(r, axis=1)}):
        assert hierarchical_bootstrap_ci(x[None, :], **kw) == bootstrap_ci(x, **kw)


def test_hierarchical_wider_than_item_bootstrap_when_seeds_differ():
    rng = np.random.default_rng(9)
    items = rng.random(400)
    shifts = np.array([-0.15, 0.0, 0.1, 0.2, -0.05])  # a constant per training seed
    values = items[None, :] + shifts[:, None]
    lo_h, hi_h = hierarchical_bootstrap_ci(values, n_boot=1000)
    lo_b, hi_b = bootstrap_ci(values.mean(axis=0), n_boot=1000)
    assert hi_h - lo_h > 1.5 * (hi_b - lo_b)
    assert lo_h < values.mean() < hi_h
    # identical seeds: no seed variation, about the width of the item bootstrap
    same = np.repeat(items[None, :], 4, axis=0)
    lo_s, hi_s = hierarchical_bootstrap_ci(same, n_boot=1000)
    lo_i, hi_i = bootstrap_ci(items, n_boot=1000)
    assert hi_s - lo_s == pytest.approx(hi_i - lo_i, rel=0.15)


def test_hierarchical_reproducible_and_constant():
    values = np.random.default_rng(10).random((3, 100))
    assert hierarchical_bootstrap_ci(values, n_boot=500, seed=2) == hierarchical_bootstrap_ci(values, n_boot=500,
                                                                                               seed=2)
    assert hierarchical_bootstrap_ci(np.full((3, 20), 0.7), n_boot=100) == (0.7, 0.7)


# ------------------------------------------------------------------------------------------- paired_permutation_test
def _brute_force_p(a, b):
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    observed = abs(d.mean())
    hits = 0
    for signs in itertools.product((1.0, -1.0), repeat=d.size):
        hits += abs(float(np.mean(np.array(signs) * d))) >= observed - 1e-12
    return hits / 2 ** d.size


@pytest.mark.parametrize("a,b", [
    ([1, 1, 1, 1, 1], [0, 0, 0, 0, 0]),
    ([1, 0, 1, 1, 0, 1], [0, 0, 1, 0, 1, 0]),
    ([0.3, 0.1, 0.7, 0.2], [0.1, 0.4, 0.6, 0.0]),
    ([3.0, -1.0, 2.5, 0.5, 4.0, 1.0, -2.0], [1.0, 0.0, 2.5, 1.5, 1.0, 0.0, -1.0]),
    ([0.1, 0.2, 0.3], [0.0, 0.0, 0.0]),  # 0.1 + 0.2 - 0.3: float round-off must not drop tied patterns
])
def test_permutation_exact_against_brute_force(a, b):
    assert paired_permutation_test(a, b) == pytest.approx(_brute_force_p(a, b), abs=1e-15)


def test_permutation_exact_known_value_and_identical_inputs():
    assert paired_permutation_test([1, 1, 1, 1, 1], [0, 0, 0, 0, 0]) == 0.0625
    assert paired_permutation_test([0.2, 0.5, 0.9], [0.2, 0.5, 0.9]) == 1.0
    x = np.random.default_rng(0).random(500)
    assert paired_permutation_test(x, x.copy(), n_perm=100) == 1.0
    assert paired_permutation_test([2.0], [1.0]) == 1.0  # both sign patterns are as extreme


def test_permutation_size_under_null():
    rng = np.random.default_rng(21)
    sims, rejected = 400, 0
    for i in range(sims):
        a = rng.random(50) < 0.5
        b = rng.random(50) < 0.5
        rejected += paired_permutation_test(a, b, n_perm=500, seed=i) <= 0.05
    assert 0.02 <= rejected / sims <= 0.08


def test_permutation_power_on_large_gap():
    rng = np.random.default_rng(22)
    a = rng.random(1000) < 0.6
    b = rng.random(1000) < 0.4
    p = paired_permutation_test(a, b, n_perm=2000)
    assert p < 0.001
    assert p == 1 / 2001  # Monte Carlo: never 0


def test_permutation_monte_carlo_agrees_with_exact():
    rng = np.random.default_rng(23)
    a = rng.normal(0.4, 1.0, size=12)
    b = rng.normal(0.0, 1.0, size=12)
    exact = paired_permutation_test(a, b, n_perm=2 ** 12)
    assert exact == pytest.approx(_brute_force_p(a, b), abs=1e-15)
    mc = paired_permutation_test(a, b, n_perm=4000, seed=1)
    assert 0.01 < exact < 0.99
    assert mc != exact  # the Monte Carlo branch ran
    assert abs(mc - exact) < 0.02
    assert paired_permutation_test(a, b, n_perm=4000, seed=1) == mc


# --------------------------------------------------------------------------------------------------------------- holm
def test_holm_hand_computed():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001, 0.02, 0.9]) == pytest.approx([1.0, 0.004, 0.06, 1.0])
    assert holm([0.2]) == [0.2]
    assert holm([]) == []


def test_holm_monotone_and_bounded():
    p = np.random.default_rng(30).random(40) ** 3
    adj = np.array(holm(p))
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)
    assert np.all(adj >= p) and np.all(adj <= 1.0)
    assert np.all(adj <= np.minimum(1.0, p * p.size) + 1e-15)  # never worse than Bonferroni


# ------------------------------------------------------------------------------------------------ binomial_half_width
def test_binomial_half_width():
    assert binomial_half_width(0.5, 100) == pytest.approx(1.959964 * 0.05, rel=1e-6)
    assert binomial_half_width(0.0, 100) == 0.0
    assert binomial_half_width(0.5, 100, level=0.99) == pytest.approx(2.575829 * 0.05, rel=1e-6)
    with pytest.raises(ValueError, match="fraction"):
        binomial_half_width(40.0, 100)
    with pytest.raises(ValueError, match="n must be"):
        binomial_half_width(0.4, 0)


# ------------------------------------------------------------------------------------------------------------- errors
def test_errors():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([0.1, float("nan")])
    for level in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="level"):
            bootstrap_ci([0.1, 0.2], level=level)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([0.1, 0.2], n_boot=0)
    with pytest.raises(ValueError, match="2-D"):
        hierarchical_bootstrap_ci([0.1, 0.2])
    with pytest.raises(ValueError, match="empty"):
        hierarchical_bootstrap_ci(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="NaN"):
        hierarchical_bootstrap_ci([[0.1, 0.2], [0.3, float("nan")]])
    with pytest.raises(ValueError, match="same length"):
        paired_permutation_test([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        paired_permutation_test([], [])
    with pytest.raises(ValueError, match="NaN"):
        paired_permutation_test([1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ValueError, match="n_perm"):
        paired_permutation_test([1, 0], [0, 0], n_perm=0)
    with pytest.raises(ValueError, match="NaN"):
        holm([0.1, float("nan")])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.2])
