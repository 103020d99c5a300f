"""One loss against cross-entropy (``optiloss evaluate``): is it better here at all?

Both are trained on the search surrogate with the same new seeds and scored on
the test split, which no search sees, with Welch's test between them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from optiloss.devices import resolve_device
from optiloss.genome import BASELINE, Genome, baseline_genome, display_name
from optiloss.genome.named import named_losses
from optiloss.scoring import RECHECK_SEED_STRIDE, Evaluation, LossEvaluator, load_data
from optiloss.settings import SearchConfig
from optiloss.statistics import ALPHA, Comparison, direction, sample_std


@dataclass(frozen=True)
class PairedRuns:
    """One loss and a reference (cross-entropy by default), trained with the same seeds and scored on
    the test split; the test between them is :attr:`comparison`, the one comparison type of the reports."""

    formula: str
    accuracies: list[float]
    baseline_accuracies: list[float]
    robustness: list[float]
    baseline_robustness: list[float]
    baseline_name: str = BASELINE
    baseline_formula: str = ""

    @property
    def comparison(self) -> Comparison:
        """The loss's accuracies against the reference's (difference of means, Welch's p: NaN with one
        seed)."""
        return Comparison.of(self.accuracies, self.baseline_accuracies, "loss", self.baseline_label)

    @property
    def p_value(self) -> float:
        """Welch's two-sided p-value of the accuracies (NaN with one seed)."""
        return self.comparison.p

    def rows(self) -> list[dict[str, Any]]:
        """Both losses' mean and spread; the given loss's row also holds the accuracy difference in
        points and Welch's p-value (None for cross-entropy, and for p without two seeds)."""
        pairs = (
            ("loss", self.accuracies, self.robustness, self.formula),
            (
                self.baseline_name,
                self.baseline_accuracies,
                self.baseline_robustness,
                self.baseline_formula or baseline_genome().formula,
            ),
        )
        difference = 100 * self.comparison.difference
        p = self.p_value
        tests: dict[str, dict[str, Any]] = {
            "loss": {"difference_points": round(difference, 2), "p_welch": None if math.isnan(p) else p},
            self.baseline_name: {"difference_points": None, "p_welch": None},
        }
        return [
            {
                "loss": label,
                "seeds": len(accuracies),
                "test_accuracy": round(statistics.mean(accuracies), 4),
                "accuracy_std": round(sample_std(accuracies), 4),
                "robustness": round(statistics.mean(robustness), 4),
                "robustness_std": round(sample_std(robustness), 4),
                **tests[label],
                "formula": formula,
            }
            for label, accuracies, robustness, formula in pairs
        ]

    @property
    def baseline_label(self) -> str:
        return display_name(self.baseline_name)

    def verdict(self) -> str:
        """One line: the difference in accuracy points, the p-value and what it means at :data:`ALPHA`."""
        comparison = self.comparison
        difference, p = 100 * comparison.difference, comparison.p
        if math.isnan(p):
            return (
                f"difference {difference:+.2f} points; no p-value with {len(self.accuracies)} seed(s) "
                "or no spread: use --seeds 3 or more"
            )
        found = direction(difference, p)
        meaning = f"{found} than" if found else "not distinguishable from"
        return (
            f"difference {difference:+.2f} points, Welch's p = {p:.3g}: {meaning} {self.baseline_label} "
            f"at the {ALPHA:g} level"
        )


def evaluate_loss(formula: str, config: SearchConfig, seeds: int = 3, *, progress: bool = True) -> PairedRuns:
    """Train ``formula`` and cross-entropy on ``config``'s surrogate with ``seeds`` seeds each (the
    same seeds for both), on the training part, and score them on the test split, which no search
    sees. A formula that does not parse or fails the screen is a :class:`UsageError`."""
    genome = named_losses({"loss": formula}, config.nodes)["loss"]
    return compare_losses(genome, baseline_genome(config.nodes), BASELINE, config, seeds, progress=progress)


def compare_losses(
    genome: Genome,
    baseline: Genome,
    baseline_name: str,
    config: SearchConfig,
    seeds: int = 3,
    *,
    progress: bool = True,
) -> PairedRuns:
    """Train ``genome`` and ``baseline`` on ``config``'s surrogate with ``seeds`` fresh seeds each (the
    same seeds for both) on the training part, and score them on the test split no search sees."""
    target = resolve_device(config.device)
    data = load_data(config, progress).to(target)
    assert config.model_width is not None  # filled from the surrogate's defaults
    evaluator = LossEvaluator(
        data, target, config, model=config.model, model_width=config.model_width, split="test", progress=False
    )
    augmentation = evaluator.augmentation(config.augmentation)
    runs: dict[str, list[Evaluation]] = {"loss": [], BASELINE: []}
    jobs = [(name, seed) for seed in range(seeds) for name in runs]
    for name, seed in tqdm(jobs, desc="training runs", unit="run", disable=not progress):
        runs[name].append(
            evaluator.evaluate(
                genome if name == "loss" else baseline,
                augmentation,
                config.seed + RECHECK_SEED_STRIDE * (seed + 1),
            )
        )
    return PairedRuns(
        genome.formula,
        [r.accuracy for r in runs["loss"]],
        [r.accuracy for r in runs[BASELINE]],
        [r.robustness for r in runs["loss"]],
        [r.robustness for r in runs[BASELINE]],
        baseline_name,
        baseline.formula,
    )
