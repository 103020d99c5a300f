"""Recovering a study from dead workers: fail their trials and re-run the same genomes.

Optuna's heartbeat fails a RUNNING trial whose heartbeat is older than the
grace period, and :class:`RetryHeartbeatStaleTrialCallback` re-enqueues it.
That covers workers on other machines. :func:`sweep_dead_trials` adds what the
heartbeat cannot see, so that a restart on the same machine loses nothing:

- a trial whose recorded worker process (``user_attrs["worker"]``: host, pid
  and the trial's own number) ran on this host and no longer exists is failed
  at once, without waiting for the grace period;
- a trial with no worker record of its own after :data:`ORPHAN_AFTER_SECONDS`
  (its process died between creating the trial and starting the objective,
  before any heartbeat) is failed too;
- a trial that ended FAIL with ``fail_reason = "interrupted"`` (Ctrl-C) and
  was never retried is retried.

A retry keeps the genome (parameters) and the user attrs, among them the
``checkpoint`` path, so training resumes from the last saved epoch.
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

ORPHAN_AFTER_SECONDS = 30.0
"""A live worker records itself milliseconds after its trial starts; 30 s without a record means it died."""
INTERRUPTED = "interrupted"


def worker_record(trial_number: int) -> dict:
    """What a worker writes on its trial first: host, process id and the trial it belongs to.

    The trial number guards against a retry, which copies its failed
    predecessor's user attrs, being judged by the dead predecessor's process.
    """
    return {"host": socket.gethostname(), "pid": os.getpid(), "trial": trial_number}


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _death_reason(trial: FrozenTrial, host: str, now: datetime.datetime) -> str | None:
    record = trial.user_attrs.get("worker")
    if isinstance(record, dict) and record.get("trial") == trial.number:
        if record.get("host") == host and not process_alive(int(record["pid"])):
            return f"worker process {record['pid']} on {host} died"
        return None  # alive here, or on another machine: the heartbeat decides
    started = trial.datetime_start or now
    if (now - started).total_seconds() > ORPHAN_AFTER_SECONDS:
        return "worker died before the trial started"
    return None


def sweep_dead_trials(study: optuna.Study, max_retry: int | None) -> list[int]:
    """Fail the RUNNING trials of dead workers and enqueue retries; returns the failed trial numbers.

    Safe to run from several workers at once: a trial already finished by
    another process is skipped.
    """
    storage = study._storage
    host = socket.gethostname()
    now = datetime.datetime.now()
    trials = study.get_trials(deepcopy=False)
    retried = {number for trial in trials for number in trial.system_attrs.get("retry_history", [])}
    to_retry: list[FrozenTrial] = []
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            reason = _death_reason(trial, host, now)
            if reason is None:
                continue
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            try:
                if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                    to_retry.append(storage.get_trial(trial._trial_id))
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        elif (trial.state == TrialState.FAIL and trial.user_attrs.get("fail_reason") == INTERRUPTED
              and trial.number not in retried):
            to_retry.append(trial)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    for trial in to_retry:
        retry(study, trial)
    return [trial.number for trial in to_retry]
