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


def non_dominated(points: np.ndarray) -> np.ndarray:
    """The rows of ``points`` no other row dominates (every column maximised)."""
    keep = [
        i for i, point in enumerate(points) if not ((points >= point).all(1) & (points > point).any(1)).any()
    ]
    return points[keep]
