"""Statistics for comparing evaluation results (numpy only).

A benchmark number such as R@1 = 43.2 on 1,000 test queries is one draw: another test set of the same size, or
another training seed, would give a different number. The comparison table of ``vtp-bench compare`` uses:

- ``bootstrap_ci``: a percentile bootstrap interval over test items, shown per cell, so that a reader can tell a
  0.3-point gap on 500 queries (noise) from a 5-point one.
- ``hierarchical_bootstrap_ci``: the same when a method was trained with several seeds; it resamples seeds and items
  together, so the interval covers both the seed-to-seed and the test-set variation.
- ``paired_permutation_test`` + ``holm``: the bold "best" marks. Two methods are scored on the same items, so the
  per-item differences are tested (sign-flip permutation, exact for small n), and the p-values of the several
  comparisons of a column are Holm-corrected so that marking many cells does not inflate the false positives.
- ``binomial_half_width``: the normal-approximation half-width of a proportion, to size test splits in the docs.

Every random draw comes from ``np.random.default_rng(seed)``: the same call gives the same answer. Resamples are drawn
in chunks of about ``CHUNK_ELEMENTS`` values, so memory stays bounded at 100,000 items and 10,000 replicates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["binomial_half_width", "bootstrap_ci", "hierarchical_bootstrap_ci", "holm", "paired_permutation_test"]

# about this many array elements per chunk of resamples / sign patterns (a few hundred MB at most)
CHUNK_ELEMENTS = 20_000_000

Statistic = Callable[[np.ndarray], np.ndarray]


def _check_level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return level


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _as_array(values: Sequence[float] | np.ndarray, ndim: int, name: str) -> np.ndarray:
    """A float array of ``ndim`` dimensions, non-empty and NaN-free: a NaN would silently poison every replicate."""
    x = np.asarray(values, dtype=float)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty: nothing to compute an interval or test from")
    if np.isnan(x).any():
        raise ValueError(f"{name} contains NaN ({int(np.isnan(x).sum())} of {x.size} values)")
    return x


def _chunk_rows(row_elements: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, row_elements))


def _apply(statistic: Statistic | None, samples: np.ndarray) -> np.ndarray:
    """The statistic of each resample (row); the default is the mean."""
    if statistic is None:
        return samples.mean(axis=1)
    out = np.asarray(statistic(samples), dtype=float)
    if out.shape != (samples.shape[0],):
        raise ValueError(f"statistic must map a [{samples.shape[0]}, {samples.shape[1]}] array of resamples to a "
                         f"1-D array of {samples.shape[0]} values, got shape {out.shape}")
    return out


def _percentile_interval(stats: np.ndarray, level: float) -> tuple[float, float]:
    alpha = 1.0 - level
    lo, hi = np.percentile(stats, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(lo), float(hi)


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, level: float = 0.95, n_boot: int = 10_000, seed: int = 0,
                 statistic: Statistic | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (or ``statistic``) over items, i.e. over possible test sets.

    ``values``: per-item outcomes (0/1 hits, ranks, IoUs). ``statistic`` maps a [rows, n] array of resampled values
    to the ``rows`` statistics (e.g. ``lambda x: np.median(x, axis=1)`` for the median rank). The resample indices
    are drawn as ``rng.integers(0, n, size=(rows, n))`` chunk after chunk, ``rows`` about ``CHUNK_ELEMENTS / n``.
    A constant input (a single item included) gives the degenerate interval (v, v) for the default mean.
    """
    x = _as_array(values, 1, "values")
    level = _check_level(level)
    n_boot = _check_count(n_boot, "n_boot")
    if statistic is None and x.min() == x.max():  # exact: the mean of n copies of v can be off v by round-off
        return float(x[0]), float(x[0])
    n = x.size
    rng = np.random.default_rng(seed)
    rows = _chunk_rows(n)
    stats = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        m = min(rows, n_boot - start)
        idx = rng.integers(0, n, size=(m, n))
        stats[start:start + m] = _apply(statistic, x[idx])
    return _percentile_interval(stats, level)


def hierarchical_bootstrap_ci(values: Sequence[Sequence[float]] | np.ndarray, *, level: float = 0.95,
                              n_boot: int = 10_000, seed: int = 0,
                              statistic: Statistic | None = None) -> tuple[float, float]:
    """Bootstrap interval over training seeds and test items together, for methods trained with several seeds.

    ``values``: [n_seeds, n_items], the per-item outcomes of the same items under each seed. Each replicate draws
    n_seeds seeds with replacement and n_items items with replacement (the same items for every drawn seed), averages
    each drawn item over the drawn seeds and applies ``statistic`` (default: the mean) to those per-item means.
    Resampling items alone would ignore that another seed gives another model; resampling seeds alone would ignore
    that another test set gives another score. With one seed this is exactly ``bootstrap_ci(values[0], ...)``.
    """
    x = _as_array(values, 2, "values")
    level = _check_level(level)
    n_boot = _check_count(n_boot, "n_boot")
    n_seeds, n_items = x.shape
    if n_seeds == 1:
        return bootstrap_ci(x[0], level=level, n_boot=n_boot, seed=seed, statistic=statistic)
    if statistic is None and x.min() == x.max():
        return float(x.flat[0]), float(x.flat[0])
    rng = np.random.default_rng(seed)
    rows = _chunk_rows(max(n_items, n_seeds))
    stats = np.empty(n_boot)
    for start in range(0, n_boot, rows):
        m = min(rows, n_boot - start)
        seed_idx = rng.integers(0, n_seeds, size=(m, n_seeds))
        item_idx = rng.integers(0, n_items, size=(m, n_items))
        # weight of each seed in a replicate (how often it was drawn, / n_seeds): the mean over the drawn seeds of
        # every item at once, without a [m, n_seeds, n_items] array
        weights = np.zeros((m, n_seeds))
        np.add.at(weights, (np.arange(m)[:, None], seed_idx), 1.0 / n_seeds)
        seed_means = weights @ x  # [m, n_items]
        stats[start:start + m] = _apply(statistic, np.take_along_axis(seed_means, item_idx, axis=1))
    return _percentile_interval(stats, level)


def paired_permutation_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                            n_perm: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of H0: mean(a - b) = 0 for two methods scored on the same items.

    Pairing removes the item difficulty shared by both methods, so a small consistent gap is detected where two
    independent intervals would overlap. Under H0 each difference d = a - b is as likely to have either sign, so the
    null distribution is that of mean(s * d) over sign patterns s. All 2**n patterns are enumerated when
    2**n <= n_perm (p = the fraction, identity included, with |mean| >= the observed |mean|); otherwise n_perm random
    patterns give p = (1 + count) / (1 + n_perm) (Phipson & Smyth), never 0. All-zero differences give 1.0.
    """
    x = _as_array(a, 1, "a")
    y = _as_array(b, 1, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must have the same length (paired items), got {x.size} and {y.size}")
    n_perm = _check_count(n_perm, "n_perm")
    d = x - y
    if not np.any(d):
        return 1.0
    n = d.size
    # sums instead of means (same order, n times); the tolerance keeps patterns equal to the observed one up to
    # round-off (the observed pattern itself, and -1 times it) counted
    observed = abs(float(d.sum()))
    threshold = observed - 1e-12 * float(np.abs(d).sum())
    if n < 63 and 2 ** n <= n_perm:
        total = 2 ** n
        rows = _chunk_rows(n)
        bits = np.arange(n, dtype=np.int64)
        count = 0
        for start in range(0, total, rows):
            k = np.arange(start, min(start + rows, total), dtype=np.int64)
            signs = 1.0 - 2.0 * ((k[:, None] >> bits) & 1)  # pattern k: bit j set -> item j flipped
            count += int(np.count_nonzero(np.abs(signs @ d) >= threshold))
        return count / total
    rng = np.random.default_rng(seed)
    rows = _chunk_rows(n)
    count = 0
    for start in range(0, n_perm, rows):
        m = min(rows, n_perm - start)
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(m, n))
        count += int(np.count_nonzero(np.abs(signs @ d) >= threshold))
    return (1 + count) / (1 + n_perm)


def holm(pvalues: Sequence[float] | np.ndarray) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    Controls the family-wise error over the comparisons of a column (reject where adjusted p <= alpha) and is
    uniformly more powerful than Bonferroni. Step-down: the i-th smallest p (0-based) times (m - i), made monotone by
    a running maximum and capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {p.shape}")
    if p.size == 0:
        return []
    if np.isnan(p).any():
        raise ValueError("pvalues contains NaN")
    if (p < 0).any() or (p > 1).any():
        raise ValueError(f"p-values must lie in [0, 1], got min {p.min()} max {p.max()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return [float(v) for v in adjusted]


def _normal_lower_quantile(q: float) -> float:
    """z with Phi(z) = q for 0 < q <= 0.5, by bisection on math.erfc (exact to round-off; scipy is not needed)."""
    lo, hi = -40.0, 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if 0.5 * math.erfc(-mid / math.sqrt(2.0)) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15:
            break
    return 0.5 * (lo + hi)


def binomial_half_width(p: float, n: int, level: float = 0.95) -> float:
    """Half-width z * sqrt(p (1 - p) / n) of the normal-approximation interval of a proportion.

    ``p`` is a fraction in [0, 1] and so is the result (x100 for points): e.g. R@1 near 0.4 on 1,000 queries is known
    to about +-0.030, which says how large a test split must be for a gap to be visible.
    """
    p = float(p)
    if not 0.0 <= p <= 1.0 or math.isnan(p):
        raise ValueError(f"p must be a fraction in [0, 1], got {p}")
    if isinstance(n, bool) or not n > 0:
        raise ValueError(f"n must be > 0, got {n!r}")
    level = _check_level(level)
    z = -_normal_lower_quantile((1.0 - level) / 2.0)
    return z * math.sqrt(p * (1.0 - p) / n)
