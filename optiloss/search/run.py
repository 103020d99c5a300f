"""Running a search: the function behind ``optiloss search``."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import torch
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from optiloss.augment import AUGMENTATIONS
from optiloss.data import ImageSplits, load_dataset
from optiloss.errors import UsageError
from optiloss.search.config import SearchConfig
from optiloss.search.objective import LossSearchObjective
from optiloss.search.storage import mask_url, open_storage, resolve_storage_url
from optiloss.search.study import count_trials, open_search_study


@dataclass(frozen=True)
class SearchOutcome:
    study_name: str
    storage_url: str
    complete_before: int
    complete_after: int
    rejected: int
    stopped_early: str | None = None


def load_search_data(config: SearchConfig, progress: bool = True):
    """The data set of ``config`` (on the CPU), as every search entry point loads it."""
    return load_dataset(config.dataset, config.validation_fraction, data_root=config.data_root,
                        image_size=config.image_size, subset=config.subset, download=config.download,
                        progress=progress)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


class _Progress:
    """Study callback: a progress bar over COMPLETE trials and a guard against endless rejection."""

    def __init__(self, total: int, done: int, max_consecutive_rejections: int, show: bool) -> None:
        self.bar = tqdm(total=total, initial=done, desc="complete trials", unit="trial", disable=not show)
        self.rejected = 0
        self.consecutive_rejections = 0
        self.limit = max_consecutive_rejections
        self.stopped_early: str | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            self.consecutive_rejections = 0
            self.bar.update(1)
        elif trial.state == TrialState.PRUNED:
            self.rejected += 1
            self.consecutive_rejections += 1
            if self.consecutive_rejections >= self.limit:
                self.stopped_early = (f"stopped after {self.limit} rejected genomes in a row: the "
                                      "population has converged or the space is too narrow")
                study.stop()
        self.bar.set_postfix(rejected=self.rejected, refresh=False)

    def close(self) -> None:
        self.bar.close()


def run_searches(config: SearchConfig, storage_url: str | None = None, *, progress: bool = True,
                 log=print) -> list[SearchOutcome]:
    """:func:`run_search` for each study of ``config`` (five for ``augmentation = "all5"``), in turn.

    The data set is loaded once and shared by all of them.
    """
    data = load_search_data(config, progress)
    return [run_search(one, storage_url, progress=progress, log=log, data=data)
            for one in config.per_augmentation()]


def run_search(config: SearchConfig, storage_url: str | None = None, *, progress: bool = True,
               log=print, data: ImageSplits | None = None) -> SearchOutcome:
    """Create or continue the study of ``config`` until it holds ``config.n_trials`` COMPLETE trials.

    ``log`` receives one-line status messages; ``data`` (as :func:`load_search_data`
    returns it) saves reloading. Raises :class:`~optiloss.errors.OptilossError`
    for anything the user can fix (bad storage, unknown dataset, a study created differently).
    """
    if config.augmentation not in AUGMENTATIONS:
        raise UsageError(f"run_search takes one augmentation, got {config.augmentation!r}; use run_searches")
    url = resolve_storage_url(storage_url)
    device = resolve_device(config.device)
    if data is None:
        data = load_search_data(config, progress)
    storage = open_storage(url)
    study = open_search_study(config, storage)
    name = study.study_name
    complete = count_trials(storage, name, (TrialState.COMPLETE,))
    remaining = config.n_trials - complete
    if remaining <= 0:
        log(f"{name}: {complete}/{config.n_trials} complete, nothing to run")
        return SearchOutcome(name, url, complete, complete, 0)
    log(f"{name}: {complete}/{config.n_trials} complete, running {remaining} more "
        f"(storage {mask_url(url)}, device {device})")
    objective = LossSearchObjective(config, data.to(device), device, progress)
    tracker = _Progress(config.n_trials, complete, config.max_consecutive_rejections, progress)
    try:
        study.optimize(objective, callbacks=[MaxTrialsCallback(config.n_trials, states=(TrialState.COMPLETE,)),
                                             tracker])
    finally:
        tracker.close()
    if tracker.stopped_early:
        log(f"{name}: {tracker.stopped_early}")
    after = count_trials(storage, name, (TrialState.COMPLETE,))
    return SearchOutcome(name, url, complete, after, tracker.rejected, tracker.stopped_early)
