"""Planning and running an experiment's stages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import BaseStorage

from optiloss.errors import OptilossError, UsageError
from optiloss.experiment.context import RunContext
from optiloss.experiment.file import Experiment
from optiloss.experiment.stages import StagePlan, StudiesView, stages_of
from optiloss.storage import open_storage, resolve_storage_url, sqlite_path
from optiloss.studies import snapshot


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
    """The trainings of each of ``stages`` (default: all), done and to do, as each stage counts them
    (:meth:`~optiloss.experiment.stages.Stage.plan`), read from the storage (nothing is trained or
    written), or from ``storage`` (:func:`reading_storage`) when given."""
    view = StudiesView(experiment, storage or reading_storage(experiment, storage_url))
    return [stage.plan(view) for stage in stages_of(experiment) if stages is None or stage.name in stages]


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
    search's studies before they exist is an :class:`OptilossError` naming the stage to run first.

    One :class:`~optiloss.experiment.context.RunContext` (storage, given losses, devices, data) serves
    every stage."""
    chosen = [stage for stage in stages_of(experiment) if stages is None or stage.name in stages]
    context = RunContext.open(experiment, storage_url, progress=progress, log=log, search_hooks=search_hooks)
    view_of_searches = StudiesView(experiment, context.storage)
    for number, stage in enumerate(chosen, start=1):
        # counted after the stages before it ran, from the live storage
        item = stage.plan(StudiesView(experiment, context.storage, context))
        header = f"[{number}/{len(chosen)}] "
        if item.finished:
            log(header + item.describe())
            continue
        if stage.needs_search:
            absent = [
                name for name in experiment.study_names().values() if view_of_searches.load(name) is None
            ]
            if absent:
                raise OptilossError(
                    f"stage {stage.name} needs the search's studies, and {absent[0]} does not exist yet: "
                    f"run the search stage first (--until search)"
                )
        log(header + item.describe())
        stage.run(context)
