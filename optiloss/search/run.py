"""Running a search: the function behind ``optiloss search``."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
import torch
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from optiloss.augment import AUGMENTATIONS
from optiloss.data import ImageSplits
from optiloss.devices import resolve_device
from optiloss.errors import OptilossError, UsageError
from optiloss.records import StudyKey, TrialKey
from optiloss.scoring import LossEvaluator, load_data
from optiloss.search.hooks import SearchHooks
from optiloss.search.noise_floor import train_noise_floor
from optiloss.search.objective import LossSearchObjective
from optiloss.search.recovery import close_unneeded_retries, sweep_dead_trials
from optiloss.search.study import given_loss_lines, open_settled_study, settle_config, stored_study_attrs
from optiloss.settings import SearchConfig
from optiloss.storage import mask_url, open_storage, resolve_storage_url
from optiloss.studies import count_trials

NO_HOOKS = SearchHooks()
REPORT_INTERVAL_SECONDS = 15.0
"""How often a running search refreshes the dashboard's study note and hypervolume figure."""


@dataclass(frozen=True)
class SearchOutcome:
    """Where a search ran, how many COMPLETE trials its study holds after it, and how many genomes
    it rejected in this run; ``stopped_early`` says why it stopped short of ``n_trials``."""

    study_name: str
    storage_url: str
    complete_after: int
    rejected: int
    stopped_early: str | None = None
    study: optuna.Study | None = field(default=None, compare=False, repr=False)
    """The study as this process holds it open, for a report right after the search."""
    given: tuple[str, ...] = ()
    """One line per loss the user gave (:func:`~optiloss.search.study.given_loss_lines`)."""


class _Progress:
    """Study callback: a progress bar over COMPLETE trials and a guard against endless rejection."""

    def __init__(self, total: int, done: int, max_consecutive_rejections: int, show: bool) -> None:
        self.bar = tqdm(total=total, initial=done, desc="complete trials", unit="trial", disable=not show)
        self.rejected = 0
        self.consecutive_rejections = 0
        self.limit = max_consecutive_rejections
        self.stopped_early: str | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.rejected += sum(trial.user_attrs.get(TrialKey.SCREENED_OUT, {}).values())
        if trial.state == TrialState.COMPLETE:
            self.consecutive_rejections = 0
            self.bar.update(1)
        elif trial.state == TrialState.PRUNED:
            self.rejected += 1
            self.consecutive_rejections += 1
            if self.consecutive_rejections >= self.limit:
                self.stopped_early = (
                    f"stopped after {self.limit} rejected genomes in a row: the "
                    "population has converged or the space is too narrow"
                )
                study.stop()
        self.bar.set_postfix(rejected=self.rejected, refresh=False)

    def close(self) -> None:
        self.bar.close()


def run_searches(
    config: SearchConfig,
    storage_url: str | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    hooks: SearchHooks = NO_HOOKS,
) -> list[SearchOutcome]:
    """:func:`run_search` for each study of ``config`` (five for ``augmentation = "all5"``), in turn.

    The data set is loaded once and shared by all of them.
    """
    data = load_data(config, progress)
    return [
        run_search(one, storage_url, progress=progress, log=log, data=data, hooks=hooks)
        for one in config.per_augmentation()
    ]


def run_search(
    config: SearchConfig,
    storage_url: str | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    data: ImageSplits | None = None,
    hooks: SearchHooks = NO_HOOKS,
) -> SearchOutcome:
    """Create or continue the study of ``config`` until it holds ``config.n_trials`` COMPLETE trials.

    With ``config.workers`` > 1, that many processes share the study, each with
    its own sampler seed. Trials of dead workers are failed and retried first
    (see :mod:`optiloss.search.recovery`). ``log`` receives one-line status
    messages; ``data`` (as :func:`optiloss.evaluate.load_data` returns it) saves
    reloading; ``hooks`` let a report follow the search (the CLI passes
    :func:`optiloss.report.dashboard_hooks`).
    Raises :class:`~optiloss.errors.OptilossError` for anything the user can fix
    (bad storage, unknown dataset, a study created differently).
    """
    if config.augmentation not in AUGMENTATIONS:
        raise UsageError(f"run_search takes one augmentation, got {config.augmentation!r}; use run_searches")
    url = resolve_storage_url(storage_url)
    device = resolve_device(config.device)
    if data is None:
        data = load_data(config, progress)
    # tables and study are created here, once, before any worker starts
    storage = _open_storage(config, url)
    # the study's own constants and screening, once: the workers get the settled config
    config = settle_config(config, stored_study_attrs(storage, config.resolved_study_name))
    study = open_settled_study(config, storage, num_classes=data.num_classes, log=log)
    name = study.study_name
    if data.conditions and StudyKey.CONDITIONS not in study.user_attrs:
        study.set_user_attr(StudyKey.CONDITIONS, data.conditions)
    recovered = sweep_dead_trials(storage, study, config.max_retry)
    if recovered:
        log(
            f"{name}: trial(s) {', '.join(map(str, recovered))} lost their worker; "
            "failed and queued for retry"
        )
    # the data go to the device once; the noise floor and the trials share one evaluator
    evaluator = LossEvaluator.for_search(config, data.to(device), device, progress)
    trained = train_noise_floor(study, config, evaluator, progress)
    if trained:
        log(f"{name}: trained cross-entropy with {trained} more seed(s) for the study's noise floor")
    complete = count_trials(storage, name, (TrialState.COMPLETE,))
    remaining = config.n_trials - complete
    if remaining <= 0:
        log(f"{name}: {complete}/{config.n_trials} complete, nothing to run")
        _close_unneeded_retries(storage, study, config, log)
        return SearchOutcome(
            name, url, complete, 0, study=study, given=tuple(given_loss_lines(study, config))
        )
    workers = f", {config.workers} workers" if config.workers > 1 else ""
    # with several workers, each resolves its own device (optiloss.evaluate.worker_device)
    shown_device = config.device if config.workers > 1 else device
    log(
        f"{name}: {complete}/{config.n_trials} complete, running {remaining} more "
        f"(storage {mask_url(url)}, device {shown_device}{workers})"
    )
    if config.workers > 1:
        rejected, stopped_early = _run_workers(config, url, storage, name, complete, progress, hooks, log)
    else:
        tracker = _optimize(config, storage, study, evaluator, progress=progress, done=complete, hooks=hooks)
        rejected, stopped_early = tracker.rejected, tracker.stopped_early
    if stopped_early:
        log(f"{name}: {stopped_early}")
    after = count_trials(storage, name, (TrialState.COMPLETE,))
    _close_unneeded_retries(storage, study, config, log)
    given = tuple(given_loss_lines(study, config))
    return SearchOutcome(name, url, after, rejected, stopped_early, study=study, given=given)


def _close_unneeded_retries(
    storage: BaseStorage, study: optuna.Study, config: SearchConfig, log: Callable[[str], None]
) -> None:
    closed = close_unneeded_retries(storage, study, config.n_trials)
    if closed:
        log(
            f"{study.study_name}: retry trial(s) {', '.join(map(str, closed))} no longer needed "
            f"({config.n_trials} trials complete): closed as FAIL"
        )


def _open_storage(config: SearchConfig, url: str) -> RDBStorage:
    return open_storage(
        url,
        heartbeat_interval=config.heartbeat_interval,
        grace_period=config.grace_period,
        max_retry=config.max_retry,
        outage_s=config.db_outage_s,
    )


def upkeep_callback(
    config: SearchConfig, storage: BaseStorage, hooks: SearchHooks = NO_HOOKS
) -> Callable[[optuna.Study, FrozenTrial], None]:
    """The study callback every search runs after each trial: the dead-worker sweep and the
    report hook, each on its own clock (both scan every trial of the study)."""
    last_sweep = last_report = time.monotonic()

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal last_sweep, last_report
        if time.monotonic() - last_sweep >= config.heartbeat_interval:  # dead workers matter on that scale
            sweep_dead_trials(storage, study, config.max_retry)
            last_sweep = time.monotonic()
        if (
            hooks.study_report is not None
            and trial.state == TrialState.COMPLETE
            and time.monotonic() - last_report >= REPORT_INTERVAL_SECONDS
        ):
            hooks.study_report(study)
            last_report = time.monotonic()

    return after_trial


def _optimize(
    config: SearchConfig,
    storage: BaseStorage,
    study: optuna.Study,
    evaluator: LossEvaluator,
    *,
    progress: bool,
    done: int,
    hooks: SearchHooks,
) -> _Progress:
    objective = LossSearchObjective(config, trial_trained=hooks.trial_trained, evaluator=evaluator)
    tracker = _Progress(config.n_trials, done, config.max_consecutive_rejections, progress)
    after_trial = upkeep_callback(config, storage, hooks)
    if hooks.study_report is not None:
        hooks.study_report(study)
    try:
        enough = MaxTrialsCallback(config.n_trials, states=(TrialState.COMPLETE,))
        study.optimize(objective, callbacks=[enough, tracker, after_trial])
    except Exception as error:
        # Optuna may mask a storage failure inside its own bookkeeping (an UnboundLocalError after a
        # failed tell): the user's error is the one underneath
        reported = _optiloss_error_in(error)
        if reported is not None and reported is not error:
            raise reported from None
        raise
    finally:
        tracker.close()
    if hooks.study_report is not None:
        hooks.study_report(study)  # not after Ctrl-C: an interrupted search stops at once
    return tracker


def _optiloss_error_in(error: BaseException) -> OptilossError | None:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OptilossError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


WORKER_ERROR_EXIT = 3
"""A worker's exit status after an :class:`OptilossError` it reported (told apart from a crash)."""


def _worker_main(
    config: SearchConfig,
    url: str,
    worker: int,
    threads: int,
    hooks: SearchHooks,
    rejected: multiprocessing.Queue,
) -> None:
    """Entry point of one worker process (spawned): the same search loop, without a progress bar.
    Puts the number of genomes it rejected on ``rejected``."""
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        data = load_data(config, progress=False)
        storage = _open_storage(config, url)
        study = open_settled_study(config, storage, worker, num_classes=data.num_classes)
        device = resolve_device(config.device, worker)
        evaluator = LossEvaluator.for_search(config, data.to(device), device)
        tracker = _optimize(config, storage, study, evaluator, progress=False, done=0, hooks=hooks)
        rejected.put(tracker.rejected)
    except KeyboardInterrupt:
        sys.exit(130)
    except OptilossError as error:
        print(f"optiloss: worker {worker}: error: {error}", file=sys.stderr)
        sys.exit(WORKER_ERROR_EXIT if error.exit_code == 1 else error.exit_code)


MAX_WORKER_RESTARTS = 3
"""How often a worker slot's process is started again after it died, in one run."""


def _run_workers(
    config: SearchConfig,
    url: str,
    storage: BaseStorage,
    name: str,
    done: int,
    progress: bool,
    hooks: SearchHooks,
    log: Callable[[str], None] = print,
) -> tuple[int, str | None]:
    """Run ``config.workers`` worker processes on the study until its budget is met.

    A worker killed by a signal (the out-of-memory killer, ``kill -9``) or crashing is replaced: its
    trial is failed and queued for retry (:func:`sweep_dead_trials`) and a new process takes its slot,
    at most :data:`MAX_WORKER_RESTARTS` times per slot, each said in one line. A worker that stops on
    an error the user must mend (an :class:`OptilossError`, such as a database outage longer than its
    window) is not replaced: the search ends once the others have, saying which.
    """
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // config.workers)
    rejected = context.Queue()

    def start(worker: int) -> multiprocessing.process.BaseProcess:
        process = context.Process(
            target=_worker_main, args=(config, url, worker, threads, hooks, rejected), daemon=False
        )
        process.start()
        return process

    slots = {worker: start(worker) for worker in range(config.workers)}
    restarts = dict.fromkeys(slots, 0)
    finished: dict[int, int] = {}  # slot -> exit status of its last process
    bar = tqdm(
        total=config.n_trials, initial=done, desc="complete trials", unit="trial", disable=not progress
    )
    try:
        while slots:
            next(iter(slots.values())).join(timeout=1.0)  # wakes up to refresh the bar and check workers
            bar.n = count_trials(storage, name, (TrialState.COMPLETE,))
            bar.refresh()
            for worker, process in list(slots.items()):
                if process.is_alive():
                    continue
                status = process.exitcode if process.exitcode is not None else 0
                del slots[worker]
                if (
                    _replaceable(status)
                    and restarts[worker] < MAX_WORKER_RESTARTS
                    and bar.n < config.n_trials
                ):
                    restarts[worker] += 1
                    study = optuna.load_study(study_name=name, storage=storage)
                    retried = sweep_dead_trials(storage, study, config.max_retry)
                    numbers = ", ".join(map(str, retried))
                    what = f"trial(s) {numbers} failed and queued for retry; " if retried else ""
                    log(
                        f"{name}: worker {worker} died ({_describe_exit(status)}); {what}"
                        f"started a new worker in its place "
                        f"(restart {restarts[worker]} of {MAX_WORKER_RESTARTS})"
                    )
                    slots[worker] = start(worker)
                else:
                    finished[worker] = status
    except BaseException:
        for process in slots.values():
            process.join()
        raise
    finally:
        bar.close()
    if any(status == 130 for status in finished.values()):
        raise KeyboardInterrupt
    failed = sorted(worker for worker, status in finished.items() if status != 0)
    if failed:
        past_limit = [w for w in failed if _replaceable(finished[w])]
        why = f" ({MAX_WORKER_RESTARTS} restarts used)" if past_limit else " (see above)"
        raise OptilossError(
            f"worker(s) {', '.join(map(str, failed))} of study {name} exited with an error{why}; "
            "run the same command to continue"
        )
    # every worker that exited 0 put its count first
    return sum(rejected.get(timeout=60) for _ in finished), None


def _replaceable(status: int) -> bool:
    """Whether a worker that ended with ``status`` died rather than stopped: killed by a signal, or a
    crash (Python's exit status 1 after a traceback is told apart from an OptilossError by
    :data:`WORKER_ERROR_EXIT`)."""
    return status < 0 or status not in (0, 130, WORKER_ERROR_EXIT, UsageError.exit_code)


def _describe_exit(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"
