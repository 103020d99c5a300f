"""Statistics for comparing losses: one place for the tests every report uses."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
"""The level at which every report says a loss is better or worse than another (page, evaluate, recheck)."""


def significant(p: float, alpha: float = ALPHA) -> bool:
    """Whether ``p`` shows a difference at ``alpha``; NaN (too few seeds, no spread) never does."""
    return not math.isnan(p) and p < alpha


def direction(difference: float, p: float, alpha: float = ALPHA) -> str | None:
    """``"better"`` or ``"worse"`` (by the sign of ``difference``) where ``p`` is :func:`significant`,
    else None: the one rule behind every verdict."""
    if not significant(p, alpha) or difference == 0:
        return None
    return "better" if difference > 0 else "worse"


@dataclass
class Comparison:
    """A loss's accuracies over fresh seeds against a reference's: difference of means and Welch's p."""

    name: str
    mean: float
    std: float
    seeds: int
    reference: str
    reference_mean: float
    p: float

    @classmethod
    def of(cls, values: list[float], baseline: list[float], name: str, reference: str) -> Comparison:
        """``values`` (of the loss ``name``) against ``baseline`` (of ``reference``, as prose names it)."""
        return cls(
            name,
            statistics.mean(values),
            sample_std(values),
            len(values),
            reference,
            statistics.mean(baseline),
            welch_p_value(values, baseline),
        )

    @property
    def difference(self) -> float:
        return self.mean - self.reference_mean

    @property
    def better(self) -> bool:
        return direction(self.difference, self.p) == "better"

    def verdict(self) -> str:
        """``better than X``, ``worse than X`` (both at p < :data:`ALPHA`) or ``not shown better than X``."""
        found = direction(self.difference, self.p)
        return f"{found} than {self.reference}" if found else f"not shown better than {self.reference}"

    def describe(self) -> str:
        p = "no p-value (too few seeds or no spread)" if math.isnan(self.p) else f"Welch's p {self.p:.3g}"
        return (
            f"{self.mean:.4f} ± {self.std:.4f} against {self.reference}'s {self.reference_mean:.4f} "
            f"({self.difference:+.4f}, {p}, {self.seeds} seeds)"
        )


def sample_std(values: list[float]) -> float:
    """The sample standard deviation, 0.0 for fewer than two values."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def welch_p_value(values: list[float], baseline: list[float]) -> float:
    """Two-sided Welch's t-test p-value of ``values`` against ``baseline``; NaN with fewer than two
    values on a side or no spread on either."""
    if len(values) < 2 or len(baseline) < 2 or (np.std(values) == 0 and np.std(baseline) == 0):
        return float("nan")
    with warnings.catch_warnings():  # nearly equal runs: scipy warns of precision, the p-value stands
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(values, baseline, equal_var=False).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` for multiple comparisons (family-wise error): the
    i-th smallest of m is multiplied by m - i + 1, kept monotone and capped at 1. NaN entries stay
    NaN and do not count as comparisons."""
    tested = sorted((p, index) for index, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[index] = running
    return adjusted


HYPERVOLUME_REFERENCE = (0.0, 0.0)
"""Where hypervolume is measured from: accuracy and robustness both start at zero."""


def hypervolume(
    points: Sequence[Sequence[float]], reference: Sequence[float] = HYPERVOLUME_REFERENCE
) -> float:
    """Area dominated by 2-D maximisation points and bounded below by ``reference``.

    Points not above the reference in both objectives add nothing.
    """
    area, covered_y = 0.0, reference[1]
    for x, y in sorted(((x, y) for x, y in points), key=lambda point: -point[0]):
        if x > reference[0] and y > covered_y:
            area += (x - reference[0]) * (y - covered_y)
            covered_y = y
    return area


_DOMINANCE_CHUNK = 1024
"""Rows compared with all others at once (bounds the memory to chunk x rows x columns)."""


def non_dominated_rows(points: np.ndarray) -> list[int]:
    """The indices, in order, of the rows of ``points`` no other row dominates (every column
    maximised: a row is dominated when another is at least as large everywhere and larger somewhere)."""
    rows: np.ndarray = np.asarray(points, dtype=np.float64)
    if rows.ndim == 2 and rows.shape[1] == 2:
        return _non_dominated_rows_2d(rows)
    dominated = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), _DOMINANCE_CHUNK):
        chunk = rows[start : start + _DOMINANCE_CHUNK, None, :]
        no_worse = np.all(rows[None, :, :] >= chunk, axis=2)
        better = np.any(rows[None, :, :] > chunk, axis=2)
        dominated[start : start + _DOMINANCE_CHUNK] = np.any(no_worse & better, axis=1)
    return [int(i) for i in np.flatnonzero(~dominated)]


def _non_dominated_rows_2d(rows: np.ndarray) -> list[int]:
    """:func:`non_dominated_rows` for two columns in one sort: a row is kept when its second value is
    the largest among the rows sharing its first value and larger than every second value of the rows
    whose first value is larger."""
    order = np.lexsort((-rows[:, 1], -rows[:, 0]))  # first column descending, ties by the second
    keep: list[int] = []
    best_above, start = -np.inf, 0
    while start < len(order):
        end = start
        while end < len(order) and rows[order[end], 0] == rows[order[start], 0]:
            end += 1
        group_best = rows[order[start], 1]
        if group_best > best_above:
            keep.extend(int(i) for i in order[start:end] if rows[i, 1] == group_best)
        best_above = max(best_above, group_best)
        start = end
    return sorted(keep)


def non_dominated(points: np.ndarray) -> np.ndarray:
    """The rows of ``points`` no other row dominates (every column maximised)."""
    return points[non_dominated_rows(points)]
