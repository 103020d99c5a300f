"""End to end through the command line, into real SQLite files read back by plain Optuna."""

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from conftest import run_cli, run_main


def _complete(study):
    return [t for t in study.trials if t.state == TrialState.COMPLETE]


@pytest.mark.slow
def test_search_creates_a_plain_optuna_study_and_continues_it(tiny_config, sqlite_url):
    first = run_cli("search", str(tiny_config), "--storage", sqlite_url, "--no-progress")
    assert first.returncode == 0, first.stderr
    assert "digits-base: 0/6 complete, running 6 more" in first.stdout
    assert "Pareto set of digits-base" in first.stdout and "optiloss dashboard --storage" in first.stdout

    study = optuna.load_study(study_name="digits-base", storage=sqlite_url)
    assert study.metric_names == ["accuracy", "robustness"]
    assert study.user_attrs["dataset"] == "digits" and study.user_attrs["augmentation"] == "base"
    assert study.user_attrs["config"]["n_trials"] == 6
    complete = _complete(study)
    assert len(complete) == 6
    zoo_trials = [t for t in complete if "zoo" in t.user_attrs]
    assert {t.user_attrs["zoo"] for t in zoo_trials} == {
        "cross_entropy",
        "focal",
        "poly1",
        "mse",
        "baikal",
        "label_smoothing",
    }
    assert all(t.system_attrs["NSGAIISampler:generation"] == 0 for t in zoo_trials)
    for trial in complete:
        assert 0.0 <= trial.values[0] <= 1.0 and 0.0 <= trial.values[1] <= 1.0
        for key in (
            "formula",
            "latex",
            "fingerprint",
            "orientation",
            "training_seconds",
            "robustness_gaussian_noise",
            "robustness_gaussian_blur",
        ):
            assert key in trial.user_attrs, key
    cross_entropy = next(t for t in zoo_trials if t.user_attrs["zoo"] == "cross_entropy")
    assert cross_entropy.values[0] > 0.25  # two epochs of a tiny net learn digits well above chance (0.1)
    for trial in study.trials:
        if trial.state == TrialState.PRUNED:
            assert trial.user_attrs["rejected"]

    optuna_cli = Path(sys.executable).with_name("optuna")
    listed = subprocess.run(
        [str(optuna_cli), "trials", "--study-name", "digits-base", "--storage", sqlite_url, "-f", "json"],
        capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == len(study.trials)

    before = {t.number: (t.values, t.datetime_complete) for t in complete}
    second = run_cli("search", str(tiny_config), "--storage", sqlite_url, "--n-trials", "8", "--no-progress")
    assert second.returncode == 0, second.stderr
    assert "digits-base: 6/8 complete, running 2 more" in second.stdout
    study = optuna.load_study(study_name="digits-base", storage=sqlite_url)
    complete = _complete(study)
    assert len(complete) == 8
    assert {t.number: (t.values, t.datetime_complete) for t in complete if t.number in before} == before
    fingerprints = [t.user_attrs["fingerprint"] for t in complete]
    assert len(set(fingerprints)) == len(fingerprints)  # no genome behaviour was trained twice

    third = run_cli("search", str(tiny_config), "--storage", sqlite_url, "--n-trials", "8", "--no-progress")
    assert third.returncode == 0 and "8/8 complete, nothing to run" in third.stdout

    pareto = run_cli("pareto", "digits-base", "--storage", sqlite_url, "--format", "json")
    rows = json.loads(pareto.stdout)
    assert rows and {row["trial"] for row in rows} == {t.number for t in study.best_trials}
    studies = run_cli("studies", "--storage", sqlite_url)
    assert "digits-base" in studies.stdout and "complete" in studies.stdout
    source = run_cli("show", "digits-base", "0", "--storage", sqlite_url, "--format", "python")
    assert source.returncode == 0 and "def loss(y: torch.Tensor, p: torch.Tensor)" in source.stdout
    text = run_cli("show", "digits-base", "0", "--storage", sqlite_url)
    assert "zoo: cross_entropy" in text.stdout and "-(y * ln(|p| + eps))" in text.stdout


@pytest.mark.parametrize(
    "line, names",
    [
        ('epochs = "ten"', "epochs must be an integer"),
        ("population_size = 1", "population_size must be >= 2"),
        ("learning_rat = 0.1", "unknown key 'learning_rat'"),
        ('augmentation = "sepia"', "augmentation must be one of base"),
    ],
)
def test_a_bad_config_exits_2_with_one_line_and_leaves_the_database_alone(tmp_path, sqlite_url, line, names):
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    bad = tmp_path / "bad.toml"
    bad.write_text(f"n_trials = 3\n{line}\n")
    result = run_main("search", str(bad), "--storage", sqlite_url)
    assert result.returncode == 2
    assert names in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not database.exists()

    # an existing database is not touched either
    optuna.create_study(study_name="other", storage=sqlite_url)
    snapshot = database.read_bytes()
    assert run_main("search", str(bad), "--storage", sqlite_url).returncode == 2
    assert database.read_bytes() == snapshot


def test_user_errors_are_one_line_without_traceback(tmp_path, sqlite_url):
    missing = run_main("pareto", "nope", "--storage", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.returncode == 1 and "no study database at" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    optuna.create_study(study_name="other", storage=sqlite_url)
    unknown = run_main("pareto", "nope", "--storage", sqlite_url)
    assert unknown.returncode == 1 and "no study named 'nope'; studies here: other" in unknown.stderr
    unreachable = run_main("studies", "--storage", "postgresql://me:s3cret@127.0.0.1:9/nowhere")
    assert unreachable.returncode == 1 and "cannot open storage" in unreachable.stderr
    assert "s3cret" not in unreachable.stderr + unreachable.stdout
    for result in (missing, unknown, unreachable):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    usage = run_main("search", "--n-trials", "many")
    assert usage.returncode == 2 and "invalid int value" in usage.stderr


def test_every_command_has_help():
    for command in ([], ["search"], ["studies"], ["pareto"], ["show"], ["dashboard"]):
        result = run_main(*command, "--help")
        assert result.returncode == 0 and "usage: optiloss" in result.stdout


def test_help_offers_each_command_only_the_augmentations_it_accepts():
    for command in ("evaluate", "tune", "transfer"):
        text = run_main(command, "--help").stdout
        assert "--augmentation {base,cutout,mixup,randaug,all}" in text, command
        assert "all5" not in text, command
        loss = {"evaluate": ["y * ln(p)"], "tune": ["--loss", "a=0.5 * y * ln(p)"]}.get(
            command, ["digits-base"]
        )
        refused = run_main(command, *loss, "--augmentation", "all5")
        assert refused.returncode == 2, (command, refused.stderr)
        assert re.search("trains under one augmentation|a transfer trains one", refused.stderr), (
            refused.stderr
        )
    assert "--augmentation {base,cutout,mixup,randaug,all,all5}" in run_main("search", "--help").stdout


def test_tune_help_takes_one_loss_and_a_second_is_refused_by_name():
    text = " ".join(run_main("tune", "--help").stdout.split())
    assert "whose constants to tune; one only" in text
    assert "repeatable" not in text
    assert "repeatable" in " ".join(run_main("search", "--help").stdout.split())
    twice = run_main("tune", "--loss", "a=0.5 * y * ln(p)", "--loss", "b=0.2 * y * ln(p)")
    assert twice.returncode == 2
    assert twice.stderr.strip() == "optiloss: error: tune tunes one loss: --loss is given 2 times"
