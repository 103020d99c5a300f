"""The paper's whole experiment as one resumable run: ``optiloss experiment EXPERIMENT.toml``.

An experiment file names the search (a study TOML, ``[search] file``, or its keys inline) and its
augmentations, recheck seeds, one or more transfer stages, the matrix and the losses given by hand.
:func:`run_experiment` runs the stages in order, each one the existing library function on the
existing plain Optuna studies:

- ``search``: :func:`~optiloss.search.run_search`, one study ``{name}-{augmentation}`` each;
- ``recheck``: :func:`~optiloss.recheck.recheck` of each study, its trainings kept in the ledger
  study ``{name}-{augmentation}-recheck`` (:mod:`optiloss.ledger`);
- one stage per ``[[transfer]]`` table, named by its ``name``:
  :func:`~optiloss.transfer.run_transfer` of each augmentation's study under that augmentation
  (``pooled = true``: of all studies' losses pooled, under each augmentation);
- ``matrix``: :func:`~optiloss.matrix.loss_augmentation_matrix` of the studies, scored on the test
  split (``[matrix] split``), kept in the ledger ``{name}-matrix-{split}``.

Every stage trains only what its studies do not hold yet, so running the command again after a stop
(Ctrl-C, kill -9, a lost machine) continues where it stopped; a finished stage says so in one line.
The report page (:mod:`optiloss.report.page`) is written from the studies alone.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from optiloss.augment import AUGMENTATIONS
from optiloss.errors import OptilossError, UsageError
from optiloss.genome import BASELINE, zoo_names
from optiloss.genome.named import named_losses
from optiloss.ledger import pending
from optiloss.records import StudyKey, TrainingRecord, TransferRunRecord, loss_label
from optiloss.settings import (
    SELECTIONS,
    SearchConfig,
    Settings,
    TransferConfig,
    check_losses,
    read_toml,
    setting,
)
from optiloss.storage import open_storage, resolve_storage_url, sqlite_path
from optiloss.studies import count_trials, snapshot
from optiloss.transfer import transfer_study_name

SEARCH = "search"
RECHECK = "recheck"
MATRIX = "matrix"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TOP_KEYS = ("name", "search", "recheck", "transfer", "matrix", "losses")
_STAGE_KEYS = ("name", "file", "augmentations", "pooled")


@dataclass(frozen=True)
class RecheckSettings(Settings):
    """The ``[recheck]`` table."""

    seeds: int = setting(3, limits=(0, 100), help="fresh seeds per rechecked loss (0: no recheck stage)")


@dataclass(frozen=True)
class MatrixSettings(Settings):
    """The ``[matrix]`` table."""

    seeds: int = setting(2, limits=(0, 100), help="seeds per loss and augmentation (0: no matrix stage)")
    top_k: int = setting(1, limits=(1, None), help="best losses taken from each augmentation study")
    select: str = setting("accuracy", limits=SELECTIONS, help="accuracy or pareto, as for transfer")
    split: str = setting(
        "test",
        limits=("test", "val"),
        help="where the cells are scored: test (default; no search selected on it) or val (the searches' "
        "own validation split, which flatters the losses they chose there)",
    )


@dataclass(frozen=True)
class TransferStage:
    """One ``[[transfer]]`` table: its stage name, the transfer keys (a transfer TOML's, ``file``, and
    the table's own), the augmentations it trains under, and whether the studies' losses are pooled."""

    name: str
    values: Mapping[str, Any]
    augmentations: tuple[str, ...]
    pooled: bool
    source: str

    def config(self, augmentation: str) -> TransferConfig:
        """The transfer settings under ``augmentation`` (built from the keys, so that the keys the file
        sets, and only those, override the source study's augmentation settings)."""
        return TransferConfig.from_mapping({**self.values, "augmentation": augmentation}, self.source)


@dataclass(frozen=True)
class TransferRun:
    """One call of :func:`~optiloss.transfer.run_transfer` in a transfer stage."""

    augmentation: str
    sources: tuple[str, ...]
    config: TransferConfig

    @property
    def study_name(self) -> str:
        return transfer_study_name(
            list(self.sources) if len(self.sources) > 1 else self.sources[0], self.config
        )


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file (:func:`load_experiment`)."""

    name: str
    path: Path
    text: str
    search: SearchConfig
    augmentations: tuple[str, ...]
    recheck: RecheckSettings
    transfers: tuple[TransferStage, ...]
    matrix: MatrixSettings
    losses: dict[str, str] = field(default_factory=dict)

    def stages(self) -> list[str]:
        """The stage names in the order they run (recheck and matrix only with seeds)."""
        names = [SEARCH]
        if self.recheck.seeds:
            names.append(RECHECK)
        names += [stage.name for stage in self.transfers]
        if self.matrix.seeds:
            names.append(MATRIX)
        return names

    def study_name(self, augmentation: str) -> str:
        """``{prefix}-{augmentation}``, the prefix being ``[search] study_name`` or the experiment's name."""
        return f"{self.search.study_name or self.name}-{augmentation}"

    def study_names(self) -> dict[str, str]:
        return {augmentation: self.study_name(augmentation) for augmentation in self.augmentations}

    def search_config(self, augmentation: str) -> SearchConfig:
        return self.search.replace(augmentation=augmentation, study_name=self.study_name(augmentation))

    def recheck_ledger(self, augmentation: str) -> str:
        return f"{self.study_name(augmentation)}-recheck"

    @property
    def matrix_ledger(self) -> str:
        """``{name}-matrix-{split}``: a matrix scored on another split (or by an older version, which
        scored on validation with the searches' own seed) is kept apart, never mixed in."""
        return f"{self.name}-matrix-{self.matrix.split}"

    def all_study_names(self) -> list[str]:
        """Every study the experiment writes: searches, recheck ledgers, transfer studies, the matrix's."""
        names = list(self.study_names().values())
        names += [self.recheck_ledger(augmentation) for augmentation in self.augmentations]
        names += [run.study_name for stage in self.transfers for run in self.transfer_runs(stage)]
        return [*names, self.matrix_ledger]

    def transfer_runs(self, stage: TransferStage) -> list[TransferRun]:
        """The transfer studies of ``stage``: per augmentation, that augmentation's study (or, pooled,
        every study) as the source."""
        studies = self.study_names()
        runs = []
        for augmentation in stage.augmentations:
            sources = tuple(studies.values()) if stage.pooled else (studies[augmentation],)
            runs.append(TransferRun(augmentation, sources, stage.config(augmentation)))
        return runs


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file; every mistake is one :class:`UsageError` naming the key.

    ``file`` keys are read relative to the experiment file's folder.
    """
    path = Path(path)
    values = read_toml(path, "experiment file")
    where = str(path)
    _refuse_unknown(where, values, _TOP_KEYS)
    name = values.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"{where}: name must be letters, digits, '.', '_' or '-', got {name!r}")
    losses = check_losses(f"{where}: losses", values.get("losses", {}))
    search_table = dict(_table(where, values, "search"))
    if "augmentation" in search_table:
        raise UsageError(
            f'{where}: [search] augmentation: an experiment lists its searches, augmentations = ["base", ...]'
        )
    augmentations = _augmentations(
        f"{where}: [search] augmentations", search_table.pop("augmentations", None)
    )
    search_values = _with_file(where, "search", search_table, path.parent)
    search_values.pop("augmentation", None)  # a study file's own; the experiment lists its augmentations
    search_values["losses"] = {**search_values.get("losses", {}), **losses}
    search = SearchConfig.from_mapping(
        {**search_values, "augmentation": augmentations[0]}, f"{where} [search]"
    )
    named_losses(search.losses, search.nodes)  # a bad formula is refused now, not after the search
    recheck = RecheckSettings.from_mapping(_table(where, values, "recheck"), f"{where} [recheck]")
    matrix = MatrixSettings.from_mapping(_table(where, values, "matrix"), f"{where} [matrix]")
    transfers = _transfer_stages(where, values.get("transfer", []), augmentations, losses, path.parent)
    return Experiment(
        name,
        path,
        path.read_text(),
        search,
        augmentations,
        recheck,
        transfers,
        matrix,
        losses,
    )


def _refuse_unknown(where: str, values: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise UsageError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")


def _table(where: str, values: Mapping[str, Any], key: str) -> dict[str, Any]:
    table = values.get(key, {})
    if not isinstance(table, Mapping):
        raise UsageError(f"{where}: {key} must be a table ([{key}]), got {table!r}")
    return dict(table)


def _augmentations(where: str, value: Any, default: tuple[str, ...] = AUGMENTATIONS) -> tuple[str, ...]:
    if value is None:
        return default
    if (
        not isinstance(value, list)
        or not value
        or any(item not in AUGMENTATIONS for item in value)
        or len(set(value)) != len(value)
    ):
        raise UsageError(
            f"{where} must be a list of distinct augmentations among "
            f"{', '.join(AUGMENTATIONS)}, got {value!r}"
        )
    return tuple(value)


def _with_file(where: str, table_name: str, table: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The table's keys over those of the TOML its ``file`` key names (relative to ``folder``)."""
    file = table.pop("file", None)
    if file is None:
        return table
    if not isinstance(file, str):
        raise UsageError(f"{where}: [{table_name}] file must be a path string, got {file!r}")
    target = folder / file
    if target.is_dir():
        raise UsageError(f"{where}: [{table_name}] file {str(target)!r} is a folder, not a TOML file")
    if not target.is_file():
        raise UsageError(f"{where}: [{table_name}] file {str(target)!r} does not exist")
    return {**read_toml(target), **table}


def _transfer_stages(
    where: str, tables: Any, augmentations: tuple[str, ...], losses: dict[str, str], folder: Path
) -> tuple[TransferStage, ...]:
    if not isinstance(tables, list) or not all(isinstance(table, Mapping) for table in tables):
        raise UsageError(f"{where}: transfer must be tables ([[transfer]]), got {tables!r}")
    stages: list[TransferStage] = []
    trained: dict[tuple[str, str], str] = {}
    for index, table in enumerate(tables, start=1):
        table = dict(table)
        name = table.pop("name", None)
        label = f"[[transfer]] {index}"
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (SEARCH, RECHECK, MATRIX):
            raise UsageError(
                f"{where}: {label} needs a name (letters, digits, '.', '_', '-'; not search, recheck or "
                f"matrix), got {name!r}"
            )
        if name in [stage.name for stage in stages]:
            raise UsageError(f"{where}: two [[transfer]] stages are named {name!r}")
        source = f"{where} [transfer {name}]"
        if "augmentation" in table:
            raise UsageError(f'{source}: augmentation: a stage lists its own, augmentations = ["base", ...]')
        stage_augmentations = _augmentations(
            f"{source} augmentations", table.pop("augmentations", None), augmentations
        )
        missing = [item for item in stage_augmentations if item not in augmentations]
        if missing:
            raise UsageError(
                f"{source} augmentations: {missing[0]!r} has no search in [search] augmentations"
            )
        pooled = table.pop("pooled", False)
        if not isinstance(pooled, bool):
            raise UsageError(f"{source} pooled must be true or false, got {pooled!r}")
        values = _with_file(where, f"transfer {name}", table, folder)
        values.pop("augmentation", None)
        values["losses"] = {**values.get("losses", {}), **losses}
        stage = TransferStage(name, values, stage_augmentations, pooled, source)
        config = stage.config(stage_augmentations[0])  # every key checked once, naming the stage
        other = trained.get((config.model, config.dataset))
        if other:
            raise UsageError(
                f"{source}: stage {other!r} trains {config.model} on {config.dataset} too, and the two would "
                "share their transfer studies: give one of them another model or data set"
            )
        trained[(config.model, config.dataset)] = name
        stages.append(stage)
    return tuple(stages)


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


def _seconds(storage: BaseStorage, names: list[str]) -> float | None:
    """The median seconds of a training (and its scoring) among the COMPLETE trials of ``names``."""
    seconds = []
    for name in names:
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            continue
        for trial in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,)):
            record = TrainingRecord.from_user_attrs(trial.user_attrs)
            if record is not None:
                seconds.append(record.training_seconds + (record.evaluation_seconds or 0.0))
    return statistics.median(seconds) if seconds else None


def _load(storage: BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _search_finished(storage: BaseStorage, config: SearchConfig) -> bool:
    name = config.resolved_study_name
    complete = count_trials(storage, name, (TrialState.COMPLETE,))
    study = _load(storage, name)
    floor = len((study.user_attrs.get(StudyKey.NOISE_FLOOR) or []) if study else [])
    return complete >= config.n_trials and floor >= config.baseline_seeds


def reading_storage(experiment: Experiment, storage_url: str | None) -> BaseStorage:
    """An in-memory copy of the experiment's studies (:func:`~optiloss.studies.snapshot`) to plan or
    report from; an SQLite file that does not exist yet reads as empty (and is not created)."""
    path = sqlite_path(resolve_storage_url(storage_url))
    if path is not None and not path.exists():
        return optuna.storages.InMemoryStorage()
    return snapshot(open_storage(storage_url, create=False), experiment.all_study_names())


def plan(
    experiment: Experiment,
    storage_url: str | None = None,
    stages: list[str] | None = None,
    storage: BaseStorage | None = None,
) -> list[StagePlan]:
    """The trainings of each of ``stages`` (default: all), done and to do, read from the storage
    (nothing is trained or written), or from ``storage`` (:func:`reading_storage`) when given."""
    storage = storage or reading_storage(experiment, storage_url)
    searches = {
        augmentation: experiment.search_config(augmentation) for augmentation in experiment.augmentations
    }
    names = experiment.study_names()
    surrogate_seconds = _seconds(
        storage,
        list(names.values())
        + [experiment.recheck_ledger(augmentation) for augmentation in names]
        + [experiment.matrix_ledger],
    )
    searched = all(_search_finished(storage, config) for config in searches.values())
    plans = []
    for stage in stages or experiment.stages():
        if stage == SEARCH:
            total = sum(config.n_trials + config.baseline_seeds for config in searches.values())
            done = 0
            for config in searches.values():
                study = _load(storage, config.resolved_study_name)
                complete = count_trials(storage, config.resolved_study_name, (TrialState.COMPLETE,))
                floor = len((study.user_attrs.get(StudyKey.NOISE_FLOOR) or []) if study else [])
                done += min(complete, config.n_trials) + min(floor, config.baseline_seeds)
            plans.append(
                StagePlan(SEARCH, tuple(names.values()), total, total - done, False, surrogate_seconds)
            )
        elif stage == RECHECK:
            total = todo = 0
            for augmentation in names:
                runs = _recheck_runs(storage, experiment, augmentation)
                total += len(runs)
                todo += len(pending(storage, experiment.recheck_ledger(augmentation), runs))
            ledgers = tuple(experiment.recheck_ledger(augmentation) for augmentation in names)
            plans.append(StagePlan(RECHECK, ledgers, total, todo, not searched, surrogate_seconds))
        elif stage == MATRIX:
            runs = _matrix_runs(storage, experiment)
            todo = len(pending(storage, experiment.matrix_ledger, runs))
            plans.append(
                StagePlan(
                    MATRIX, (experiment.matrix_ledger,), len(runs), todo, not searched, surrogate_seconds
                )
            )
        else:
            transfer = next(item for item in experiment.transfers if item.name == stage)
            runs_of_stage = experiment.transfer_runs(transfer)
            total = todo = 0
            for run in runs_of_stage:
                keys = _transfer_runs(storage, experiment, run)
                total += len(keys)
                todo += len(pending(storage, run.study_name, keys))
            study_names = tuple(dict.fromkeys(run.study_name for run in runs_of_stage))
            plans.append(
                StagePlan(stage, study_names, total, todo, not searched, _seconds(storage, list(study_names)))
            )
    return plans


def _has_complete(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


_PARETO_GUESS = 3
"""How many Pareto members a dry run counts for a search that has not started."""


def _recheck_runs(storage: BaseStorage, experiment: Experiment, augmentation: str) -> list[str]:
    from optiloss.recheck import rechecked_losses

    study = _load(storage, experiment.study_name(augmentation))
    given = named_losses(experiment.losses, experiment.search.nodes)
    if study is None or not _has_complete(study):
        labels = [loss_label(k, None) for k in range(_PARETO_GUESS)] + [*given, BASELINE, "best_zoo"]
    else:
        labels = [loss.label for loss in rechecked_losses(study, given)]
    return [
        TransferRunRecord(label, augmentation, seed, "").run
        for label in labels
        for seed in range(experiment.recheck.seeds)
    ]


def _matrix_runs(storage: BaseStorage, experiment: Experiment) -> list[str]:
    from optiloss.matrix import matrix_losses

    studies = {augmentation: _load(storage, name) for augmentation, name in experiment.study_names().items()}
    given = named_losses(experiment.losses, experiment.search.nodes)
    if all(study is not None and _has_complete(study) for study in studies.values()):
        labels = list(matrix_losses(studies, experiment.matrix.top_k, experiment.matrix.select, given))  # type: ignore[arg-type]
    else:
        evolved = [
            loss_label(k, None, matrix_augmentation=augmentation)
            for augmentation in studies
            for k in range(experiment.matrix.top_k)
        ]
        labels = [BASELINE, *evolved, *given]
    return [
        TransferRunRecord(label, augmentation, seed, "").run
        for label in labels
        for augmentation in AUGMENTATIONS
        for seed in range(experiment.matrix.seeds)
    ]


def _transfer_runs(storage: BaseStorage, experiment: Experiment, run: TransferRun) -> list[str]:
    from optiloss.transfer import transfer_labels

    sources = [_load(storage, name) for name in run.sources]
    given = named_losses(run.config.losses, experiment.search.nodes)
    if all(source is not None and _has_complete(source) for source in sources):
        labels = list(transfer_labels(sources, run.config.top_k, run.config.select, given))  # type: ignore[arg-type]
    else:
        names = zoo_names(experiment.search.constants)
        pooled = len(run.sources) > 1
        evolved = [
            loss_label(k, None, pooled_from=name if pooled else None)
            for name in run.sources
            for k in range(run.config.top_k)
        ]
        labels = [*names, *evolved, *given]
    return [
        TransferRunRecord(label, run.augmentation, seed, "").run
        for label in labels
        for seed in range(run.config.seeds)
    ]


def select_stages(experiment: Experiment, until: str | None = None, only: str | None = None) -> list[str]:
    """The stages a run does: all, those up to ``until``, or ``only`` one; an unknown stage is a
    :class:`UsageError` listing the stages."""
    stages = experiment.stages()
    for option, value in (("--until", until), ("--only", only)):
        if value is not None and value not in stages:
            raise UsageError(f"{option} {value!r}: the stages of {experiment.path} are {', '.join(stages)}")
    if only is not None:
        return [only]
    if until is not None:
        return stages[: stages.index(until) + 1]
    return stages


def run_experiment(
    experiment: Experiment,
    storage_url: str | None = None,
    *,
    stages: list[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    search_hooks: Any = None,
) -> None:
    """Run ``stages`` (default: all) of ``experiment`` in order, each only as far as its studies lack
    trainings; one line per stage says what it does or that it had finished. A stage that needs the
    search's studies before they exist is an :class:`OptilossError` naming the stage to run first."""
    from optiloss.matrix import loss_augmentation_matrix
    from optiloss.recheck import recheck
    from optiloss.scoring import load_data
    from optiloss.search import run_search
    from optiloss.search.run import NO_HOOKS
    from optiloss.transfer import run_transfer

    chosen = stages or experiment.stages()
    names = experiment.study_names()
    storage = open_storage(storage_url, create=True)
    for number, stage in enumerate(chosen, start=1):
        (item,) = plan(experiment, storage_url, [stage])  # after the stages before it ran
        header = f"[{number}/{len(chosen)}] "
        if item.finished:
            log(header + item.describe())
            continue
        if stage != SEARCH:
            absent = [name for name in names.values() if _load(storage, name) is None]
            if absent:
                raise OptilossError(
                    f"stage {stage} needs the search's studies, and {absent[0]} does not exist yet: "
                    f"run the search stage first (--until search)"
                )
        log(header + item.describe())
        if stage == SEARCH:
            data = None
            for augmentation in experiment.augmentations:
                config = experiment.search_config(augmentation)
                if data is None:
                    data = load_data(config, progress)
                outcome = run_search(
                    config, storage_url, progress=progress, log=log, data=data, hooks=search_hooks or NO_HOOKS
                )
                for line in outcome.given:
                    log(f"{outcome.study_name}: {line}")
        elif stage == RECHECK:
            for augmentation, name in names.items():
                recheck(
                    name,
                    storage_url,
                    experiment.recheck.seeds,
                    device=experiment.search.device,
                    losses=experiment.losses,
                    progress=progress,
                    ledger=experiment.recheck_ledger(augmentation),
                )
        elif stage == MATRIX:
            loss_augmentation_matrix(
                None,
                storage_url,
                top_k=experiment.matrix.top_k,
                seeds=experiment.matrix.seeds,
                device=experiment.search.device,
                select=experiment.matrix.select,
                losses=experiment.losses,
                progress=progress,
                study_names=names,
                ledger=experiment.matrix_ledger,
                split=experiment.matrix.split,
            )
        else:
            transfer = next(item for item in experiment.transfers if item.name == stage)
            for run in experiment.transfer_runs(transfer):
                run_transfer(
                    list(run.sources) if len(run.sources) > 1 else run.sources[0],
                    run.config,
                    storage_url,
                    progress=progress,
                    log=log,
                )
