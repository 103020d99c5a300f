"""Reading studies: trials, their genomes, rankings on raw values, and the workers behind RUNNING trials.

What search, transfer, matrix, recheck and the report share about a stored
study. Everything here uses Optuna's public API on plain Optuna studies.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from optiloss.errors import OptilossError
from optiloss.genome import BASELINE, Genome
from optiloss.records import SearchTrialRecord, StudyKey, TrialKey
from optiloss.statistics import non_dominated_rows, sample_std


def load_study(storage: BaseStorage, study_name: str) -> optuna.Study:
    """The study ``study_name``; a missing one is an :class:`OptilossError` listing the studies there."""
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
        raise OptilossError(
            f"no study named {study_name!r}; studies here: {', '.join(names) or 'none'}"
        ) from None


def snapshot(storage: BaseStorage, study_names: list[str]) -> optuna.storages.InMemoryStorage:
    """An in-memory copy of the studies among ``study_names`` that exist (``optuna.copy_study``), for a
    report that reads each study many times: reading a study's trials from a database costs a fraction
    of a second every time, from the copy nothing."""
    copy = optuna.storages.InMemoryStorage()
    existing = {study.study_name for study in storage.get_all_studies()}
    for name in dict.fromkeys(study_names):
        if name in existing:
            optuna.copy_study(from_study_name=name, from_storage=storage, to_storage=copy)
    return copy


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
    A single-objective study's set is its best trial(s).

    The same set as ``study.best_trials``, found without deep-copying every trial (which costs about
    a second per call on a study of a few thousand trials, and reports call this often).
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    signs = np.array([1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions])
    values = np.array([trial.values for trial in complete], dtype=float) * signs
    front = [complete[i] for i in non_dominated_rows(values)]
    return sorted(front, key=lambda trial: ([-value for value in trial.values], trial.number))


SELECTIONS = ("accuracy", "pareto")
"""How losses are chosen from a search study for transfer and the matrix (:func:`select_trials`)."""


def select_trials(study: optuna.Study, top_k: int | None, select: str = "accuracy") -> list[FrozenTrial]:
    """The ``top_k`` losses of a search study to retrain elsewhere (all of them for None), best accuracy
    first.

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


def found_and_zoo(study: optuna.Study) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """The study's losses by accuracy, one per behaviour (:func:`select_trials`), in two lists: those
    the search found itself (no zoo or given name), and the zoo's besides cross-entropy. Their heads
    are what a claim compares: the best found loss against the best known one."""
    ranked = select_trials(study, None)
    found = [trial for trial in ranked if not SearchTrialRecord.from_trial(trial).name]
    zoo = [trial for trial in ranked if trial.user_attrs.get(TrialKey.ZOO) not in (None, BASELINE)]
    return found, zoo


def trial_robustness(trial: FrozenTrial) -> float | None:
    """A search trial's robustness: its second objective, or its ``robustness`` user attr in a
    single-objective (accuracy-only) study."""
    return SearchTrialRecord.from_trial(trial).robustness


NOISE_FLOOR_ATTR = StudyKey.NOISE_FLOOR
"""Study user attr: cross-entropy's runs with extra seeds (:attr:`optiloss.records.StudyKey.NOISE_FLOOR`)."""
PREDICTION_LEVEL = 0.95
"""The prediction interval a single search run is judged with: 19 new cross-entropy runs in 20 land in it."""
TOO_WIDE = 0.5
"""A prediction interval this wide (clipped to [0, 1]) covers half of all accuracies: cross-entropy
itself does not train reliably, and no single run can be told apart from it."""


@dataclass(frozen=True)
class NoiseFloor:
    """Cross-entropy's validation accuracy over the seeds a study trained it with (its extra seeds and
    its own search trial).

    A search trial is one run with one seed, so it is judged with a prediction interval for one new
    observation (Student's t with n - 1 degrees of freedom, widened by sqrt(1 + 1/n)), not a
    confidence interval of the mean and not a fixed number of standard deviations: with three or four
    runs the spread itself is uncertain, and a fixed 2 sd calls about a fifth of cross-entropy's own new
    runs beyond the noise.
    """

    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.mean(self.accuracies)

    @property
    def std(self) -> float:
        return sample_std(list(self.accuracies))

    def spreads(self, accuracy: float) -> float | None:
        """``accuracy - mean`` in standard deviations of cross-entropy's accuracy (None without spread)."""
        return (accuracy - self.mean) / self.std if self.std > 0 else None

    def prediction_interval(self, level: float = PREDICTION_LEVEL) -> tuple[float, float]:
        """Where one new cross-entropy run lands with probability ``level`` (normal runs assumed),
        clipped to [0, 1], where accuracies lie."""
        n = len(self.accuracies)
        half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * self.std * math.sqrt(1 + 1 / n)
        return max(0.0, self.mean - half), min(1.0, self.mean + half)

    @property
    def too_wide(self) -> bool:
        """Whether cross-entropy's own runs spread so widely (:data:`TOO_WIDE`) that a single run of any
        loss cannot be told apart from them."""
        low, high = self.prediction_interval()
        return high - low >= TOO_WIDE

    def too_wide_sentence(self) -> str:
        """The one sentence a report gives instead of comparisons when :attr:`too_wide`."""
        low, high = self.prediction_interval()
        return (
            f"{self.describe()} spread too widely to tell losses apart: one new cross-entropy run lands "
            f"anywhere in {low:.4f}-{high:.4f} {round(100 * PREDICTION_LEVEL)} times in 100, so "
            "cross-entropy does not train reliably with these settings and no single run here says "
            "anything against it"
        )

    def beyond(self, accuracy: float) -> bool:
        """Whether one run's ``accuracy`` lies outside the prediction interval (never without spread)."""
        low, high = self.prediction_interval()
        return self.std > 0 and not low <= accuracy <= high

    def chance_best(self, trials: int) -> float:
        """How many standard deviations above the mean the best of ``trials`` cross-entropy runs lands on
        average, by chance alone (the expected maximum of that many normal draws, Blom's formula)."""
        if trials < 2:
            return 0.0
        return float(stats.norm.ppf((trials - 0.375) / (trials + 0.25)))

    def describe(self) -> str:
        return f"cross-entropy {self.mean:.4f} +- {self.std:.4f} over {len(self.accuracies)} seeds"


def noise_floor(study: optuna.Study) -> NoiseFloor | None:
    """Cross-entropy's runs in the study: its extra seeds (:attr:`StudyKey.NOISE_FLOOR`) and its own search
    trial; None before there are two."""
    accuracies = [run["accuracy"] for run in study.user_attrs.get(StudyKey.NOISE_FLOOR) or []]
    own = next(
        (
            trial.values[0]
            for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if trial.user_attrs.get(TrialKey.ZOO) == BASELINE and trial.values
        ),
        None,
    )
    if own is not None:
        accuracies.append(own)
    if len(accuracies) < 2:
        return None
    return NoiseFloor(tuple(accuracies))


def noise_floor_verdict(study: optuna.Study, trials: list[FrozenTrial]) -> str:
    """What ``trials``' accuracies can say against the noise floor, or how to get one: the 95 %
    prediction interval of one new cross-entropy run, the trials outside it, and how far the best of
    the study's trained losses would reach by chance, since the best is selected."""
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
    if floor.too_wide:
        return f"noise floor: {floor.too_wide_sentence()}"
    low, high = floor.prediction_interval()
    trained = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    best = floor.chance_best(trained)
    outside = [
        trial.number
        for trial in trials
        if trial.values and floor.beyond(trial.values[0]) and trial.user_attrs.get(TrialKey.ZOO) != BASELINE
    ]
    found = (
        f"trial(s) {', '.join(map(str, outside))} lie outside it"
        if outside
        else "no loss here lies outside it"
    )
    selected = (
        f", and the best of {trained} trained losses is selected: by chance alone the best of {trained} "
        f"cross-entropy runs would reach about {best:+.1f} sd ({floor.mean + best * floor.std:.4f})"
        if trained > 1
        else ""
    )
    return (
        f"noise floor: {floor.describe()}; one new cross-entropy run lands in {low:.4f}-{high:.4f} "
        f"{round(100 * PREDICTION_LEVEL)} times in 100 (prediction interval, Student's t with "
        f"{len(floor.accuracies) - 1} degrees of freedom); {found}. Each trial is one run of one seed"
        f"{selected}. Only new seeds can tell (optiloss recheck; optiloss evaluate on the test split)"
    )


SEARCH_GAP_SECONDS = 600.0
"""A pause longer than this between one worker's trials is the search stopped (and resumed later),
not time it spent: :func:`time_breakdown` leaves it out."""


@dataclass(frozen=True)
class TimeBreakdown:
    """Where a search's time went, from its trials' timestamps and training records.

    ``worker_seconds`` is each worker's time from its first trial's start to its last trial's end
    (pauses over :data:`SEARCH_GAP_SECONDS` left out), summed over workers: with one worker, the
    search's wall time. ``training_seconds`` and ``scoring_seconds`` are the trials'
    ``training_seconds`` and ``evaluation_seconds``; ``outside_seconds`` is the rest (sampling and
    screening, storage writes, model construction, checkpoints, the dashboard's plots and callbacks).
    Start-up before a run's first trial (data, corrupted copies, the noise floor) carries no trial
    timestamp and is not counted. ``wall_seconds`` is the time at least one worker ran trials.
    """

    wall_seconds: float
    worker_seconds: float
    training_seconds: float
    scoring_seconds: float
    workers: int
    trials: int

    @property
    def outside_seconds(self) -> float:
        return self.worker_seconds - self.training_seconds - self.scoring_seconds

    def share(self, seconds: float) -> float:
        """``seconds`` as a share of the workers' time (0 for a study without finished trials)."""
        return seconds / self.worker_seconds if self.worker_seconds > 0 else 0.0

    def describe(self) -> str:
        """One line: the shares inside training, inside scoring and outside both."""
        workers = f" over {self.workers} worker processes ({self.worker_seconds:.1f} s of worker time)"
        return (
            f"time: {self.wall_seconds:.1f} s running {self.trials} trials"
            + (workers if self.workers > 1 else "")
            + f"; training {self.share(self.training_seconds):.1%}, scoring "
            f"{self.share(self.scoring_seconds):.1%}, outside both {self.share(self.outside_seconds):.1%}"
        )


def _worker_of(trial: FrozenTrial) -> tuple[str, int] | None:
    worker = trial.user_attrs.get(TrialKey.WORKER)
    if isinstance(worker, dict) and "pid" in worker:
        return str(worker.get("host", "")), int(worker["pid"])
    return None


def _busy_spans(spans: list[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    """``spans`` (start, end) merged into runs, joining two when the pause between them is at most ``gap``."""
    runs: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if runs and start - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], max(runs[-1][1], end))
        else:
            runs.append((start, end))
    return runs


def time_breakdown(study: optuna.Study, gap_seconds: float = SEARCH_GAP_SECONDS) -> TimeBreakdown:
    """The share of a search's time inside training, inside scoring and outside both, from the
    finished trials' timestamps and their ``training_seconds`` / ``evaluation_seconds``
    (:class:`TimeBreakdown`). Trials without a worker record (studies made before it) count as one
    worker's."""
    finished = [
        trial
        for trial in study.get_trials(deepcopy=False)
        if trial.state.is_finished() and trial.datetime_start and trial.datetime_complete
    ]
    by_worker: dict[tuple[str, int] | None, list[tuple[float, float]]] = {}
    training = scoring = 0.0
    for trial in finished:
        assert trial.datetime_start is not None and trial.datetime_complete is not None
        span = (trial.datetime_start.timestamp(), trial.datetime_complete.timestamp())
        by_worker.setdefault(_worker_of(trial), []).append(span)
        training += float(trial.user_attrs.get(TrialKey.TRAINING_SECONDS) or 0.0)
        scoring += float(trial.user_attrs.get(TrialKey.EVALUATION_SECONDS) or 0.0)
    worker_seconds = sum(
        end - start for spans in by_worker.values() for start, end in _busy_spans(spans, gap_seconds)
    )
    every = [span for spans in by_worker.values() for span in spans]
    wall = sum(end - start for start, end in _busy_spans(every, gap_seconds))
    return TimeBreakdown(wall, worker_seconds, training, scoring, len(by_worker), len(finished))


def reason_kind(reason: str) -> str:
    """A rejection reason without its numbers, so that reasons of one kind count together
    (``duplicate of trial 12`` -> ``duplicate``, ``plateau: 40 flat steps …`` -> ``plateau``)."""
    kind = reason.split(":")[0].split("(")[0].strip()
    return "duplicate" if kind.startswith("duplicate") else kind


@dataclass(frozen=True)
class Rejections:
    """The genomes a search rejected, by reason: ``stored`` as PRUNED trials (``rejected``), and
    ``redrawn`` inside the sampler before a trial was stored (``screened_out``)."""

    stored: dict[str, int]
    redrawn: dict[str, int]

    def describe(self) -> str:
        """One line: how many of each, by reason, most frequent first."""

        def by_reason(counts: dict[str, int]) -> str:
            ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            return "; ".join(f"{reason} {count}" for reason, count in ranked)

        parts = [
            f"{sum(self.stored.values())} stored as PRUNED trials"
            + (f" ({by_reason(self.stored)})" if self.stored else ""),
            f"{sum(self.redrawn.values())} redrawn inside the sampler"
            + (f" ({by_reason(self.redrawn)})" if self.redrawn else ""),
        ]
        return "rejected genomes: " + ", ".join(parts)


def rejections(study: optuna.Study) -> Rejections:
    """The study's rejected genomes by reason (:class:`Rejections`)."""
    stored: dict[str, int] = {}
    redrawn: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        record = SearchTrialRecord.from_trial(trial)
        if trial.state == TrialState.PRUNED and record.rejected:
            kind = reason_kind(record.rejected)
            stored[kind] = stored.get(kind, 0) + 1
        for reason, count in record.screened_out.items():
            redrawn[reason] = redrawn.get(reason, 0) + int(count)
    return Rejections(stored, redrawn)
