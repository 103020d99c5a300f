"""The loss x augmentation matrix: does the best loss depend on the augmentation?

Takes the best losses of the augmentation studies named (plus
cross-entropy), retrains every one of them under every augmentation with
fresh seeds, and tabulates accuracy (mean and standard deviation) on the test
split, which no search selected on (the validation split on request, labelled
as such: the searches chose their losses there, so it flatters them). This
measures the paper's central claim with the tool itself.

The studies are chosen explicitly, by names or by a prefix (``{prefix}-{augmentation}``),
never by the data set alone, and must share their training settings: every cell
is trained with them.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from optiloss.augment import AUGMENTATIONS
from optiloss.devices import resolve_device
from optiloss.errors import UsageError
from optiloss.genome import BASELINE, Genome, baseline_genome
from optiloss.genome.named import named_losses
from optiloss.ledger import RunLedger, Trainer, ledgered_scores
from optiloss.records import SearchTrialRecord, StudyKey, TransferRunRecord
from optiloss.scoring import RECHECK_SEED_STRIDE, DataFor, Evaluation, LossEvaluator, loader
from optiloss.settings import MATRIX_SPLITS, TRAINING_KEYS, MatrixSettings, SearchConfig, training_differences
from optiloss.storage import storage_from
from optiloss.studies import load_study, select_trials, trial_genome

SPLITS = MATRIX_SPLITS
SPLIT_WORDS = {
    "test": "the test split, which no search selected on",
    "val": "the validation split, on which the searches selected these losses (so it flatters them)",
}


NOT_RUN = "not run"
"""A matrix cell with no finished run yet."""


@dataclass
class MatrixResult:
    """Accuracies per (loss label, augmentation), one value per seed, on ``split``."""

    dataset: str
    losses: dict[str, str]  # label -> formula
    augmentations: tuple[str, ...]
    accuracies: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    split: str = "test"
    studies: tuple[str, ...] = ()

    def describe(self) -> str:
        """One sentence: which studies' losses, and on which split the accuracies were measured."""
        where = f" of {', '.join(self.studies)}" if self.studies else ""
        return f"Accuracy on {SPLIT_WORDS[self.split]}; losses{where} and cross-entropy, with fresh seeds."

    @property
    def split_name(self) -> str:
        """The split as a title names it: ``test`` or ``validation``."""
        return {"test": "test", "val": "validation"}.get(self.split, self.split)

    def means(self) -> np.ndarray:
        """Mean accuracy per cell: a row per loss (in :attr:`losses`' order), a column per augmentation
        (in :attr:`augmentations`' order), NaN where a cell has no run."""
        return np.array(
            [
                [
                    statistics.mean(self.accuracies[(label, augmentation)])
                    if (label, augmentation) in self.accuracies
                    else np.nan
                    for augmentation in self.augmentations
                ]
                for label in self.losses
            ]
        )

    def cell(self, loss: str, augmentation: str) -> str:
        """The cell's mean and spread over seeds, ``not run`` where it has no run (a matrix stopped
        part-way)."""
        values = self.accuracies.get((loss, augmentation))
        if not values:
            return NOT_RUN
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} +- {spread:.4f}"

    def rows(self) -> list[dict[str, str]]:
        return [
            {
                "loss": label,
                **{augmentation: self.cell(label, augmentation) for augmentation in self.augmentations},
                "formula": formula,
            }
            for label, formula in self.losses.items()
        ]


def read_matrix(
    storage: BaseStorage, ledger_name: str, dataset: str, split: str, studies: tuple[str, ...]
) -> MatrixResult | None:
    """The matrix as its ledger ``ledger_name`` holds it, for a report: each COMPLETE run's accuracy by
    (loss, augmentation), the losses in the order of their first run, the augmentations with a run in
    :data:`~optiloss.augment.AUGMENTATIONS`' order; ``dataset``, ``split`` and ``studies`` are taken
    as given. None when the ledger does not exist or holds no finished run. Nothing is trained or
    written."""
    try:
        study_id = storage.get_study_id_from_name(ledger_name)
    except KeyError:
        return None
    result = MatrixResult(dataset, {}, (), split=split, studies=studies)
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TransferRunRecord.from_trial(trial)
        result.losses.setdefault(record.loss, record.formula)
        result.accuracies.setdefault((record.loss, record.augmentation), []).append(trial.values[0])
    if not result.losses:
        return None
    trained = {augmentation for _, augmentation in result.accuracies}
    result.augmentations = tuple(augmentation for augmentation in AUGMENTATIONS if augmentation in trained)
    return result


def _search_studies(storage: BaseStorage) -> dict[str, str]:
    """Study name -> augmentation of every search study in ``storage``."""
    return {
        summary.study_name: summary.user_attrs[StudyKey.AUGMENTATION]
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)
        if summary.user_attrs.get(StudyKey.AUGMENTATION) in AUGMENTATIONS
    }


def select_studies(
    storage: BaseStorage, *, prefix: str | None = None, names: Sequence[str] | None = None
) -> dict[str, optuna.Study]:
    """Augmentation -> search study: the studies ``names``, or ``{prefix}-{augmentation}`` for each
    augmentation that has one. A name that is no search study, two studies of one augmentation, or
    nothing found is a :class:`UsageError` listing the search studies there are."""
    searches = _search_studies(storage)
    known = ", ".join(sorted(searches)) or "none"
    if names:
        chosen: dict[str, str] = {}
        for name in names:
            if name not in searches:
                raise UsageError(f"{name!r} is no search study in this storage; the search studies: {known}")
            augmentation = searches[name]
            if augmentation in chosen:
                raise UsageError(
                    f"studies {chosen[augmentation]!r} and {name!r} are both {augmentation} searches: "
                    "name one study per augmentation"
                )
            chosen[augmentation] = name
    else:
        chosen = {
            augmentation: f"{prefix}-{augmentation}"
            for augmentation in AUGMENTATIONS
            if searches.get(f"{prefix}-{augmentation}") == augmentation
        }
        if not chosen:
            raise UsageError(
                f"no search study named {prefix}-{{{','.join(AUGMENTATIONS)}}} in this storage; "
                f"the search studies: {known}"
            )
    return {
        augmentation: optuna.load_study(study_name=chosen[augmentation], storage=storage)
        for augmentation in AUGMENTATIONS
        if augmentation in chosen
    }


_SHARED_KEYS = tuple(key for key in TRAINING_KEYS if key != "seed")
"""What every cell trains with; the searches' seed may differ (the cells have seeds of their own)."""


def shared_config(studies: dict[str, optuna.Study]) -> SearchConfig:
    """The training settings every cell of the matrix uses: those of the studies, which must agree in
    data set, surrogate and every training key but the seed (:data:`~optiloss.settings.TRAINING_KEYS`); mixed
    settings are a :class:`UsageError` naming the key, two studies and their values."""
    first = next(iter(studies.values()))
    config = SearchConfig.from_mapping(first.user_attrs[StudyKey.CONFIG], f"study {first.study_name} config")
    for study in list(studies.values())[1:]:
        stored = study.user_attrs.get(StudyKey.CONFIG) or {}
        different = [
            (key, before, now)
            for key, before, now in training_differences(stored, config)
            if key in _SHARED_KEYS
        ]
        different += [
            (key, stored[key], getattr(config, key))
            for key in ("dataset", "model")
            if key in stored and stored[key] != getattr(config, key)
        ]
        if different:
            raise UsageError(
                f"the matrix trains every cell with one setting, and studies {first.study_name!r} and "
                f"{study.study_name!r} differ: "
                + ", ".join(f"{key} {now!r} and {before!r}" for key, before, now in different)
                + "; choose studies made with the same settings"
            )
    return config


def matrix_losses(
    studies: dict[str, optuna.Study], top_k: int, select: str, given: dict[str, Genome]
) -> dict[str, Genome]:
    """Cross-entropy, the top-k of each study (:func:`~optiloss.studies.select_trials`) and the
    ``given`` losses; a loss whose structure is already chosen is dropped."""
    chosen: dict[str, Genome] = {BASELINE: baseline_genome()}
    seen = {chosen[BASELINE].structure_hash}
    for augmentation, study in studies.items():
        taken = 0
        for trial in select_trials(study, top_k + len(seen), select):  # enough to skip the seen ones
            genome = trial_genome(study, trial)
            if genome.structure_hash in seen:
                continue
            seen.add(genome.structure_hash)
            chosen[SearchTrialRecord.from_trial(trial).label(matrix_augmentation=augmentation)] = genome
            taken += 1
            if taken == top_k:
                break
    for name, genome in given.items():
        if genome.structure_hash not in seen:
            seen.add(genome.structure_hash)
            chosen[name] = genome
    return chosen


def loss_augmentation_matrix(
    prefix: str | None = None,
    storage_url: str | BaseStorage | None = None,
    *,
    top_k: int = MatrixSettings.top_k,
    seeds: int = MatrixSettings.seeds,
    device: str = "auto",
    select: str = MatrixSettings.select,
    losses: Mapping[str, str] | Mapping[str, Genome] | None = None,
    progress: bool = True,
    study_names: dict[str, str] | Sequence[str] | None = None,
    ledger: str | None = None,
    split: str = MatrixSettings.split,
    data_for: DataFor | None = None,
) -> MatrixResult:
    """Retrain the best losses of the augmentation studies ``{prefix}-{augmentation}`` (or the
    studies ``study_names``: names, or augmentation -> name), and ``losses`` (name -> formula), under
    every augmentation, and score them on ``split`` (:data:`SPLITS`).

    Training settings come from the studies' stored config, which must agree (:func:`shared_config`).
    Cell seeds are fresh: none is the seed a search trained its trials with.
    With ``ledger``, each finished training is kept in the :class:`~optiloss.ledger.RunLedger` study
    of that name and a rerun trains only the runs that did not finish; without it nothing is written.
    Raises :class:`UsageError` when no study matches or their settings are mixed.
    ``storage_url`` may be a storage already open, ``losses`` genomes already parsed
    (:func:`~optiloss.genome.named.named_losses`), and ``data_for`` where the data come from (default
    :func:`~optiloss.scoring.load_data`): an experiment run hands down what it holds.
    """
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    storage = storage_from(storage_url)
    if isinstance(study_names, Mapping):
        studies = {augmentation: load_study(storage, name) for augmentation, name in study_names.items()}
    else:
        studies = select_studies(storage, prefix=prefix, names=study_names)
    config = shared_config(studies)
    chosen = matrix_losses(studies, top_k, select, named_losses(losses or {}, config.nodes))
    result = MatrixResult(
        config.dataset,
        {label: genome.formula for label, genome in chosen.items()},
        AUGMENTATIONS,
        split=split,
        studies=tuple(study.study_name for study in studies.values()),
    )
    runs = {
        (label, augmentation, seed): TransferRunRecord(label, augmentation, seed, chosen[label].formula)
        for label in chosen
        for augmentation in AUGMENTATIONS
        for seed in range(seeds)
    }
    kept = RunLedger(storage, ledger, "matrix") if ledger else None

    def trainer() -> Trainer[tuple[str, str, int]]:
        target = resolve_device(device)
        assert config.model_width is not None  # filled from the surrogate's defaults
        evaluator = LossEvaluator(
            (data_for or loader(progress))(config).to(target),
            target,
            config,
            model=config.model,
            model_width=config.model_width,
            split=split,
        )
        pipelines = {augmentation: evaluator.augmentation(augmentation) for augmentation in AUGMENTATIONS}

        def train(key: tuple[str, str, int]) -> Evaluation:
            label, augmentation, seed = key
            fresh = config.seed + RECHECK_SEED_STRIDE * (seed + 1)  # never the searches' own seed
            return evaluator.evaluate(chosen[label], pipelines[augmentation], fresh)

        return train, evaluator.precision

    scores = ledgered_scores(runs, kept, trainer, description="matrix runs", progress=progress)
    for label, augmentation, seed in runs:
        result.accuracies.setdefault((label, augmentation), []).append(
            scores[(label, augmentation, seed)].accuracy
        )
    return result
