"""Intervals and "not significantly worse than the best" marks for the comparison table (``report.stats``).

- Interval of a cell: the 95 % percentile bootstrap of its metric over the items (the mean of the per-item
  outcomes; the median of the per-item ranks for MedR). A row folding several seeds uses the hierarchical
  bootstrap: each replicate resamples the seeds and the items, so the interval carries both the seed-to-seed and
  the test-set variation.
- Marks of a column: its best row (highest value; lowest for MedR) among the raw-score rows, and every other row
  whose paired permutation test against the best, on the items both scored and on per-item outcomes averaged over
  each row's seeds, gives p >= alpha after Holm's correction over the rows compared with the best. MedR columns are
  tested on the per-item ranks (their mean: the median of a handful of integer ranks has too coarse a permutation
  distribution to test). Rows whose item sets differ from the best's are not paired: they are marked when their
  interval reaches the best's (unpaired intervals overlap), and the footer says so. A cell without per-item
  outcomes is marked only when its displayed value equals the best's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vtp_bench.report.rows import Cell, Row
from vtp_bench.report.stats import (
    binomial_half_width,
    bootstrap_ci,
    hierarchical_bootstrap_ci,
    holm,
    paired_permutation_test,
)

LEVEL = 0.95
ALPHA = 0.05


@dataclass
class Settings:
    n_boot: int = 10_000
    n_perm: int = 10_000
    seed: int = 0


@dataclass
class Marks:
    """What the table marks, and what the footer must say about how."""

    cells: set[tuple[int, int]] = field(default_factory=set)  # (row index, column index)
    unpaired: set[str] = field(default_factory=set)  # column labels where some row was compared unpaired
    unmarked_without_items: set[str] = field(default_factory=set)  # labels of columns marked by value only
    items: dict[str, int] = field(default_factory=dict)  # column label -> number of items of its best row


def _median(x: np.ndarray) -> np.ndarray:
    return np.median(x, axis=1)


def interval(cell: Cell, settings: Settings, proportion_of: int | None = None) -> tuple[float, float] | None:
    """The cell's 95 % interval, or None without per-item outcomes. ``proportion_of``: a value without items that is
    a percentage of that many test items (a paper's reported recall) gets the binomial interval."""
    if cell.items is None:
        if proportion_of:
            h = 100 * binomial_half_width(min(max(cell.value / 100, 0.0), 1.0), proportion_of, LEVEL)
            return cell.value - h, cell.value + h
        return None
    stat = _median if cell.statistic == "median" else None
    if cell.items.shape[0] == 1:
        return bootstrap_ci(cell.items[0], level=LEVEL, n_boot=settings.n_boot, seed=settings.seed, statistic=stat)
    return hierarchical_bootstrap_ci(cell.items, level=LEVEL, n_boot=settings.n_boot, seed=settings.seed,
                                     statistic=stat)


def _rank_items(cell: Cell) -> np.ndarray:
    """Per-item outcomes averaged over the row's seeds (ranks for MedR)."""
    assert cell.items is not None
    return cell.items.mean(axis=0)


def paired_p(best: Cell, other: Cell, settings: Settings) -> float | None:
    """Two-sided p of the paired permutation test on the items both cells scored; None when their item sets
    differ (not paired)."""
    if best.items is None or other.items is None or set(best.ids or ()) != set(other.ids or ()):
        return None
    pos = {i: k for k, i in enumerate(other.ids or ())}
    order = [pos[i] for i in best.ids or ()]
    return paired_permutation_test(_rank_items(best), _rank_items(other)[order], n_perm=settings.n_perm,
                                   seed=settings.seed)


def mark_column(rows: list[Row], col: tuple, j: int, label: str, lower_is_better: bool, settings: Settings,
                marks: Marks) -> None:
    """Adds column ``j``'s marks (module doc) to ``marks``."""
    cand = [(i, r.cells[col]) for i, r in enumerate(rows) if r.rerank == "none" and not r.reference
            and col in r.cells]
    if len(cand) < 2:
        return
    pick = min if lower_is_better else max
    best_value = pick(round(c.value, 1) for _, c in cand)
    best_i, best = next((i, c) for i, c in cand if round(c.value, 1) == best_value)
    marks.cells.add((best_i, j))
    if best.items is not None:
        marks.items[label] = best.items.shape[1]
    tested: list[tuple[int, float]] = []
    for i, c in cand:
        if i == best_i:
            continue
        p = paired_p(best, c, settings)
        if p is not None:
            tested.append((i, p))
        elif best.interval is not None and c.interval is not None:
            marks.unpaired.add(label)
            reaches = c.interval[0] <= best.interval[1] if lower_is_better else c.interval[1] >= best.interval[0]
            if reaches:
                marks.cells.add((i, j))
        else:
            marks.unmarked_without_items.add(label)
            if round(c.value, 1) == best_value:
                marks.cells.add((i, j))
    for (i, _), p_adj in zip(tested, holm([p for _, p in tested])):
        if p_adj >= ALPHA:
            marks.cells.add((i, j))
