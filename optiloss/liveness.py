"""Whether a RUNNING trial still has a live worker, and failing the ones that do not.

Every trial records who runs it first (:func:`worker_record`), so that another
process on the same machine can tell a dead run from a live one at once;
workers on other machines are left to Optuna's heartbeat.
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from optiloss.records import TrialKey

ORPHAN_AFTER_SECONDS = 30.0
"""A live worker records itself milliseconds after its trial starts; 30 s without a record means it died."""


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


def death_reason(
    trial: FrozenTrial, host: str | None = None, now: datetime.datetime | None = None
) -> str | None:
    """Why RUNNING ``trial`` has no live worker, or None when it may still be running.

    Dead: its recorded process ran on this host and is gone, or it has no
    record of its own :data:`ORPHAN_AFTER_SECONDS` after it started. A trial
    of another host is left to Optuna's heartbeat.
    """
    host = host or socket.gethostname()
    now = now or datetime.datetime.now()
    record = trial.user_attrs.get(TrialKey.WORKER)
    if isinstance(record, dict) and record.get("trial") == trial.number:
        if record.get("host") == host and not process_alive(int(record["pid"])):
            return f"worker process {record['pid']} on {host} died"
        return None  # alive here, or on another machine: the heartbeat decides
    started = trial.datetime_start or now
    if (now - started).total_seconds() > ORPHAN_AFTER_SECONDS:
        return "worker died before the trial started"
    return None


def fail_dead_trials(storage: BaseStorage, study: optuna.Study) -> list[FrozenTrial]:
    """Fail every RUNNING trial of ``study`` whose worker is dead (:func:`death_reason`, recorded as
    ``fail_reason``); returns them as FAIL. A trial another process finished meanwhile is skipped,
    so several processes may sweep at once."""
    study_id = storage.get_study_id_from_name(study.study_name)
    host, now = socket.gethostname(), datetime.datetime.now()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = death_reason(trial, host, now)
        if reason is None:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, TrialKey.FAIL_REASON, reason)
            if storage.set_trial_state_values(trial_id, TrialState.FAIL):
                failed.append(storage.get_trial(trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return failed
