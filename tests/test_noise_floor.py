"""Search quality: duplicates as the training sees them, and cross-entropy's noise floor in every study."""

import json

import optuna
import pytest
from optuna.trial import TrialState

from optiloss.genome import screen
from optiloss.genome.parse import parse_formula
from optiloss.settings import SearchConfig
from optiloss.studies import NOISE_FLOOR_ATTR, noise_floor

from conftest import run_cli

DISGUISED = {
    "plus_y_squared": "-(y * (y + ln(|p| + eps)))",  # CE - y^2: a term without p
    "y_squared_weight": "-(y * (y * ln(|p| + eps)))",  # y^2 ln p: CE for one-hot targets only
    "sqrt_y_weight": "((y - ln(|p| + eps)) * sqrt(|y|))",  # CE + const for one-hot targets only
    "twice": "(y * ((1 - ln(|p| + eps)) - ln(|p| + eps)))",  # 2 CE + y
}


def _search(tmp_path, url: str, augmentation: str, *extra: str, **keys) -> None:
    values = {
        "n_trials": 7,
        "population_size": 6,
        "epochs": 1,
        "model_width": 8,
        "device": "cpu",
        "artifacts": False,
        "augmentation": augmentation,
        "baseline_seeds": 0,
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        **keys,
    }
    config = tmp_path / f"{augmentation}.toml"
    config.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    result = run_cli("search", str(config), "--storage", url, "--no-progress", *extra)
    assert result.returncode == 0, result.stderr
    return result


def _given(url: str, study_name: str) -> dict[str, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=study_name, storage=url)
    return {t.user_attrs["loss_name"]: t for t in study.trials if "loss_name" in t.user_attrs}


def test_fingerprints_follow_the_gradient_on_the_studys_targets_and_the_optimisers_scale():
    fingerprints = {
        (augmentation, model): {
            name: screen(
                parse_formula(formula),
                **SearchConfig.from_mapping({"augmentation": augmentation, "model": model}).screen_options(),
            ).fingerprint
            for name, formula in {"ce": "-(y * ln(|p| + eps))", **DISGUISED}.items()
        }
        for augmentation in ("base", "mixup")
        for model in ("cnn", "airbench")
    }
    duplicates = {
        key: {name for name, value in prints.items() if value == prints["ce"] and name != "ce"}
        for key, prints in fingerprints.items()
    }
    # AdamW (cnn) ignores a positive scale; airbench's SGD does not
    assert duplicates[("base", "cnn")] == set(DISGUISED)
    assert duplicates[("base", "airbench")] == set(DISGUISED) - {"twice"}
    assert duplicates[("mixup", "cnn")] == {"plus_y_squared", "twice"}
    assert duplicates[("mixup", "airbench")] == {"plus_y_squared"}


@pytest.mark.slow
def test_losses_that_train_as_cross_entropy_are_rejected_as_its_duplicates_on_their_targets(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    options = [option for name, formula in DISGUISED.items() for option in ("--loss", f"{name}={formula}")]
    _search(tmp_path, url, "base", *options)
    base = _given(url, "digits-base")
    assert {t.state for t in base.values()} == {TrialState.PRUNED}
    # trial 0 is the zoo's cross-entropy
    assert {t.user_attrs["rejected"] for t in base.values()} == {"duplicate of trial 0"}

    _search(tmp_path, url, "mixup", *options, n_trials=9)  # two of them train
    mixup = _given(url, "digits-mixup")
    assert mixup["plus_y_squared"].state == TrialState.PRUNED
    assert mixup["plus_y_squared"].user_attrs["rejected"] == "duplicate of trial 0"
    assert mixup["twice"].state == TrialState.PRUNED  # the cnn's AdamW ignores the factor 2
    assert mixup["y_squared_weight"].state == TrialState.COMPLETE  # soft targets tell them apart
    assert mixup["sqrt_y_weight"].state == TrialState.COMPLETE


@pytest.mark.slow
def test_cross_entropys_seed_runs_are_trained_once_per_study_and_shown_beside_every_loss(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    first = _search(tmp_path, url, "base", baseline_seeds=3)
    assert "trained cross-entropy with 3 more seed(s) for the study's noise floor" in first.stdout
    study = optuna.load_study(study_name="digits-base", storage=url)
    runs = study.user_attrs[NOISE_FLOOR_ATTR]
    assert len(runs) == 3 and len({run["seed"] for run in runs}) == 3
    assert all(0.0 < run["accuracy"] <= 1.0 for run in runs)
    assert len(study.trials) >= 7 and not any("seed" in t.user_attrs for t in study.trials)  # not trials
    floor = noise_floor(study)
    assert floor.std > 0  # three seeds of one epoch do not agree to the image
    assert "noise floor: cross-entropy" in first.stdout

    pareto = run_cli("pareto", "digits-base", "--storage", url)
    header = pareto.stdout.splitlines()[0].split()
    assert header[:5] == ["trial", "accuracy", "robustness", "vs_ce", "loss"]
    assert pareto.stdout.strip().splitlines()[-1].startswith("noise floor: cross-entropy")
    trial = study.best_trials[0]
    shown = run_cli("show", "digits-base", str(trial.number), "--storage", url)
    assert "accuracy vs cross-entropy" in shown.stdout and "standard deviations" in shown.stdout

    from optiloss.report.dashboard import study_note

    note = study_note(study)
    assert "| trial | accuracy | vs cross-entropy |" in note and "## Noise floor" in note

    # a restart trains none of them again, and a study that lost one trains only that one
    again = _search(tmp_path, url, "base", "--n-trials", "8", baseline_seeds=3)
    assert "noise floor" not in again.stdout.split("Pareto set")[0]
    assert optuna.load_study(study_name="digits-base", storage=url).user_attrs[NOISE_FLOOR_ATTR] == runs
    study.set_user_attr(NOISE_FLOOR_ATTR, runs[:1])
    partial = _search(tmp_path, url, "base", baseline_seeds=3)
    assert "trained cross-entropy with 2 more seed(s)" in partial.stdout
    rebuilt = optuna.load_study(study_name="digits-base", storage=url).user_attrs[NOISE_FLOOR_ATTR]
    assert rebuilt[0] == runs[0] and [run["seed"] for run in rebuilt] == [run["seed"] for run in runs]
