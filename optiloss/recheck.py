"""Retraining a search's Pareto set with new seeds (``optiloss recheck``), to see which members were luck."""

from __future__ import annotations

import math
import statistics
from typing import Any

from tqdm.auto import tqdm

from optiloss.devices import resolve_device
from optiloss.errors import OptilossError
from optiloss.genome import Genome, screen, zoo
from optiloss.genome.named import named_losses
from optiloss.records import SearchTrialRecord, StudyKey
from optiloss.scoring import RECHECK_SEED_STRIDE, LossEvaluator, load_data
from optiloss.settings import SearchConfig
from optiloss.statistics import holm, sample_std, welch_p_value
from optiloss.storage import open_storage
from optiloss.studies import load_study, pareto_trials, trial_genome


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
    p_values = []
    for (number, label, genome, search_accuracy, search_robustness, formula), scores in trained:
        accuracies = [score.accuracy for score in scores]
        spread = sample_std(baseline)
        is_baseline = genome.structure_hash == cross_entropy.structure_hash
        p = math.nan if is_baseline else welch_p_value(accuracies, baseline)
        p_values.append(p)
        rows.append(
            {
                "trial": number,
                "loss": label,
                "search_accuracy": None if search_accuracy is None else round(search_accuracy, 4),
                "recheck_accuracy": round(statistics.mean(accuracies), 4),
                "recheck_std": round(sample_std(accuracies), 4),
                "vs_ce": f"{(statistics.mean(accuracies) - statistics.mean(baseline)) / spread:+.1f} sd"
                if spread > 0
                else None,
                "p_welch": None if math.isnan(p) else float(f"{p:.3g}"),
                "p_holm": None,
                "search_robustness": None if search_robustness is None else round(search_robustness, 4),
                "recheck_robustness": round(statistics.mean(s.robustness for s in scores), 4),
                "formula": formula,
            }
        )
    for row, adjusted in zip(rows, holm(p_values)):
        row["p_holm"] = None if math.isnan(adjusted) else float(f"{adjusted:.3g}")
    return rows


def recheck_verdict(rows: list[dict[str, Any]], alpha: float = 0.05) -> str:
    """One line on the rechecked losses against cross-entropy, after Holm's correction for comparing
    several losses at once (``p_holm``); only a loss below ``alpha`` there differs beyond chance."""
    compared = [row for row in rows if row["p_holm"] is not None]
    if not compared:
        return "no p-values: recheck with --seeds 3 or more (and cross-entropy's runs must spread)"
    baseline = next((row for row in rows if row["loss"] == "cross_entropy"), None)
    mean = baseline["recheck_accuracy"] if baseline else None
    differing = [row for row in compared if row["p_holm"] < alpha]
    count = f"{len(compared)} loss(es) compared with cross-entropy, Holm's correction"
    if not differing:
        smallest = min(row["p_holm"] for row in compared)
        return (
            f"{count}: none differs at p < {alpha:g} (smallest corrected p {smallest:.3g}): "
            "not better than cross-entropy here"
        )
    described = []
    for row in differing:
        name = row["loss"] or f"trial {row['trial']}"
        side = "better" if mean is not None and row["recheck_accuracy"] > mean else "worse"
        described.append(f"{name} {side} (p_holm {row['p_holm']:.3g})")
    return f"{count}: " + "; ".join(described) + " than cross-entropy"
