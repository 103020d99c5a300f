"""The noise floor of a study: cross-entropy trained with several extra seeds before the search.

Every trial of a search trains with one seed, so a loss one validation image
ahead of cross-entropy may be luck. Generation 0 therefore also trains
cross-entropy with ``config.baseline_seeds`` more seeds; each run is stored in
the study user attr :attr:`~optiloss.records.StudyKey.NOISE_FLOOR` as soon as it
finishes, so a restart trains only the missing ones. These runs are not trials:
no sampler sees them and they use none of the budget. Reports state each
loss's accuracy difference from cross-entropy in units of its spread.
"""

from __future__ import annotations

import optuna
from tqdm.auto import tqdm

from optiloss.genome import baseline_genome
from optiloss.records import StudyKey
from optiloss.scoring import LossEvaluator
from optiloss.settings import SearchConfig

NOISE_FLOOR_SEED_STRIDE = 104729
"""Noise-floor seed k is ``config.seed + 104729 * k`` (k >= 1): neither the search's seed nor recheck's."""


def train_noise_floor(
    study: optuna.Study, config: SearchConfig, evaluator: LossEvaluator, progress: bool = True
) -> int:
    """Train cross-entropy with each of ``config.baseline_seeds`` seeds not yet in the study; returns how
    many runs were trained. ``evaluator`` is the search's own (:meth:`LossEvaluator.for_search`)."""
    runs = list(study.user_attrs.get(StudyKey.NOISE_FLOOR) or [])
    done = {run["seed"] for run in runs}
    seeds = [config.seed + NOISE_FLOOR_SEED_STRIDE * k for k in range(1, config.baseline_seeds + 1)]
    missing = [seed for seed in seeds if seed not in done]
    if not missing:
        return 0
    augmentation = evaluator.augmentation(config.augmentation)
    cross_entropy = baseline_genome(config.nodes)
    for seed in tqdm(missing, desc="cross-entropy noise floor", unit="seed", disable=not progress):
        result = evaluator.evaluate(cross_entropy, augmentation, seed)
        runs.append({"seed": seed, "accuracy": result.accuracy, "robustness": result.robustness})
        study.set_user_attr(StudyKey.NOISE_FLOOR, runs)
    return len(missing)
