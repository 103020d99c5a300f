"""Where a search's time goes: the breakdown from the trials' own timestamps, the SQLite settings
that make each storage write cheap, and the per-trial plots drawn only where they are needed."""

import datetime
import os
import re
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from optiloss.genome import zoo
from optiloss.records import TrialKey
from optiloss.report import dashboard_hooks, show_trial
from optiloss.search import SearchConfig
from optiloss.search.hooks import SearchHooks
from optiloss.search.objective import on_front
from optiloss.search.run import run_search
from optiloss.search.sampler import genome_search_space
from optiloss.storage import open_storage
from optiloss.studies import rejections, time_breakdown

from conftest import ROOT, run_main

START = datetime.datetime(2026, 12, 1, 12, 0, 0)


def _trial(
    start: float,
    end: float,
    pid: int | None,
    training: float = 0.0,
    scoring: float | None = None,
    state: TrialState = TrialState.COMPLETE,
    **attrs,
):
    user_attrs = dict(attrs)
    if pid is not None:
        user_attrs[TrialKey.WORKER] = {"host": "h", "pid": pid, "trial": 0}
    if training:
        user_attrs[TrialKey.TRAINING_SECONDS] = training
    if scoring is not None:
        user_attrs[TrialKey.EVALUATION_SECONDS] = scoring
    trial = optuna.trial.create_trial(
        state=state,
        values=(0.5, 0.5) if state == TrialState.COMPLETE else None,
        params=zoo(5, 0)["mse"].to_params(),
        distributions=genome_search_space(5),
        user_attrs=user_attrs,
    )
    trial.datetime_start = START + datetime.timedelta(seconds=start)
    trial.datetime_complete = START + datetime.timedelta(seconds=end)
    return trial


def test_the_breakdown_adds_up_over_workers_and_leaves_out_a_pause_between_runs():
    study = optuna.create_study(directions=["maximize", "maximize"])
    for trial in [
        # run 1, worker 1: 0-10 s, two trained trials and a rejected one
        _trial(0, 4, 1, training=3.0, scoring=0.5),
        _trial(4, 4.5, 1, state=TrialState.PRUNED, rejected="does not depend on p"),
        _trial(5, 10, 1, training=4.0, scoring=0.5),
        # run 1, worker 2, in parallel: 1-9 s
        _trial(1, 9, 2, training=6.0, scoring=1.0),
        # two hours later, a resumed run (worker 3): 7210-7220 s
        _trial(7210, 7220, 3, training=8.0, scoring=1.0, screened_out={"duplicate": 4}),
        # a trial without a worker record (a study made before it): 7230-7232 s, one more worker
        _trial(7230, 7232, None, training=1.0),
    ]:
        study.add_trial(trial)
    breakdown = time_breakdown(study)
    assert breakdown.workers == 4 and breakdown.trials == 6
    assert breakdown.wall_seconds == pytest.approx(10 + 22)  # the two-hour pause is the search stopped
    assert breakdown.worker_seconds == pytest.approx(10 + 8 + 10 + 2)
    assert breakdown.training_seconds == pytest.approx(22.0)
    assert breakdown.scoring_seconds == pytest.approx(3.0)
    assert breakdown.outside_seconds == pytest.approx(5.0)
    total = breakdown.training_seconds + breakdown.scoring_seconds + breakdown.outside_seconds
    assert total == pytest.approx(breakdown.worker_seconds)
    assert "training 73.3%, scoring 10.0%, outside both 16.7%" in breakdown.describe()
    found = rejections(study)
    assert found.stored == {"does not depend on p": 1} and found.redrawn == {"duplicate": 4}


def test_sqlite_opened_for_writing_logs_ahead_with_normal_sync_and_reading_changes_nothing(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'w.db'}")
    optuna.create_study(storage=storage, study_name="s")
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    reader = open_storage(f"sqlite:///{tmp_path / 'w.db'}", create=False)
    assert optuna.load_study(study_name="s", storage=reader).study_name == "s"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A real digits search of a few short trials; the report hook marks when its trials began and
    ended as the search itself sees it."""
    folder = tmp_path_factory.mktemp("timed")
    marks: list[float] = []
    config = SearchConfig.from_mapping(
        {
            "n_trials": 8,
            "population_size": 4,
            "epochs": 1,
            "model_width": 8,
            "device": "cpu",
            "baseline_seeds": 0,
            "constants": 0,
            "checkpoint_dir": str(folder / "checkpoints"),
            "artifact_dir": str(folder / "artifacts"),
        }
    )
    url = f"sqlite:///{folder / 'studies.db'}"
    hooks = SearchHooks(
        study_report=lambda study: marks.append(time.time()),  # at the start and at the end
        trial_trained=dashboard_hooks(config).trial_trained,
    )
    outcome = run_search(config, url, progress=False, log=lambda line: None, hooks=hooks)
    assert outcome.study is not None
    return url, outcome.study, marks[-1] - marks[0]


def test_the_breakdown_of_a_real_search_sums_to_its_wall_time(searched):
    _, study, measured = searched
    breakdown = time_breakdown(study)
    assert breakdown.workers == 1 and breakdown.worker_seconds == pytest.approx(breakdown.wall_seconds)
    # the trials span the search loop, less what happens before the first and after the last trial
    assert 0 < breakdown.wall_seconds <= measured
    assert measured - breakdown.wall_seconds < 0.5 + 0.05 * measured
    total = breakdown.training_seconds + breakdown.scoring_seconds + breakdown.outside_seconds
    assert total == pytest.approx(breakdown.wall_seconds, abs=1e-6)
    assert breakdown.training_seconds > 0 and breakdown.scoring_seconds > 0 and breakdown.outside_seconds > 0


def test_a_new_search_stores_no_genome_rejected_for_its_structure(searched):
    _, study, _ = searched
    reasons = [t.user_attrs.get("rejected") or "" for t in study.trials]
    assert not [reason for reason in reasons if reason.startswith("does not depend")]


def test_only_trials_on_the_front_when_they_finish_carry_plots(searched):
    _, study, _ = searched
    complete = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.datetime_complete)
    with_plots = [t for t in complete if any(key.startswith("artifacts:") for key in t.system_attrs)]
    assert complete[0] in with_plots  # nothing dominated the first
    for index, trial in enumerate(complete):
        earlier = optuna.create_study(directions=["maximize", "maximize"])
        earlier.add_trials(complete[:index])
        assert (trial in with_plots) == on_front(earlier, trial.values), trial.number


def test_pareto_prints_the_rejections_and_the_time_shares_and_show_a_trials_redraws(searched):
    url, study, _ = searched
    printed = run_main("pareto", study.study_name, "--storage", url)
    assert printed.returncode == 0, printed.stderr
    rejected = r"rejected genomes: \d+ stored as PRUNED trials.*, \d+ redrawn inside the sampler"
    shares = r"time: [\d.]+ s running \d+ trials; training [\d.]+%, scoring [\d.]+%, outside both [\d.]+%"
    assert re.search(rejected, printed.stdout) and re.search(shares, printed.stdout)
    made = optuna.create_study(directions=["maximize", "maximize"])
    made.add_trial(_trial(0, 1, 1, training=0.5, screened_out={"duplicate": 4, "plateau": 1}))
    assert "screened_out: {'duplicate': 4, 'plateau': 1}" in show_trial(made, 0)


POP_WAITING = """
import sys
import optuna
from optiloss.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="race", storage=open_storage(sys.argv[1]))
numbers = [study.ask().number for _ in range(120)]
print(" ".join(str(number) for number in numbers if number < 200))
"""


def test_two_processes_never_take_the_same_waiting_trial_from_sqlite(tmp_path):
    """Optuna reads a waiting trial's state, then marks it RUNNING; SQLite ignores FOR UPDATE, so
    without BEGIN IMMEDIATE two workers took the same trial (about 10 of 200 here) and the second
    failed with "Cannot tell a COMPLETE trial"."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    for x in range(200):
        study.enqueue_trial({"x": x})
    script = tmp_path / "pop.py"
    script.write_text(POP_WAITING)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    workers = [
        subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    taken = [set(worker.communicate(timeout=120)[0].split()) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    assert not taken[0] & taken[1]
    assert len(taken[0] | taken[1]) == 200
