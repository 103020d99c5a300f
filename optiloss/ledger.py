"""Finished trainings kept for a rerun: the record of the stages that own no study (recheck, the
matrix, the ablation).

A :class:`RunLedger` is a plain Optuna study with two maximised values (accuracy and robustness,
metric names ``accuracy`` and ``robustness``) in which each finished training is one COMPLETE trial
carrying a :class:`~optiloss.records.TransferRunRecord`'s user attrs (``run``, ``loss``,
``augmentation``, ``seed``, ``formula``, ``source_study`` and the training record). A trial is
added only once its training has finished (``Study.add_trial``), so a process killed in the middle
leaves nothing half-written, and running the stage again trains only what is missing.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from tqdm.auto import tqdm

from optiloss.records import StudyKey, TransferRunRecord, TrialKey
from optiloss.scoring import Evaluation


@dataclass(frozen=True)
class Score:
    """What a stage reads of one training: clean accuracy and robustness."""

    accuracy: float
    robustness: float


class RunLedger:
    """The trainings of one stage, by run key (:attr:`TransferRunRecord.run`)."""

    def __init__(self, storage: BaseStorage, study_name: str, kind: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study = optuna.create_study(
                study_name=study_name,
                storage=storage,
                load_if_exists=True,
                directions=["maximize", "maximize"],
            )
            if not self.study.metric_names:
                self.study.set_metric_names(["accuracy", "robustness"])
        if self.study.user_attrs.get(StudyKey.KIND) != kind:
            self.study.set_user_attr(StudyKey.KIND, kind)
        self.finished = {
            trial.user_attrs[TrialKey.RUN]: Score(*trial.values)
            for trial in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        }

    def score(self, record: TransferRunRecord, train: Callable[[], Evaluation], precision: str) -> Score:
        """The run's score: read back when it finished before, else ``train()``ed and recorded."""
        if record.run in self.finished:
            return self.finished[record.run]
        evaluation = train()
        attrs = record.to_user_attrs() | evaluation.record(precision).to_user_attrs()
        self.study.add_trial(
            optuna.trial.create_trial(
                values=[evaluation.accuracy, evaluation.robustness],
                user_attrs=attrs,
                state=TrialState.COMPLETE,
            )
        )
        self.finished[record.run] = Score(evaluation.accuracy, evaluation.robustness)
        return self.finished[record.run]


def pending(storage: BaseStorage, study_name: str, runs: list[str]) -> list[str]:
    """The keys among ``runs`` the ledger ``study_name`` has not finished (all when it does not exist)."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return list(runs)
    done = {
        trial.user_attrs.get(TrialKey.RUN)
        for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
    }
    return [run for run in runs if run not in done]


def runs_by_loss(
    storage: BaseStorage, study_name: str, *, augmentation: str | None = None, metric: str | None = None
) -> dict[str, list[float]]:
    """Loss label -> its accuracies over seeds, in trial order, from the COMPLETE runs
    (:class:`~optiloss.records.TransferRunRecord`) of the ledger or transfer study ``study_name``;
    empty when that study does not exist.

    Each run gives its first value (the accuracy), or with ``metric`` its user attr of that name
    (e.g. ``cifar_c``), and a run without that attr is left out; with ``augmentation``, only the runs
    trained under it count."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return {}
    runs: dict[str, list[float]] = {}
    for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TransferRunRecord.from_trial(trial)
        if augmentation is not None and record.augmentation != augmentation:
            continue
        if metric is None:
            runs.setdefault(record.loss, []).append(trial.values[0])
        elif metric in trial.user_attrs:
            runs.setdefault(record.loss, []).append(trial.user_attrs[metric])
    return runs


Key = TypeVar("Key", bound=Hashable)
Trainer = tuple[Callable[[Key], Evaluation], str]
"""What a stage's ``trainer()`` returns: how to train one run by its key, and the evaluator's precision."""


def ledgered_scores(
    runs: Mapping[Key, TransferRunRecord],
    ledger: RunLedger | None,
    trainer: Callable[[], Trainer[Key]],
    *,
    description: str,
    progress: bool = True,
) -> dict[Key, Score]:
    """Every run's score, the one training loop of the stages that keep a ledger (recheck, the matrix,
    the ablation):
    read back from ``ledger`` where the run finished before, the others trained in order with a
    progress bar (``description``) and recorded in the ledger (kept nowhere without one).

    ``trainer`` is called once, and only when a run is missing: it builds what training needs (the
    data on the device, the evaluator) and returns (train one run by its key, the precision)."""
    scores = {
        key: ledger.finished[record.run]
        for key, record in runs.items()
        if ledger is not None and record.run in ledger.finished
    }
    missing = [key for key in runs if key not in scores]
    if not missing:
        return scores
    train_one, precision = trainer()
    for key in tqdm(missing, desc=description, unit="run", disable=not progress):
        train = functools.partial(train_one, key)
        scores[key] = ledger.score(runs[key], train, precision) if ledger else score_unrecorded(train)
    return scores


def score_unrecorded(train: Callable[[], Evaluation]) -> Score:
    """A training nobody keeps (a stage run without a ledger)."""
    evaluation = train()
    return Score(evaluation.accuracy, evaluation.robustness)
