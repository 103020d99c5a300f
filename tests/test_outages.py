"""A search rides out a database restart and a dead worker, on the real PostgreSQL server `make test`
starts: retried storage calls, replaced workers, one line where the user must act."""

import json
import os
import re
import signal
import subprocess
import time

import optuna
import pytest
from optuna.trial import TrialState

from optiloss.records import TrialKey

from conftest import ROOT, read_stderr_until, run_cli, start_cli

POSTGRES_SCRIPT = ROOT / "scripts" / "postgres.sh"
SETTINGS = {
    "n_trials": 10,
    "epochs": 6,
    "model_width": 16,
    "device": "cpu",
    "heartbeat_interval": 1,
    "grace_period": 30,
    "baseline_seeds": 0,
    "constants": 0,
    "artifacts": False,
}


def config(tmp_path, **keys) -> str:
    values = {**SETTINGS, "checkpoint_dir": str(tmp_path / "checkpoints"), **keys}
    path = tmp_path / "search.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    return str(path)


def server(action: str) -> None:
    done = subprocess.run(["bash", str(POSTGRES_SCRIPT), action], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:  # e.g. another checkout's server holds the port: this one cannot restart it
        pytest.fail(f"scripts/postgres.sh {action}: {done.stderr.strip()}")


def complete_trials(count: int) -> re.Pattern[bytes]:
    """The search's progress bar once it shows at least ``count`` COMPLETE trials."""
    counts = "|".join(str(n) for n in range(count, 100)).encode()
    return re.compile(rb"complete trials: +\d+%[^\n\r]*\| *(" + counts + rb")/")


def finished_study(url: str) -> tuple[list, list]:
    study = optuna.load_study(study_name="digits-base", storage=url)
    return study.get_trials(states=(TrialState.COMPLETE,)), study.get_trials(
        states=(TrialState.RUNNING, TrialState.WAITING)
    )


@pytest.mark.slow
@pytest.mark.restarts_postgres
def test_a_two_worker_search_rides_out_a_server_restart_in_its_middle(tmp_path, postgres_url):
    search = start_cli("search", config(tmp_path), "--storage", postgres_url, "--workers", "2")
    try:
        read_stderr_until(search, complete_trials(2))
        server("stop")
        time.sleep(4)  # the outage itself: the server is down this long
    finally:
        server("start")
    out, err = search.communicate(timeout=600)
    output = out.decode() + err.decode()
    assert search.returncode == 0, output
    assert "Traceback" not in output
    assert "unreachable; retrying for up to 120 s" in output and "is back after" in output
    complete, unfinished = finished_study(postgres_url)
    assert 10 <= len(complete) <= 11 and not unfinished
    fingerprints = [t.user_attrs["fingerprint"] for t in complete]
    assert len(fingerprints) == len(set(fingerprints))  # every training stored once


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_search_meets_its_budget_in_one_run(tmp_path, postgres_url):
    search = start_cli("search", config(tmp_path), "--storage", postgres_url, "--workers", "2")
    read_stderr_until(search, complete_trials(1))
    running = []
    while not running:  # the workers write their pid on each trial as it starts
        study = optuna.load_study(study_name="digits-base", storage=postgres_url)
        running = [t for t in study.get_trials(states=(TrialState.RUNNING,)) if "worker" in t.user_attrs]
    victim = running[0].user_attrs["worker"]["pid"]
    assert victim != search.pid
    os.kill(victim, signal.SIGKILL)
    out, err = search.communicate(timeout=600)
    output = out.decode() + err.decode()
    assert search.returncode == 0, output
    replaced = r"worker \d died \(killed by SIGKILL\); "
    r".*started a new worker in its place \(restart 1 of 3\)"
    assert re.search(replaced, output)
    assert "Traceback" not in output
    complete, unfinished = finished_study(postgres_url)
    assert 10 <= len(complete) <= 11 and not unfinished


@pytest.mark.slow
@pytest.mark.restarts_postgres
def test_an_outage_longer_than_the_window_ends_with_one_line_and_exit_1(tmp_path, postgres_url):
    search = start_cli("search", config(tmp_path, db_outage_s=3), "--storage", postgres_url)
    try:
        read_stderr_until(search, complete_trials(1))
        server("stop")
        out, err = search.communicate(timeout=300)
    finally:
        server("start")
    assert search.returncode == 1
    lines = [line for line in err.decode().replace("\r", "\n").splitlines() if line.startswith("optiloss:")]
    assert "Traceback" not in err.decode()
    assert lines[-1].startswith("optiloss: error: database at postgresql://optiloss:***@")
    assert lines[-1].endswith(
        "unreachable for more than 3 s; run the same command to continue once it is back"
    )
    # the trial cut short is failed and queued once the database is back. One exception, by design
    # (optiloss.liveness): when the outage began between the trial's creation and its worker record,
    # nothing tells a dead run from a live one yet; the orphan rule fails it 30 s after it started.
    again = run_cli("search", config(tmp_path, db_outage_s=3), "--storage", postgres_url, "--no-progress")
    assert again.returncode == 0, again.stderr
    complete, unfinished = finished_study(postgres_url)
    assert len(complete) >= 10
    for trial in unfinished:
        assert trial.state == TrialState.RUNNING and TrialKey.WORKER not in trial.user_attrs, trial


def test_a_wrong_password_is_one_line_at_once(postgres_url):
    wrong = postgres_url.replace("optiloss:optiloss@", "optiloss:wrong@")
    started = time.monotonic()
    result = run_cli("studies", "--storage", wrong)
    assert result.returncode == 2 and time.monotonic() - started < 30
    assert len(result.stderr.strip().splitlines()) == 1 and "refused the login" in result.stderr


def test_past_the_window_heartbeats_stop_quietly_while_every_other_call_raises(tmp_path):
    """The heartbeat runs in its own thread: once another thread's call has given up on the database,
    a heartbeat must end without a traceback, and the trial's own next call says why, in one line."""
    from optiloss.storage import DatabaseOutageError, OutageTolerantStorage

    storage = OutageTolerantStorage(f"sqlite:///{tmp_path / 'studies.db'}", outage_s=0)
    study = optuna.create_study(storage=storage, study_name="gone")
    trial = study.ask()
    storage._gave_up = True  # as _waited_too_long leaves it once an outage outlasts the window
    assert storage.record_heartbeat(trial._trial_id) is None
    with pytest.raises(DatabaseOutageError, match="unreachable for more than 0 s"):
        storage.get_all_studies()
