"""Retraining losses with new seeds: a search's Pareto set (``recheck``), to see which members were luck,
and one loss against cross-entropy (``evaluate``), to see whether it is better here at all."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from optiloss.errors import OptilossError
from optiloss.evaluate import Evaluation, LossEvaluator, load_data, resolve_device, welch_p_value
from optiloss.genome import Genome, screen, zoo
from optiloss.genome.named import named_losses
from optiloss.records import SearchTrialRecord, StudyKey
from optiloss.settings import SearchConfig
from optiloss.storage import open_storage
from optiloss.studies import load_study, pareto_trials, trial_genome

RECHECK_SEED_STRIDE = 7919
"""Recheck seed k is ``config.seed + 7919 * k`` (k >= 1): never a seed the search trained with."""


def _spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def recheck(
    study_name: str,
    storage_url: str | None = None,
    seeds: int = 3,
    *,
    device: str = "auto",
    losses: dict[str, str] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per Pareto-set member, per loss of ``losses`` (name -> formula), and for cross-entropy
    (``trial`` None where the loss is no trial of the study; ``loss``: its name): the search's scores
    (None where it has none) next to the mean and spread of ``seeds`` retrainings with the study's stored
    settings, and each loss's accuracy against cross-entropy's retrained with the same seeds (``vs_ce``:
    the difference in its standard deviations; ``p_welch``). Writes nothing to the storage."""
    storage = open_storage(storage_url, create=False)
    study = load_study(storage, study_name)
    if StudyKey.CONFIG not in study.user_attrs:
        raise OptilossError(f"study {study_name!r} is not an optiloss search study (no config user attr)")
    config = SearchConfig.from_mapping(study.user_attrs[StudyKey.CONFIG], f"study {study_name} config")
    given = named_losses(losses or {}, config.nodes)
    target = resolve_device(device)
    evaluator = LossEvaluator.for_search(config, load_data(config, progress).to(target), target)
    augmentation = evaluator.augmentation(config.augmentation)
    entries: list[tuple[int | None, str, Genome, float | None, float | None, str]] = []
    for trial in pareto_trials(study):
        record = SearchTrialRecord.from_trial(trial)
        entries.append(
            (
                trial.number,
                record.name or "",
                trial_genome(study, trial),
                trial.values[0],
                record.robustness,
                record.formula,
            )
        )
    entries += [(None, name, genome, None, None, genome.formula) for name, genome in given.items()]
    cross_entropy = screen(zoo(config.nodes)["cross_entropy"]).genome
    if cross_entropy.structure_hash not in {entry[2].structure_hash for entry in entries}:
        entries.append((None, "cross_entropy", cross_entropy, None, None, cross_entropy.formula))
    trained: list[tuple[tuple, list]] = []
    for entry in tqdm(entries, desc="rechecking the Pareto set", unit="loss", disable=not progress):
        trained.append(
            (
                entry,
                [
                    evaluator.evaluate(entry[2], augmentation, config.seed + RECHECK_SEED_STRIDE * (k + 1))
                    for k in range(seeds)
                ],
            )
        )
    baseline = next(
        [score.accuracy for score in scores]
        for (_, _, genome, *_), scores in trained
        if genome.structure_hash == cross_entropy.structure_hash
    )
    rows = []
    for (number, label, _, search_accuracy, search_robustness, formula), scores in trained:
        accuracies = [score.accuracy for score in scores]
        spread = _spread(baseline)
        p = welch_p_value(accuracies, baseline)
        rows.append(
            {
                "trial": number,
                "loss": label,
                "search_accuracy": None if search_accuracy is None else round(search_accuracy, 4),
                "recheck_accuracy": round(statistics.mean(accuracies), 4),
                "recheck_std": round(_spread(accuracies), 4),
                "vs_ce": f"{(statistics.mean(accuracies) - statistics.mean(baseline)) / spread:+.1f} sd"
                if spread > 0
                else None,
                "p_welch": None if math.isnan(p) else float(f"{p:.3g}"),
                "search_robustness": None if search_robustness is None else round(search_robustness, 4),
                "recheck_robustness": round(statistics.mean(s.robustness for s in scores), 4),
                "formula": formula,
            }
        )
    return rows


@dataclass(frozen=True)
class Comparison:
    """One loss against cross-entropy, trained with the same seeds and scored on the test split."""

    formula: str
    accuracies: list[float]
    baseline_accuracies: list[float]
    robustness: list[float]
    baseline_robustness: list[float]

    @property
    def p_value(self) -> float:
        """Welch's two-sided p-value of the accuracies (NaN with one seed)."""
        return welch_p_value(self.accuracies, self.baseline_accuracies)

    def rows(self) -> list[dict[str, Any]]:
        """Both losses' mean and spread; the given loss's row also holds the accuracy difference in
        points and Welch's p-value (None for cross-entropy, and for p without two seeds)."""
        pairs = (
            ("loss", self.accuracies, self.robustness, self.formula),
            (
                "cross_entropy",
                self.baseline_accuracies,
                self.baseline_robustness,
                screen(zoo()["cross_entropy"]).genome.formula,
            ),
        )
        difference = 100 * (statistics.mean(self.accuracies) - statistics.mean(self.baseline_accuracies))
        p = self.p_value
        tests: dict[str, dict[str, Any]] = {
            "loss": {"difference_points": round(difference, 2), "p_welch": None if math.isnan(p) else p},
            "cross_entropy": {"difference_points": None, "p_welch": None},
        }
        return [
            {
                "loss": label,
                "seeds": len(accuracies),
                "test_accuracy": round(statistics.mean(accuracies), 4),
                "accuracy_std": round(_spread(accuracies), 4),
                "robustness": round(statistics.mean(robustness), 4),
                "robustness_std": round(_spread(robustness), 4),
                **tests[label],
                "formula": formula,
            }
            for label, accuracies, robustness, formula in pairs
        ]

    def verdict(self) -> str:
        """One line: the difference in accuracy points, the p-value and what it means at 0.05."""
        difference = 100 * (statistics.mean(self.accuracies) - statistics.mean(self.baseline_accuracies))
        p = self.p_value
        if math.isnan(p):
            return (
                f"difference {difference:+.2f} points; no p-value with {len(self.accuracies)} seed(s) "
                "or no spread: use --seeds 3 or more"
            )
        meaning = (
            ("better than cross-entropy" if difference > 0 else "worse than cross-entropy")
            if p < 0.05
            else "not distinguishable from cross-entropy"
        )
        return f"difference {difference:+.2f} points, Welch's p = {p:.3g}: {meaning} at the 0.05 level"


def evaluate_loss(formula: str, config: SearchConfig, seeds: int = 3, *, progress: bool = True) -> Comparison:
    """Train ``formula`` and cross-entropy on ``config``'s surrogate with ``seeds`` seeds each (the
    same seeds for both), on the training part, and score them on the test split, which no search
    sees. A formula that does not parse or fails the screen is a :class:`UsageError`."""
    genome = named_losses({"loss": formula}, config.nodes)["loss"]
    baseline = screen(zoo(config.nodes)["cross_entropy"]).genome
    target = resolve_device(config.device)
    data = load_data(config, progress).to(target)
    assert config.model_width is not None  # filled from the surrogate's defaults
    evaluator = LossEvaluator(
        data, target, config, model=config.model, model_width=config.model_width, split="test", progress=False
    )
    augmentation = evaluator.augmentation(config.augmentation)
    runs: dict[str, list[Evaluation]] = {"loss": [], "cross_entropy": []}
    jobs = [(name, seed) for seed in range(seeds) for name in runs]
    for name, seed in tqdm(jobs, desc="training runs", unit="run", disable=not progress):
        runs[name].append(
            evaluator.evaluate(
                genome if name == "loss" else baseline,
                augmentation,
                config.seed + RECHECK_SEED_STRIDE * (seed + 1),
            )
        )
    return Comparison(
        genome.formula,
        [r.accuracy for r in runs["loss"]],
        [r.accuracy for r in runs["cross_entropy"]],
        [r.robustness for r in runs["loss"]],
        [r.robustness for r in runs["cross_entropy"]],
    )
