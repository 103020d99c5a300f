"""optiloss matrix: the studies named, their settings shared, the cells scored on the test split."""

import optuna
import pytest

from optiloss.genome import Genome, zoo
from optiloss.search.study import search_study_attrs
from optiloss.settings import SearchConfig

from conftest import run_main

SETTINGS = {
    "dataset": "digits",
    "epochs": 1,
    "model_width": 8,
    "subset": 300,
    "device": "cpu",
    "constants": 0,
}


def _searched(url: str, name: str, augmentation: str, **changes) -> None:
    """A search study holding one COMPLETE trial, cross-entropy, as a search stores it (no training:
    the matrix retrains what it selects)."""
    config = SearchConfig.from_mapping({**SETTINGS, **changes, "augmentation": augmentation})
    study = optuna.create_study(study_name=name, storage=url, directions=["maximize", "maximize"])
    for key, value in search_study_attrs(config).items():
        study.set_user_attr(key, value)
    cross_entropy = zoo(config.nodes, config.constants)["cross_entropy"]
    study.enqueue_trial(cross_entropy.to_params())

    def stored(trial):
        Genome.suggest(trial, config.nodes, config.constants)
        trial.set_user_attr("zoo", "cross_entropy")
        return 0.9, 0.5

    study.optimize(stored, n_trials=1)


@pytest.fixture
def storage(sqlite_url):
    _searched(sqlite_url, "digits-base", "base", model_width=16)  # a demo's study, made wider
    _searched(sqlite_url, "exp-base", "base")
    _searched(sqlite_url, "exp-cutout", "cutout")
    return sqlite_url


def test_the_matrix_takes_the_studies_of_its_prefix_only_and_scores_on_the_test_split(
    storage, tmp_path, monkeypatch
):
    import optiloss.matrix

    splits, seeds = [], set()
    evaluator = optiloss.matrix.LossEvaluator

    class Watched(evaluator):
        def __init__(self, *args, **kwargs):
            splits.append(kwargs["split"])
            super().__init__(*args, **kwargs)

        def evaluate(self, genome, augmentation, seed, **kwargs):
            seeds.add(seed)
            return super().evaluate(genome, augmentation, seed, **kwargs)

    monkeypatch.setattr(optiloss.matrix, "LossEvaluator", Watched)
    output = tmp_path / "report"
    result = run_main(
        "matrix", "--prefix", "exp", "--seeds", "1", "--storage", storage, "--output", str(output)
    )
    assert result.returncode == 0, result.stderr
    assert (
        "Accuracy on the test split, which no search selected on; losses of exp-base, exp-cutout and "
        "cross-entropy, with fresh seeds." in result.stdout
    )
    assert splits == ["test"]
    assert 0 not in seeds  # the searches trained every trial with seed 0
    assert (output / "digits-matrix.csv").exists()


def test_the_matrix_refuses_studies_of_mixed_settings_and_names_that_are_no_search(storage):
    mixed = run_main("matrix", "--study", "digits-base", "--study", "exp-cutout", "--storage", storage)
    assert mixed.returncode == 2
    assert mixed.stderr.strip() == (
        "optiloss: error: the matrix trains every cell with one setting, and studies 'digits-base' and "
        "'exp-cutout' differ: model_width 16 and 8; choose studies made with the same settings"
    )
    twice = run_main("matrix", "--study", "digits-base", "--study", "exp-base", "--storage", storage)
    assert twice.returncode == 2 and "'digits-base' and 'exp-base' are both base searches" in twice.stderr
    unknown = run_main("matrix", "--prefix", "paper", "--storage", storage)
    assert unknown.returncode == 2
    assert "no search study named paper-{base,cutout,mixup,randaug,all}" in unknown.stderr
    assert "the search studies: digits-base, exp-base, exp-cutout" in unknown.stderr
    nothing = run_main("matrix", "--storage", storage)
    assert (
        nothing.returncode == 2
        and "one of the arguments --dataset --prefix --study is required" in nothing.stderr
    )


def test_a_hand_given_loss_the_search_trained_is_called_by_its_name_in_the_matrix(sqlite_url):
    from optiloss.matrix import matrix_losses

    config = SearchConfig.from_mapping({**SETTINGS, "augmentation": "base"})
    study = optuna.create_study(study_name="named-base", storage=sqlite_url, directions=["maximize"] * 2)
    for key, value in search_study_attrs(config).items():
        study.set_user_attr(key, value)
    study.enqueue_trial(zoo(config.nodes)["mse"].to_params(), user_attrs={"loss_name": "sq"})
    study.enqueue_trial(zoo(config.nodes)["focal"].to_params())

    def stored(trial):
        Genome.suggest(trial, config.nodes, config.constants)
        return (0.95, 0.5) if trial.number == 0 else (0.9, 0.5)

    study.optimize(stored, n_trials=2)
    labels = list(matrix_losses({"base": study}, 2, "accuracy", {}))
    assert labels == ["cross_entropy", "sq", "base#1"]  # not base#0: a given loss has its name


def test_the_matrix_read_back_from_its_ledger_keeps_the_run_order_and_leaves_a_missing_cell_nan():
    import math

    from optiloss.matrix import read_matrix
    from optiloss.records import TransferRunRecord

    storage = optuna.storages.InMemoryStorage()
    assert read_matrix(storage, "ledger", "digits", "val", ()) is None
    ledger = optuna.create_study(study_name="ledger", storage=storage, directions=["maximize"] * 2)
    assert read_matrix(storage, "ledger", "digits", "val", ()) is None  # no finished run yet
    for loss, augmentation, seed, accuracy in [
        ("trial_4", "mixup", 0, 0.6),
        ("cross_entropy", "mixup", 0, 0.5),
        ("cross_entropy", "base", 0, 0.7),
        ("cross_entropy", "base", 1, 0.8),
    ]:
        attrs = TransferRunRecord(loss, augmentation, seed, f"{loss}(p)").to_user_attrs()
        ledger.add_trial(optuna.trial.create_trial(values=[accuracy, 0.1], user_attrs=attrs))
    result = read_matrix(storage, "ledger", "digits", "val", ("exp-base",))
    assert result is not None and result.split_name == "validation" and result.studies == ("exp-base",)
    assert result.losses == {"trial_4": "trial_4(p)", "cross_entropy": "cross_entropy(p)"}
    assert result.augmentations == ("base", "mixup")  # the order of AUGMENTATIONS, not of the runs
    means = result.means()
    assert math.isnan(means[0, 0]) and means[0, 1] == 0.6
    assert list(means[1]) == pytest.approx([0.75, 0.5])
    rows = {row["loss"]: row for row in result.rows()}  # the page's and the CLI's table of a stopped matrix
    assert rows["trial_4"]["base"] == "not run" and rows["trial_4"]["mixup"] == "0.6000 +- 0.0000"
    assert rows["cross_entropy"]["base"] == "0.7500 +- 0.0707"
