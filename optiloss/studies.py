"""Reading studies: trials, their genomes, rankings on raw values, and the workers behind RUNNING trials.

What search, transfer, matrix, recheck and the report share about a stored
study. Everything here uses Optuna's public API on plain Optuna studies.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from optiloss.errors import OptilossError
from optiloss.genome import Genome
from optiloss.records import SearchTrialRecord, StudyKey, TrialKey


def load_study(storage: BaseStorage, study_name: str) -> optuna.Study:
    """The study ``study_name``; a missing one is an :class:`OptilossError` listing the studies there."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
        raise OptilossError(
            f"no study named {study_name!r}; studies here: {', '.join(names) or 'none'}"
        ) from None


def count_trials(storage: BaseStorage, study_name: str, states: tuple[TrialState, ...] | None = None) -> int:
    """Trials of ``study_name`` in ``states`` (all if None); 0 when the study does not exist."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False, states=states))


def get_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial ``number``; a missing one is an :class:`OptilossError` naming the range."""
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise OptilossError(f"study {study.study_name!r} has no trial {number} (trials 0-{len(trials) - 1})")
    return trials[number]


def trial_genome(study: optuna.Study, trial: FrozenTrial) -> Genome:
    """The oriented genome a search trial trained, decoded from its parameters."""
    try:
        genome = Genome.from_params(trial.params, study.user_attrs.get(StudyKey.NODES))
    except ValueError as error:
        raise OptilossError(f"trial {trial.number} does not hold a loss genome ({error})") from None
    return genome.with_orientation(SearchTrialRecord.from_trial(trial).negated)


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto set, ordered on the raw objective values (first objective first), then trial number.
    A single-objective study's set is its best trial(s)."""
    return sorted(study.best_trials, key=lambda trial: ([-value for value in trial.values], trial.number))


SELECTIONS = ("accuracy", "pareto")
"""How losses are chosen from a search study for transfer and the matrix (:func:`select_trials`)."""


def select_trials(study: optuna.Study, top_k: int, select: str = "accuracy") -> list[FrozenTrial]:
    """The ``top_k`` losses of a search study to retrain elsewhere, best accuracy first.

    ``accuracy``: the COMPLETE trials of highest accuracy, one per behavioural fingerprint (the
    first trial of each); ``pareto``: the Pareto set by accuracy, so a loss that is second on
    accuracy is dropped when another beats it on robustness. Diverged trials are never chosen.
    """
    if select == "pareto":
        return [trial for trial in pareto_trials(study) if TrialKey.DIVERGED not in trial.user_attrs][:top_k]
    if select != "accuracy":
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ranked = sorted(
        (trial for trial in complete if TrialKey.DIVERGED not in trial.user_attrs),
        key=lambda trial: (-trial.values[0], trial.number),
    )
    chosen: list[FrozenTrial] = []
    seen: set[str] = set()
    for trial in ranked:
        fingerprint = trial.user_attrs.get(TrialKey.FINGERPRINT) or f"trial {trial.number}"
        if fingerprint not in seen:
            seen.add(fingerprint)
            chosen.append(trial)
        if len(chosen) == top_k:
            break
    return chosen


def trial_robustness(trial: FrozenTrial) -> float | None:
    """A search trial's robustness: its second objective, or its ``robustness`` user attr in a
    single-objective (accuracy-only) study."""
    return SearchTrialRecord.from_trial(trial).robustness


def trial_label(trial: FrozenTrial) -> str:
    """How reports name a search trial's loss: its zoo or given name, else ``trial_<number>``."""
    return SearchTrialRecord.from_trial(trial).label()


NOISE_FLOOR_ATTR = StudyKey.NOISE_FLOOR
"""Study user attr: cross-entropy's runs with extra seeds (:attr:`optiloss.records.StudyKey.NOISE_FLOOR`)."""
BEYOND_NOISE = 2.0
"""A difference from cross-entropy counts as beyond its noise at more than this many standard deviations."""


@dataclass(frozen=True)
class NoiseFloor:
    """Cross-entropy's validation accuracy over the seeds a study trained it with."""

    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.mean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def spreads(self, accuracy: float) -> float | None:
        """``accuracy - mean`` in standard deviations of cross-entropy's accuracy (None without spread)."""
        return (accuracy - self.mean) / self.std if self.std > 0 else None

    def beyond(self, accuracy: float) -> bool:
        spreads = self.spreads(accuracy)
        return spreads is not None and abs(spreads) > BEYOND_NOISE

    def describe(self) -> str:
        return f"cross-entropy {self.mean:.4f} +- {self.std:.4f} over {len(self.accuracies)} seeds"


def noise_floor(study: optuna.Study) -> NoiseFloor | None:
    """The study's cross-entropy seed runs (:data:`NOISE_FLOOR_ATTR`), or None before there are two."""
    runs = study.user_attrs.get(NOISE_FLOOR_ATTR) or []
    if len(runs) < 2:
        return None
    return NoiseFloor(tuple(run["accuracy"] for run in runs))


def noise_floor_verdict(study: optuna.Study, trials: list[FrozenTrial]) -> str:
    """One sentence on ``trials``' accuracies against the noise floor, or how to get one."""
    floor = noise_floor(study)
    if floor is None:
        return (
            "no noise floor yet: cross-entropy has not been trained with several seeds in this study "
            "(set baseline_seeds and run the search again)"
        )
    if floor.std == 0:
        return (
            f"noise floor: {floor.describe()}, the same accuracy every time: no spread to measure the "
            "differences against (optiloss recheck retrains the front and cross-entropy with new seeds)"
        )
    beyond = [
        trial.number
        for trial in trials
        if trial.values
        and floor.beyond(trial.values[0])
        and trial.user_attrs.get(TrialKey.ZOO) != "cross_entropy"
    ]
    if not beyond:
        return (
            f"noise floor: {floor.describe()}; no loss here differs from it by more than "
            f"{BEYOND_NOISE:g} standard deviations: these differences are inside the noise"
        )
    return (
        f"noise floor: {floor.describe()}; trial(s) {', '.join(map(str, beyond))} differ by more than "
        f"{BEYOND_NOISE:g} standard deviations (one search seed each: confirm with optiloss recheck)"
    )
