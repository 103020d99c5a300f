"""optiloss tune: a plain Optuna study over one loss's constants, resumable, then tested on fresh seeds."""

import optuna
import pytest
from optuna.trial import TrialState

from optiloss.genome.genome import CONSTANT_RANGE
from optiloss.genome.named import named_losses
from optiloss.tune import ZERO_RANGE, constant_space, tuned_genome

from conftest import run_main

CONFIG = 'epochs = 1\nmodel_width = 8\ndevice = "cpu"\nconstants = 2\nseed = 1\n'


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tune.toml"
    path.write_text(CONFIG + f'checkpoint_dir = "{tmp_path / "checkpoints"}"\n')
    return str(path)


def test_tuning_label_smoothing_starts_from_its_strength_resumes_and_tests_on_fresh_seeds(config, sqlite_url):
    first = run_main(
        "tune",
        "--zoo",
        "label_smoothing_0.1",
        "--config",
        config,
        "--n-trials",
        "3",
        "--storage",
        sqlite_url,
        "--no-progress",
    )
    assert first.returncode == 0, first.stderr
    assert "best constants of label_smoothing_0.1:" in first.stdout and "(as given: 0." in first.stdout
    study = optuna.load_study(study_name="digits-base-tune-label_smoothing_0.1", storage=sqlite_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and study.metric_names == ["accuracy"]
    assert complete[0].params == pytest.approx({"const0": 0.9, "const1": 0.01})  # the loss as given first
    assert len({t.params["const0"] for t in complete}) == 3  # CMA-ES moves both constants
    again = run_main(
        "tune",
        "--zoo",
        "label_smoothing_0.1",
        "--config",
        config,
        "--n-trials",
        "4",
        "--storage",
        sqlite_url,
        "--no-progress",
        "--evaluate",
        "2",
        "--against",
        "cross_entropy",
    )
    assert again.returncode == 0, again.stderr
    resumed = optuna.load_study(study_name="digits-base-tune-label_smoothing_0.1", storage=sqlite_url)
    assert [t.params for t in resumed.trials[:3]] == [t.params for t in study.trials[:3]]
    assert len([t for t in resumed.trials if t.state == TrialState.COMPLETE]) == 4
    assert "Welch's p" in again.stdout and "cross_entropy" in again.stdout
    assert "test split" in again.stdout


def test_a_loss_without_constants_is_one_line_and_exit_2(config, sqlite_url, tmp_path):
    result = run_main(
        "tune", "--loss", "ce=-(y * ln(|p| + eps))", "--config", config, "--storage", sqlite_url
    )
    assert result.returncode == 2 and "has no constants to tune" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    nothing = run_main("tune", "--config", config, "--storage", sqlite_url)
    assert nothing.returncode == 2 and "name one loss to tune" in nothing.stderr


def test_one_constant_is_tuned_with_tpe_and_a_formula_with_numbers_can_be_tuned(config, sqlite_url):
    result = run_main(
        "tune",
        "--loss",
        "mine=y * (0.5 * (1 - p) - ln(p))",
        "--config",
        config,
        "--n-trials",
        "2",
        "--storage",
        sqlite_url,
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="digits-base-tune-mine", storage=sqlite_url)
    assert [t.params for t in study.trials][0] == {"const0": 0.5}
    assert study.user_attrs["tuned_loss"]["label"] == "mine"


def test_each_constant_is_searched_near_its_value_without_crossing_zero():
    start = named_losses({"mine": "-(0.9 * y + 0.01) * ln(p) + 0 * p + (-2) * (y * p)"}, 12)["mine"]
    space, first = constant_space(start)
    by_value = {first[name]: (name, distribution) for name, distribution in space.items()}
    assert sorted(by_value) == [0.0, 0.01, 0.9, 2.0]
    name, weight = by_value[0.9]
    assert name.startswith("const") and weight.log and (weight.low, weight.high) == pytest.approx((0.09, 5.0))
    name, negative = by_value[2.0]  # the constant -2 is searched as its magnitude, named so
    assert name.startswith("minus_const") and negative.log and negative.low == pytest.approx(0.2)
    assert tuned_genome(start, first).formula == start.formula
    name, zero = by_value[0.0]
    assert not zero.log and (zero.low, zero.high) == ZERO_RANGE
    # a study made before searched the whole range, and continues so
    old, _ = constant_space(start, sign_keeping=False)
    assert {d.low for d in old.values()} == {CONSTANT_RANGE[0]}


def test_tuning_label_smoothing_never_flips_the_sign_of_a_weight(config, sqlite_url):
    result = run_main(
        "tune",
        "--zoo",
        "label_smoothing_0.1",
        "--config",
        config,
        "--n-trials",
        "6",
        "--storage",
        sqlite_url,
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="digits-base-tune-label_smoothing_0.1", storage=sqlite_url)
    trials = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(trials) == 6 and study.user_attrs["tuned_loss"]["space"] == "sign-keeping"
    assert all(t.params["const0"] > 0 and t.params["const1"] > 0 for t in trials)
    assert len({t.params["const0"] for t in trials}) == 6
    assert all(0.09 <= t.params["const0"] <= 5 and 0.001 <= t.params["const1"] <= 0.1 for t in trials)


def test_a_tune_study_made_before_continues_over_the_whole_range(config, sqlite_url):
    study = optuna.create_study(study_name="digits-base-tune-mine", storage=sqlite_url, direction="maximize")
    study.set_user_attr("tuned_loss", {"label": "mine", "formula": "(y * ((0.5 * (1 - p)) - ln(|p| + eps)))"})
    result = run_main(
        "tune",
        "--loss",
        "mine=y * (0.5 * (1 - p) - ln(p))",
        "--config",
        config,
        "--n-trials",
        "1",
        "--storage",
        sqlite_url,
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    (trial,) = optuna.load_study(study_name="digits-base-tune-mine", storage=sqlite_url).trials
    assert trial.distributions["const0"].low == CONSTANT_RANGE[0]


def test_ctrl_c_in_tune_says_its_finished_trials_are_kept(config, sqlite_url, monkeypatch):
    from optiloss.scoring import LossEvaluator

    train = LossEvaluator.evaluate
    calls = []

    def interrupted_on_the_second(self, *args, **kwargs):  # Ctrl-C while the second trial trains
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train(self, *args, **kwargs)

    monkeypatch.setattr(LossEvaluator, "evaluate", interrupted_on_the_second)
    arguments = ["tune", "--zoo", "label_smoothing_0.1", "--config", config, "--n-trials", "3"]
    result = run_main(*arguments, "--storage", sqlite_url, "--no-progress")
    assert result.returncode == 130
    assert result.stderr.strip().splitlines()[-1] == (
        "interrupted; the tune study keeps its finished trials. Continue it with: optiloss "
        + " ".join([*arguments, "--storage", sqlite_url, "--no-progress"])
    )
    study = optuna.load_study(study_name="digits-base-tune-label_smoothing_0.1", storage=sqlite_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
