"""Recheck: retrain a search's Pareto set on its surrogate with new seeds, to see which members were luck."""

from __future__ import annotations

import statistics
from typing import Any

from tqdm.auto import tqdm

from optiloss.errors import OptilossError
from optiloss.evaluate import LossEvaluator, load_data, resolve_device
from optiloss.settings import SearchConfig
from optiloss.storage import open_storage
from optiloss.studies import load_study, pareto_trials, trial_genome

RECHECK_SEED_STRIDE = 7919
"""Recheck seed k is ``config.seed + 7919 * k`` (k >= 1): never a seed the search trained with."""


def recheck(study_name: str, storage_url: str | None = None, seeds: int = 3, *, device: str = "auto",
            progress: bool = True) -> list[dict[str, Any]]:
    """One row per Pareto-set member: its search scores next to the mean and spread of ``seeds``
    retrainings with the study's stored settings. Writes nothing to the storage."""
    storage = open_storage(storage_url, create=False)
    study = load_study(storage, study_name)
    if "config" not in study.user_attrs:
        raise OptilossError(f"study {study_name!r} is not an optiloss search study (no config user attr)")
    config = SearchConfig.from_mapping(study.user_attrs["config"], f"study {study_name} config")
    target = resolve_device(device)
    evaluator = LossEvaluator.for_search(config, load_data(config, progress).to(target), target)
    augmentation = evaluator.augmentation(config.augmentation)
    rows = []
    front = pareto_trials(study)
    for trial in tqdm(front, desc="rechecking the Pareto set", unit="loss", disable=not progress):
        genome = trial_genome(study, trial)
        scores = [evaluator.evaluate(genome, augmentation, config.seed + RECHECK_SEED_STRIDE * (k + 1))
                  for k in range(seeds)]
        accuracies = [score.accuracy for score in scores]
        rows.append({"trial": trial.number, "search_accuracy": round(trial.values[0], 4),
                     "recheck_accuracy": round(statistics.mean(accuracies), 4),
                     "recheck_std": round(statistics.stdev(accuracies), 4) if seeds > 1 else 0.0,
                     "search_robustness": round(trial.values[1], 4),
                     "recheck_robustness": round(statistics.mean(s.robustness for s in scores), 4),
                     "formula": trial.user_attrs.get("formula", "")})
    return rows
