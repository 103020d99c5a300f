"""Recovering a search from dead workers: fail their trials and re-run the same genomes.

Optuna's heartbeat fails a RUNNING trial whose heartbeat is older than the
grace period, and :class:`RetryHeartbeatStaleTrialCallback` re-enqueues it.
That covers workers on other machines. :func:`sweep_dead_trials` adds what the
heartbeat cannot see, so that a restart on the same machine loses nothing:

- a trial whose recorded worker process (the user attr ``worker``: host, pid
  and the trial's own number) ran on this host and no longer exists is failed
  at once, without waiting for the grace period;
- a trial with no worker record of its own after
  :data:`~optiloss.studies.ORPHAN_AFTER_SECONDS` (its process died between
  creating the trial and starting the objective, before any heartbeat) is failed too;
- a trial that ended FAIL with ``fail_reason = "interrupted"`` (Ctrl-C) and
  was never retried is retried.

A retry keeps the genome (parameters) and the user attrs, among them the
``checkpoint`` path, so training resumes from the last saved epoch.

A retry still WAITING once the study holds its budget of COMPLETE trials is
no longer needed: :func:`close_unneeded_retries` ends it as FAIL with
``fail_reason`` saying so, instead of leaving it queued for ever (where a
later search with a larger budget would train it first without saying why).
The retry of a loss the user gave stays queued: the search reports it.
"""

from __future__ import annotations

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from optiloss.liveness import fail_dead_trials
from optiloss.records import TrialKey

INTERRUPTED = "interrupted"
NOT_NEEDED = "retry not needed: the study had reached its budget of {n_trials} COMPLETE trials"


def sweep_dead_trials(storage: BaseStorage, study: optuna.Study, max_retry: int | None) -> list[int]:
    """Fail the RUNNING trials of dead workers and enqueue retries of them and of interrupted trials;
    returns the numbers of the trials retried.

    Safe to run from several workers at once: a trial already finished by
    another process is skipped.
    """
    to_retry = fail_dead_trials(storage, study)
    trials = study.get_trials(deepcopy=False)
    retried = {number for trial in trials for number in trial.system_attrs.get("retry_history", [])}
    failed_now = {trial.number for trial in to_retry}
    to_retry += [
        trial
        for trial in trials
        if trial.state == TrialState.FAIL
        and trial.user_attrs.get(TrialKey.FAIL_REASON) == INTERRUPTED
        and trial.number not in retried
        and trial.number not in failed_now
    ]
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    for trial in to_retry:
        retry(study, trial)
    return [trial.number for trial in to_retry]


def close_unneeded_retries(storage: BaseStorage, study: optuna.Study, n_trials: int) -> list[int]:
    """End as FAIL (``fail_reason`` :data:`NOT_NEEDED`) the retries still WAITING when ``study``
    holds ``n_trials`` COMPLETE trials; returns their numbers. Retries of a loss the user gave by
    name are kept, and a retry another process has started meanwhile is left to it."""
    trials = study.get_trials(deepcopy=False)
    if sum(trial.state == TrialState.COMPLETE for trial in trials) < n_trials:
        return []
    closed = []
    for trial in trials:
        if (
            trial.state != TrialState.WAITING
            or "retry_history" not in trial.system_attrs
            or trial.user_attrs.get(TrialKey.LOSS_NAME)
        ):
            continue
        trial_id = trial._trial_id
        if storage.get_trial(trial_id).state != TrialState.WAITING:
            continue
        try:
            storage.set_trial_user_attr(trial_id, TrialKey.FAIL_REASON, NOT_NEEDED.format(n_trials=n_trials))
            if storage.set_trial_state_values(trial_id, TrialState.FAIL):
                closed.append(trial.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return closed
