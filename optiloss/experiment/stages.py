"""The stages of an experiment as a type.

A :class:`Stage` has a name, the studies it writes, the trainings it would do given the studies the
storage holds (:meth:`Stage.trainings`, from which its :class:`StagePlan` follows), and
:meth:`Stage.run`, which calls its floor-5 function with what the run's
:class:`~optiloss.experiment.context.RunContext` already holds. :func:`stages_of` lists an
experiment's stages in the order they run; a new kind of stage is a subclass added there.
"""

from __future__ import annotations

import statistics
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from optiloss.augment import AUGMENTATIONS
from optiloss.experiment.file import (
    ABLATION,
    MATRIX,
    RECHECK,
    SEARCH,
    Experiment,
    TransferRun,
    TransferSpec,
)
from optiloss.genome import Genome, zoo_names
from optiloss.genome.named import named_losses
from optiloss.ledger import pending
from optiloss.records import StudyKey, TrainingRecord, TransferRunRecord
from optiloss.settings import SearchConfig
from optiloss.studies import count_trials

if TYPE_CHECKING:
    from optiloss.experiment.context import RunContext


@dataclass(frozen=True)
class StagePlan:
    """What a stage still has to train: ``todo`` of ``total`` trainings (``estimated``: counted from
    what the studies hold now, the search not being finished), and seconds per training measured on
    runs already timed (None before one is)."""

    stage: str
    studies: tuple[str, ...]
    total: int
    todo: int
    estimated: bool = False
    seconds_per_training: float | None = None

    @property
    def finished(self) -> bool:
        return self.todo == 0 and not self.estimated

    def describe(self) -> str:
        about = "about " if self.estimated else ""
        if self.seconds_per_training is None:
            time = "time unknown until one training is timed"
        else:
            time = f"about {_duration(self.todo * self.seconds_per_training)}"
        if self.finished:
            return f"{self.stage}: finished ({self.total} trainings in {_studies(self.studies)})"
        return (
            f"{self.stage}: {about}{self.todo} of {about}{self.total} trainings to do, {time} "
            f"({_studies(self.studies)})"
        )


def _studies(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{len(names)} studies: {', '.join(names)}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class StudiesView:
    """The experiment's studies as a plan reads them from ``storage`` (a snapshot for a dry run or the
    page, the live storage before a stage runs, with the run's ``context``); nothing is written."""

    def __init__(
        self, experiment: Experiment, storage: BaseStorage, context: RunContext | None = None
    ) -> None:
        self.experiment = experiment
        self.storage = storage
        self.context = context

    def losses(self, formulas: Mapping[str, str]) -> dict[str, Genome]:
        """``formulas`` (name -> formula) parsed and screened in the search's nodes, in their order: by
        the run's context when the view has one (so a run parses each once), else here."""
        if self.context is not None:
            return self.context.parsed_losses(formulas)
        return named_losses(formulas, self.experiment.search.nodes)

    def load(self, name: str) -> optuna.Study | None:
        try:
            return optuna.load_study(study_name=name, storage=self.storage)
        except KeyError:
            return None

    def searched(self, name: str) -> optuna.Study | None:
        """The search study ``name`` once it holds a COMPLETE trial (losses to choose from), else None."""
        study = self.load(name)
        if study is None or not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return None
        return study

    @cached_property
    def search_finished(self) -> bool:
        """Whether every search holds its trials and its noise floor (what follows is no estimate)."""
        return all(
            self._search_done(self.experiment.search_config(augmentation))
            for augmentation in self.experiment.augmentations
        )

    def _search_done(self, config: SearchConfig) -> bool:
        name = config.resolved_study_name
        complete = count_trials(self.storage, name, (TrialState.COMPLETE,))
        study = self.load(name)
        floor = len((study.user_attrs.get(StudyKey.NOISE_FLOOR) or []) if study else [])
        return complete >= config.n_trials and floor >= config.baseline_seeds

    @cached_property
    def surrogate_seconds(self) -> float | None:
        """Seconds per training of the surrogate, from the searches and the ledgers."""
        experiment = self.experiment
        names = list(experiment.study_names().values())
        names += [experiment.recheck_ledger(augmentation) for augmentation in experiment.augmentations]
        return self.seconds([*names, experiment.matrix_ledger])

    def seconds(self, names: list[str]) -> float | None:
        """The median seconds of a training (and its scoring) among the COMPLETE trials of ``names``."""
        seconds = []
        for name in names:
            try:
                study_id = self.storage.get_study_id_from_name(name)
            except KeyError:
                continue
            for trial in self.storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,)):
                record = TrainingRecord.from_user_attrs(trial.user_attrs)
                if record is not None:
                    seconds.append(record.training_seconds + (record.evaluation_seconds or 0.0))
        return statistics.median(seconds) if seconds else None


@dataclass(frozen=True)
class Trainings:
    """What a stage would train into one study it writes: the run keys (a run is done when the study
    holds it COMPLETE), or, before the search chose the losses, only their ``estimated`` number."""

    study: str
    keys: tuple[str, ...] = ()
    estimated: int | None = None


class Stage(ABC):
    """One stage of an experiment: a name, the studies it writes, the trainings it would do, and how
    it runs. Every stage but the search needs the search's studies to exist before it runs."""

    needs_search = True

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment

    @property
    @abstractmethod
    def name(self) -> str:
        """The stage's name in the file, on the command line (``--until``, ``--only``) and the page."""

    @abstractmethod
    def studies(self) -> tuple[str, ...]:
        """The studies the stage writes its trainings into."""

    @abstractmethod
    def trainings(self, view: StudiesView) -> list[Trainings]:
        """What the stage would train given the studies ``view`` reads: one entry per study it writes."""

    def seconds_per_training(self, view: StudiesView) -> float | None:
        return view.surrogate_seconds

    def plan(self, view: StudiesView) -> StagePlan:
        """Its trainings, done and to do, read from ``view`` (estimated until the search finished)."""
        total = todo = 0
        for entry in self.trainings(view):
            if entry.estimated is not None:
                total, todo = total + entry.estimated, todo + entry.estimated
            else:
                total += len(entry.keys)
                todo += len(pending(view.storage, entry.study, list(entry.keys)))
        estimated = self.needs_search and not view.search_finished
        return StagePlan(self.name, self.studies(), total, todo, estimated, self.seconds_per_training(view))

    @abstractmethod
    def run(self, context: RunContext) -> None:
        """Train what the stage still lacks, with what ``context`` holds."""


class SearchStage(Stage):
    """One search study per augmentation (:func:`~optiloss.search.run_search`)."""

    needs_search = False

    @property
    def name(self) -> str:
        return SEARCH

    def studies(self) -> tuple[str, ...]:
        return tuple(self.experiment.study_names().values())

    def trainings(self, view: StudiesView) -> list[Trainings]:
        entries = []
        for augmentation in self.experiment.augmentations:
            config = self.experiment.search_config(augmentation)
            name = config.resolved_study_name
            study = view.load(name)
            complete = count_trials(view.storage, name, (TrialState.COMPLETE,))
            floor = len((study.user_attrs.get(StudyKey.NOISE_FLOOR) or []) if study else [])
            done = min(complete, config.n_trials) + min(floor, config.baseline_seeds)
            # a trial is no run key: the search counts them, and so does its plan
            entries.append(Trainings(name, estimated=config.n_trials + config.baseline_seeds - done))
        return entries

    def plan(self, view: StudiesView) -> StagePlan:
        total = sum(config.n_trials + config.baseline_seeds for config in self._configs())
        todo = sum(entry.estimated or 0 for entry in self.trainings(view))
        return StagePlan(self.name, self.studies(), total, todo, False, view.surrogate_seconds)

    def _configs(self) -> list[SearchConfig]:
        return [self.experiment.search_config(augmentation) for augmentation in self.experiment.augmentations]

    def run(self, context: RunContext) -> None:
        """Each search with the context's data, on the storage at ``context.storage_url`` rather than
        the context's open storage: a search opens its own from its settings (Optuna's heartbeat is
        set when a storage is opened, and only with it do trials send heartbeats and a silent one get
        failed and retried; it also waits out a database outage for the search's ``db_outage_s``),
        and with ``workers`` > 1 each worker process opens the URL itself."""
        from optiloss.search import run_search
        from optiloss.search.run import NO_HOOKS

        for config in self._configs():
            outcome = run_search(
                config,
                context.storage_url,
                progress=context.progress,
                log=context.log,
                data=context.data_on(config.device)(config),
                hooks=context.search_hooks or NO_HOOKS,
            )
            for line in outcome.given:
                context.log(f"{outcome.study_name}: {line}")


PARETO_ESTIMATE = 3
"""How many Pareto members a plan counts for a search that has not finished a trial yet."""


class RecheckStage(Stage):
    """Each search's Pareto set retrained with fresh seeds (:func:`~optiloss.recheck.recheck`), kept in
    one ledger per search."""

    @property
    def name(self) -> str:
        return RECHECK

    def studies(self) -> tuple[str, ...]:
        return tuple(
            self.experiment.recheck_ledger(augmentation) for augmentation in self.experiment.augmentations
        )

    def trainings(self, view: StudiesView) -> list[Trainings]:
        from optiloss.recheck import rechecked_losses

        experiment = self.experiment
        given = view.losses(experiment.losses)
        seeds = experiment.recheck.seeds
        entries = []
        for augmentation, name in experiment.study_names().items():
            ledger = experiment.recheck_ledger(augmentation)
            study = view.searched(name)
            if study is None:  # the Pareto set, the given losses, cross-entropy and the best zoo loss
                entries.append(Trainings(ledger, estimated=(PARETO_ESTIMATE + len(given) + 2) * seeds))
                continue
            labels = [loss.label for loss in rechecked_losses(study, given)]
            keys = [
                TransferRunRecord(label, augmentation, k, "").run for label in labels for k in range(seeds)
            ]
            entries.append(Trainings(ledger, tuple(keys)))
        return entries

    def run(self, context: RunContext) -> None:
        from optiloss.recheck import recheck

        experiment = self.experiment
        for augmentation, name in experiment.study_names().items():
            recheck(
                name,
                context.storage,
                experiment.recheck.seeds,
                device=experiment.search.device,
                losses=context.given,
                progress=context.progress,
                ledger=experiment.recheck_ledger(augmentation),
                data_for=context.data_on(experiment.search.device),
            )


class TransferStage(Stage):
    """One ``[[transfer]]`` table: a transfer study per augmentation (pooled: of every search's losses),
    :func:`~optiloss.transfer.run_transfer`."""

    def __init__(self, experiment: Experiment, spec: TransferSpec) -> None:
        super().__init__(experiment)
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def runs(self) -> list[TransferRun]:
        return self.experiment.transfer_runs(self.spec)

    def studies(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(run.study_name for run in self.runs()))

    def seconds_per_training(self, view: StudiesView) -> float | None:
        return view.seconds(list(self.studies()))

    def trainings(self, view: StudiesView) -> list[Trainings]:
        from optiloss.transfer import transfer_labels

        entries = []
        for run in self.runs():
            seeds = run.config.seeds
            given = view.losses(run.config.losses)
            sources = [view.searched(name) for name in run.sources]
            if any(source is None for source in sources):  # the zoo, top_k of each source, the given
                count = len(zoo_names(self.experiment.search.constants)) + run.config.top_k * len(sources)
                entries.append(Trainings(run.study_name, estimated=(count + len(given)) * seeds))
                continue
            labels = transfer_labels(sources, run.config.top_k, run.config.select, given)  # type: ignore[arg-type]
            keys = [
                TransferRunRecord(label, run.augmentation, seed, "").run
                for label in labels
                for seed in range(seeds)
            ]
            entries.append(Trainings(run.study_name, tuple(keys)))
        return entries

    def run(self, context: RunContext) -> None:
        from optiloss.transfer import run_transfer

        for run in self.runs():
            run_transfer(
                list(run.sources) if len(run.sources) > 1 else run.sources[0],
                run.config,
                context.storage,
                progress=context.progress,
                log=context.log,
                data_for=context.data_on(run.config.device),
                losses=context.parsed_losses(run.config.losses),
            )


class MatrixStage(Stage):
    """The losses of every search retrained under every augmentation
    (:func:`~optiloss.matrix.loss_augmentation_matrix`), kept in one ledger."""

    @property
    def name(self) -> str:
        return MATRIX

    def studies(self) -> tuple[str, ...]:
        return (self.experiment.matrix_ledger,)

    def trainings(self, view: StudiesView) -> list[Trainings]:
        from optiloss.matrix import matrix_losses

        experiment, settings = self.experiment, self.experiment.matrix
        given = view.losses(experiment.losses)
        studies = {
            augmentation: view.searched(name) for augmentation, name in experiment.study_names().items()
        }
        per_loss = len(AUGMENTATIONS) * settings.seeds
        if any(study is None for study in studies.values()):  # cross-entropy, top_k of each, the given
            count = 1 + settings.top_k * len(studies) + len(given)
            return [Trainings(experiment.matrix_ledger, estimated=count * per_loss)]
        labels = matrix_losses(studies, settings.top_k, settings.select, given)  # type: ignore[arg-type]
        keys = [
            TransferRunRecord(label, augmentation, seed, "").run
            for label in labels
            for augmentation in AUGMENTATIONS
            for seed in range(settings.seeds)
        ]
        return [Trainings(experiment.matrix_ledger, tuple(keys))]

    def run(self, context: RunContext) -> None:
        from optiloss.matrix import loss_augmentation_matrix

        experiment, settings = self.experiment, self.experiment.matrix
        loss_augmentation_matrix(
            None,
            context.storage,
            top_k=settings.top_k,
            seeds=settings.seeds,
            device=experiment.search.device,
            select=settings.select,
            losses=context.given,
            progress=context.progress,
            study_names=experiment.study_names(),
            ledger=experiment.matrix_ledger,
            split=settings.split,
            data_for=context.data_on(experiment.search.device),
        )


class AblationStage(Stage):
    """Each search's best loss of its own ablated with fresh seeds (:func:`~optiloss.ablate.ablate_best`),
    kept in one ledger per search."""

    @property
    def name(self) -> str:
        return ABLATION

    def studies(self) -> tuple[str, ...]:
        return tuple(
            self.experiment.ablation_ledger(augmentation) for augmentation in self.experiment.augmentations
        )

    def trainings(self, view: StudiesView) -> list[Trainings]:
        from optiloss.ablate import planned_runs

        experiment = self.experiment
        return [
            Trainings(
                experiment.ablation_ledger(augmentation),
                tuple(planned_runs(view.load(name), augmentation, experiment.ablation.seeds)),
            )
            for augmentation, name in experiment.study_names().items()
        ]

    def run(self, context: RunContext) -> None:
        from optiloss.ablate import ablate_best

        experiment = self.experiment
        for augmentation, name in experiment.study_names().items():
            ablation = ablate_best(
                name,
                context.storage,
                experiment.ablation.seeds,
                ledger=experiment.ablation_ledger(augmentation),
                device=experiment.search.device,
                progress=context.progress,
                data_for=context.data_on(experiment.search.device),
            )
            if ablation is None:
                context.log(f"{name}: no loss of its own to ablate")


def stages_of(experiment: Experiment) -> list[Stage]:
    """The stages of ``experiment`` in the order they run: the search, the recheck (with seeds), one
    per ``[[transfer]]`` table, the matrix (with seeds), the ablation (with seeds)."""
    stages: list[Stage] = [SearchStage(experiment)]
    if experiment.recheck.seeds:
        stages.append(RecheckStage(experiment))
    stages += [TransferStage(experiment, spec) for spec in experiment.transfers]
    if experiment.matrix.seeds:
        stages.append(MatrixStage(experiment))
    if experiment.ablation.seeds:
        stages.append(AblationStage(experiment))
    return stages
