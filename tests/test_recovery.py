"""Crash safety: kill -9, Ctrl-C, resume from checkpoints, workers on PostgreSQL, and bad inputs."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from conftest import ROOT, run_cli


def _config(tmp_path: Path, n_trials: int, epochs: int = 25, population: int = 5, **extra) -> Path:
    """Digits trials of a few seconds each, long enough to be killed in the middle."""
    lines = {
        "n_trials": n_trials,
        "population_size": population,
        "epochs": epochs,
        "model_width": 32,
        "batch_size": 64,
        "device": "cpu",
        "heartbeat_interval": 1,
        "grace_period": 4,
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "artifacts": False,
        "baseline_seeds": 0,
        # long trials: a checkpoint after every epoch (each takes well over 10 ms)
        "checkpoint_interval": 0.01,
        "constants": 0,  # the six-loss zoo: a retry queues right behind it
        **extra,
    }
    path = tmp_path / "search.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in lines.items()))
    return path


def _default_sigint() -> None:
    # a command started in the background by a non-interactive shell inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler: give the search the terminal's default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(config: Path, storage: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "optiloss",
            "search",
            str(config),
            "--storage",
            storage,
            "--no-progress",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
        env={k: v for k, v in os.environ.items() if k != "OPTILOSS_STORAGE"},
    )


def _wait_for(condition, process: subprocess.Popen, timeout: float = 240.0):
    """Poll until ``condition()`` is truthy (returns it); fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (KeyError, sqlalchemy_errors()):
            value = None
        if value:
            return value
        if process.poll() is not None:
            pytest.fail(f"the search ended before the condition held: {process.stderr.read()}")
        time.sleep(0.05)
    pytest.fail("condition not reached in time")


def sqlalchemy_errors():
    import sqlalchemy.exc

    return sqlalchemy.exc.SQLAlchemyError


def _trial_past_first_epoch(storage: str):
    """A RUNNING trial whose checkpoint file exists (it finished an epoch), if any."""
    study = optuna.load_study(study_name="digits-base", storage=storage)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        path = trial.user_attrs.get("checkpoint")
        if path and Path(path).exists():
            return trial.number
    return None


def _kill_mid_trial_then_resume(tmp_path: Path, storage: str) -> None:
    # the retry queues behind the waiting zoo trials, so the budget covers all of them
    config = _config(tmp_path, n_trials=6, epochs=10)
    process = _start(config, storage)
    victim = _wait_for(lambda: _trial_past_first_epoch(storage), process)
    study = optuna.load_study(study_name="digits-base", storage=storage)
    complete_before = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (
        optuna.load_study(study_name="digits-base", storage=storage).trials[victim].state
        == TrialState.RUNNING
    )

    resumed = run_cli("search", str(config), "--storage", storage, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert f"trial(s) {victim} lost their worker" in resumed.stdout
    study = optuna.load_study(study_name="digits-base", storage=storage)
    killed = study.trials[victim]
    assert killed.state == TrialState.FAIL and "died" in killed.user_attrs["fail_reason"]
    retries = [t for t in study.trials if victim in t.system_attrs.get("retry_history", [])]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    assert retries[0].user_attrs["resumed_from_epoch"] >= 1
    complete = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
    assert all(complete.get(number) == values for number, values in complete_before.items())
    assert len(complete) == 6
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert not list((tmp_path / "checkpoints").rglob("*.pt"))  # removed once trials complete


@pytest.mark.slow
def test_kill_9_mid_trial_on_sqlite_resumes_the_trial_from_its_checkpoint(tmp_path, sqlite_url):
    _kill_mid_trial_then_resume(tmp_path, sqlite_url)


@pytest.mark.slow
def test_kill_9_mid_trial_on_postgresql_resumes_the_trial_from_its_checkpoint(tmp_path, postgres_url):
    _kill_mid_trial_then_resume(tmp_path, postgres_url)


@pytest.mark.slow
def test_five_kills_at_random_moments_still_reach_the_budget(tmp_path, sqlite_url):
    config = _config(tmp_path, n_trials=8, epochs=8)
    chooser = random.Random(20240409)
    for _ in range(5):
        process = _start(config, sqlite_url)
        time.sleep(chooser.uniform(1.0, 6.0))  # the fault: a kill at an arbitrary moment
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = run_cli("search", str(config), "--storage", sqlite_url, "--no-progress")
    assert final.returncode == 0, final.stderr
    study = optuna.load_study(study_name="digits-base", storage=sqlite_url)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 8
    assert TrialState.RUNNING not in states


@pytest.mark.slow
def test_three_workers_share_one_postgresql_study(tmp_path, postgres_url):
    config = _config(tmp_path, n_trials=12, epochs=4, population=6, model_width=8)
    result = run_cli("search", str(config), "--storage", postgres_url, "--workers", "3", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "3 workers" in result.stdout
    study = optuna.load_study(study_name="digits-base", storage=postgres_url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert 12 <= len(complete) <= 14  # workers finishing their last trial together may overshoot
    assert all("NSGAIISampler:generation" in t.system_attrs for t in complete)
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.FAIL)]
    pids = {t.user_attrs["worker"]["pid"] for t in study.trials}
    assert len(pids) == 3

    def rejected_this_run(output: str) -> int:
        return int(re.search(r"(\d+) genomes rejected this run", output)[1])

    def rejected_in_study() -> int:
        """PRUNED trials and the genomes the sampler redrew (screen_in_sampler, the default)."""
        redrawn = sum(sum(t.user_attrs.get("screened_out", {}).values()) for t in study.get_trials())
        return len(study.get_trials(states=(TrialState.PRUNED,))) + redrawn

    pruned_before = rejected_in_study()
    assert rejected_this_run(result.stdout) == pruned_before
    more = run_cli(
        "search",
        str(config),
        "--storage",
        postgres_url,
        "--workers",
        "2",
        "--n-trials",
        "17",
        "--no-progress",
    )
    assert more.returncode == 0, more.stderr
    pruned_after = rejected_in_study()
    assert rejected_this_run(more.stdout) == pruned_after - pruned_before


@pytest.mark.slow
def test_ctrl_c_fails_the_trial_as_interrupted_prints_the_resume_command_and_resume_retries_it(
    tmp_path, sqlite_url
):
    config = _config(tmp_path, n_trials=6, epochs=10)
    process = _start(config, sqlite_url)
    victim = _wait_for(lambda: _trial_past_first_epoch(sqlite_url), process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130
    assert f"Resume with: optiloss search {config} --storage {sqlite_url}" in stderr
    assert "Traceback" not in stderr
    study = optuna.load_study(study_name="digits-base", storage=sqlite_url)
    assert study.trials[victim].state == TrialState.FAIL
    assert study.trials[victim].user_attrs["fail_reason"] == "interrupted"
    resumed = run_cli("search", str(config), "--storage", sqlite_url, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="digits-base", storage=sqlite_url)
    retry = next(t for t in study.trials if victim in t.system_attrs.get("retry_history", []))
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] >= 1


def test_a_resumed_training_run_matches_an_uninterrupted_one(tmp_path):
    from optiloss.augment import build_augmentation
    from optiloss.data import load_dataset
    from optiloss.genome import screen, zoo
    from optiloss.models import create_model
    from optiloss.train import Checkpointing, TrainSettings, seeded, train

    data = load_dataset("digits")
    loss = screen(zoo()["cross_entropy"]).genome
    augmentation = build_augmentation("base", data.image_size, 10)

    def run(settings, checkpointing=None):
        with seeded(5):
            model = create_model("surrogate", 10, 3, 8)
            result = train(
                model,
                data.train_images,
                data.train_labels,
                loss,
                augmentation,
                settings,
                checkpointing=checkpointing,
            )
        return model, result

    full_model, full = run(TrainSettings(epochs=4))
    saved = tmp_path / "c.pt"
    run(TrainSettings(epochs=4), Checkpointing(save_to=saved))  # leaves the epoch-4 state
    state = torch.load(saved, weights_only=True)  # tensors and plain values only: nothing to unpickle
    assert state["epoch"] == 4 and isinstance(state["rng"], torch.Tensor)
    # stop after two epochs by truncating a copy of the run, then resume
    partial_path = tmp_path / "partial.pt"
    with seeded(5):
        model = create_model("surrogate", 10, 3, 8)
        settings = TrainSettings(epochs=4)
        import optiloss.train as training

        original = training._save_checkpoint
        calls = []

        def stop_after_two(path, state):
            original(path, state)
            calls.append(state["epoch"])
            if state["epoch"] == 2:
                raise KeyboardInterrupt

        training._save_checkpoint = stop_after_two
        try:
            with pytest.raises(KeyboardInterrupt):
                train(
                    model,
                    data.train_images,
                    data.train_labels,
                    loss,
                    augmentation,
                    settings,
                    checkpointing=Checkpointing(save_to=partial_path),
                )
        finally:
            training._save_checkpoint = original
    resumed_model, resumed = run(TrainSettings(epochs=4), Checkpointing(resume_from=partial_path))
    assert resumed.resumed_from_epoch == 2
    assert [round(h["loss"], 6) for h in resumed.history] == [round(h["loss"], 6) for h in full.history]
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


class _OpensAFile:
    """Unpickled, it would create ``path``: what a checkpoint of someone else's making could run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _checkpoint_that_needs_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "epoch": 1, "history": [], "rng": _OpensAFile(marker)}, path)
    return path


def test_a_checkpoint_that_needs_pickle_is_refused_and_runs_nothing(tmp_path):
    from optiloss.data import load_dataset
    from optiloss.errors import OptilossError
    from optiloss.genome import screen, zoo
    from optiloss.models import create_model
    from optiloss.train import Checkpointing, TrainSettings, train

    data = load_dataset("digits")
    marker = tmp_path / "ran"
    checkpoint = _checkpoint_that_needs_pickle(tmp_path / "checkpoints" / "c.pt", marker)
    with pytest.raises(OptilossError, match=r"checkpoint .*c\.pt holds objects other than tensors"):
        train(
            create_model("surrogate", 10, 3, 8),
            data.train_images,
            data.train_labels,
            screen(zoo()["cross_entropy"]).genome,
            lambda images, labels: (images, torch.nn.functional.one_hot(labels, 10).float()),
            TrainSettings(epochs=1),
            checkpointing=Checkpointing(resume_from=checkpoint),
        )
    assert not marker.exists()


def test_a_retry_whose_checkpoint_lies_outside_the_checkpoint_folder_trains_from_its_start(
    tmp_path, tiny_config, capsys
):
    from optiloss.genome import screen, zoo
    from optiloss.scoring import load_data
    from optiloss.search.objective import LossSearchObjective
    from optiloss.settings import SearchConfig

    config = SearchConfig.load(tiny_config)
    outside = _checkpoint_that_needs_pickle(tmp_path / "elsewhere" / "7" / "checkpoint.pt", tmp_path / "ran")
    study = optuna.create_study(directions=["maximize", "maximize"])
    genome = screen(zoo(config.nodes)["cross_entropy"]).genome
    study.enqueue_trial(genome.to_params(), user_attrs={"checkpoint": str(outside)})
    objective = LossSearchObjective(config, load_data(config, progress=False), torch.device("cpu"))
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE and trial.user_attrs.get("resumed_from_epoch") is None
    assert outside.exists() and not (tmp_path / "ran").exists()  # neither loaded nor removed
    assert trial.user_attrs["checkpoint"].startswith(str(tmp_path / "checkpoints"))
    assert f"its checkpoint {outside} lies outside checkpoint_dir {tmp_path / 'checkpoints'}" in (
        capsys.readouterr().err
    )
