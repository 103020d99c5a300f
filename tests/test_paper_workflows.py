"""The paper's workflows: losses written by hand, the single-objective evolution search, choosing and
pooling losses for transfer, and the source's augmentation settings carried into a transfer."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_recovery import _start, _wait_for

from optiloss.genome import screen, zoo
from optiloss.settings import TransferConfig
from optiloss.studies import select_trials, trial_genome
from optiloss.transfer import losses_to_transfer, source_augment_settings

from conftest import ROOT, run_cli, run_main, small_search

FOCAL = "-(y * ((1 - p)^2 * ln(|p| + eps)))"
SQUARED = "(y - p)^2"


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """Two real digits searches in one storage: base (with a loss given by formula) and mixup."""
    folder = tmp_path_factory.mktemp("sources")
    url = small_search(folder, n_trials=8, epochs=2, artifacts=False)
    mixup = small_search(folder, n_trials=7, epochs=2, artifacts=False, augmentation="mixup", seed=5)
    assert mixup == url
    return url, folder


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def test_every_formula_show_prints_for_the_zoo_is_read_back_into_the_same_loss_at_five_nodes():
    import torch

    from optiloss.genome.named import named_losses

    oriented = {name: screen(genome).genome for name, genome in zoo().items()}
    # focal and label smoothing use all five nodes and print negated: -(X) is read as X, oriented
    read = named_losses({f"my_{name}": genome.formula for name, genome in oriented.items()}, 5)
    generator = torch.Generator().manual_seed(1)
    p = torch.softmax(3 * torch.randn(32, 10, generator=generator, dtype=torch.float64), 1)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (32,), generator=generator), 10).double()
    for name, genome in oriented.items():
        assert torch.allclose(read[f"my_{name}"].per_sample(y, p), genome.per_sample(y, p)), name


def test_a_loss_given_on_the_command_line_is_trained_in_the_first_generation(tmp_path, sqlite_url):
    config = tmp_path / "search.toml"
    config.write_text(
        'n_trials = 9\npopulation_size = 7\nepochs = 2\nmodel_width = 8\ndevice = "cpu"\n'
        "baseline_seeds = 0\nconstants = 0\n"  # the zoo of six losses, as without constants
        f'artifacts = false\ncheckpoint_dir = "{tmp_path / "checkpoints"}"\n'
        '[losses]\nhinge_like = "max((1 - p) * y, 0)"\n'
    )
    result = run_cli(
        "search",
        str(config),
        "--storage",
        sqlite_url,
        "--no-progress",
        "--loss",
        f"sq_plus={SQUARED} + y * p",
        "--loss",
        "mine=-(y * sqrt(|p|))",
    )
    assert result.returncode == 0, result.stderr
    trials = _study(sqlite_url, "digits-base").trials
    given = {t.user_attrs["loss_name"]: t for t in trials if "loss_name" in t.user_attrs}
    assert set(given) == {"hinge_like", "sq_plus", "mine"}
    assert all(t.state == TrialState.COMPLETE for t in given.values())
    assert all(t.number < 9 for t in given.values())  # queued with the zoo, before any evolved genome
    assert "sqrt(|p|)" in given["mine"].user_attrs["formula"]
    # above the zoo's size too, the search ends with a line per given loss
    ending = result.stdout.strip().splitlines()[-3:]
    assert [line.split(": trained as trial ")[0] for line in ending] == [
        f"digits-base: given loss {name}" for name in ("hinge_like", "sq_plus", "mine")
    ]


@pytest.mark.parametrize(
    "option, message",
    [
        ("broken=-(y * ln(|p| + eps)", 'expected ")"'),
        ("unknown=y * q", 'unknown name "q"'),
        ("flat=y * 1", "rejected by the screen"),
        ("big=exp(sin(tanh(atan(sinh(asinh(p * y))))))", "7 nodes"),
        ("no_formula", "NAME=FORMULA"),
        ("cross_entropy=(y - p)^2 * y", "is taken"),
        ("trial_3=(y - p)^2 * y", "is taken"),
    ],
)
def test_a_bad_loss_is_one_line_exit_2_and_nothing_is_written(tmp_path, option, message):
    storage = tmp_path / "never.db"
    result = run_main("search", "--n-trials", "2", "--storage", f"sqlite:///{storage}", "--loss", option)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert "Traceback" not in result.stderr
    if storage.exists():  # a refused loss stops before a study is created
        assert not optuna.get_all_study_summaries(f"sqlite:///{storage}")


@pytest.mark.slow
def test_evaluate_trains_the_loss_and_cross_entropy_and_prints_welch(tmp_path):
    result = run_cli(
        "evaluate",
        FOCAL,
        "--dataset",
        "digits",
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--format",
        "table",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["loss", "seeds", "test_accuracy", "accuracy_std"]
    assert lines[2].startswith("loss ") and lines[3].startswith("cross_entropy ")
    verdict = lines[-1]
    assert "Welch's p = " in verdict and "points" in verdict and "test split" in verdict
    accuracy = float(lines[2].split()[2])
    assert 0.3 < accuracy <= 1.0  # two epochs on digits learn something
    bad = run_cli("evaluate", "y * q", "--device", "cpu")
    assert bad.returncode == 2 and 'unknown name "q"' in bad.stderr


@pytest.mark.slow
def test_accuracy_selection_keeps_one_loss_per_behaviour_across_the_whole_study(two_sources):
    url, _ = two_sources
    study = _study(url, "digits-base")
    by_accuracy = select_trials(study, 4, "accuracy")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE and "diverged" not in t.user_attrs]
    best = sorted(complete, key=lambda t: (-t.values[0], t.number))
    assert by_accuracy[0].number == best[0].number
    assert [t.values[0] for t in by_accuracy] == sorted((t.values[0] for t in by_accuracy), reverse=True)
    assert len({t.user_attrs["fingerprint"] for t in by_accuracy}) == len(by_accuracy)
    # what the Pareto selection gives is a subset of the front; accuracy selection may go beyond it
    front = {t.number for t in study.best_trials}
    assert {t.number for t in select_trials(study, 4, "pareto")} <= front


@pytest.mark.slow
def test_pooled_sources_name_their_study_and_given_losses_join_them(two_sources):
    url, _ = two_sources
    sources = [_study(url, "digits-base"), _study(url, "digits-mixup")]
    given = {"sq": screen(zoo()["mse"]).genome, "focal_again": screen(zoo()["focal"]).genome}
    losses = losses_to_transfer(sources, 2, "accuracy", given, num_classes=10)
    assert next(iter(losses)) == "cross_entropy"
    evolved = {label: loss for label, loss in losses.items() if ":trial_" in label}
    assert {loss.source_study for loss in evolved.values()} <= {"digits-base", "digits-mixup"}
    assert all(label.startswith(loss.source_study + ":") for label, loss in evolved.items())
    structures = {loss.genome.structure_hash: label for label, loss in evolved.items()}
    for source in sources:  # the zoo is trained anyway: its losses take none of the top-k slots
        best_evolved = next(t for t in select_trials(source, 100, "accuracy") if "zoo" not in t.user_attrs)
        # a genome both searches found is transferred once, under the first source's label
        label = structures.get(trial_genome(source, best_evolved).structure_hash)
        own = f"{source.study_name}:trial_{best_evolved.number}"
        assert label == own or (label is not None and not label.startswith(f"{source.study_name}:")), label
    hashes = [loss.genome.structure_hash for loss in losses.values()]
    assert len(hashes) == len(set(hashes))  # one entry per structure
    # a given loss that is the zoo's MSE or focal is not trained twice under two names
    assert (
        sum(
            1
            for loss in losses.values()
            if loss.genome.structure_hash == screen(zoo()["mse"]).genome.structure_hash
        )
        == 1
    )


def test_transfer_takes_the_sources_augmentation_settings_scaled_to_its_image_size(sqlite_url):
    study = optuna.create_study(study_name="digits-cutout-settings", storage=sqlite_url)
    study.set_user_attr(
        "config",
        {
            "dataset": "digits",
            "augmentation": "cutout",
            "cutout_size": 4,
            "crop_padding": 2,
            "mixup_alpha": 0.4,
            "randaug_m": 5,
        },
    )
    transfer = TransferConfig.from_mapping({"dataset": "digits", "image_size": 32})
    settings = source_augment_settings(study, transfer, 32)
    assert (settings.cutout_size, settings.crop_padding) == (16, 8)  # 8 px -> 32 px
    assert (settings.mixup_alpha, settings.randaug_m, settings.randaug_n) == (0.4, 5, 2)
    own = TransferConfig.from_mapping({"dataset": "digits", "image_size": 32, "cutout_size": 10})
    assert source_augment_settings(study, own, 32).cutout_size == 10  # the transfer's own key wins
    explicit = TransferConfig.load(None, {"dataset": "digits", "mixup_alpha": 1.0})  # the default, set
    assert source_augment_settings(study, explicit, 32).mixup_alpha == 1.0


@pytest.mark.slow
def test_a_pooled_transfer_with_a_given_loss_reports_where_each_loss_came_from(two_sources):
    url, folder = two_sources
    result = run_cli(
        "transfer",
        "--from",
        "digits-base",
        "--from",
        "digits-mixup",
        "--storage",
        url,
        "--model",
        "wrn-10-1",
        "--dataset",
        "digits",
        "--top-k",
        "1",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--loss",
        f"sq={SQUARED} + y * p",
        "--output",
        str(folder / "report"),
    )
    assert result.returncode == 0, result.stderr
    name = "digits-base+digits-mixup-transfer-wrn-10-1-digits"
    study = _study(url, name)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    sources = {t.user_attrs["loss"]: t.user_attrs["source_study"] for t in complete}
    assert sources["cross_entropy"] == "" and sources["sq"] == ""
    assert {"digits-base", "digits-mixup"} & set(sources.values())
    assert study.user_attrs["source_study"] == ["digits-base", "digits-mixup"]
    assert study.user_attrs["select"] == "accuracy"
    assert study.user_attrs["augment_settings"]["cutout_size"] is None
    changed = run_cli(
        "transfer",
        "--from",
        "digits-base",
        "--from",
        "digits-mixup",
        "--storage",
        url,
        "--model",
        "wrn-10-1",
        "--dataset",
        "digits",
        "--top-k",
        "1",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--select",
        "pareto",
    )
    assert changed.returncode == 2 and "was run with select 'accuracy'" in changed.stderr
    header = next(
        line for line in result.stdout.splitlines() if line.startswith("loss ") and "p_welch" in line
    )
    assert "source" in header.split()


@pytest.mark.slow
def test_recheck_and_matrix_take_losses_by_formula(two_sources):
    url, folder = two_sources
    recheck = run_cli(
        "recheck",
        "digits-base",
        "--storage",
        url,
        "--seeds",
        "1",
        "--device",
        "cpu",
        "--format",
        "csv",
        "--loss",
        f"sq={SQUARED} + y * p",
    )
    assert recheck.returncode == 0, recheck.stderr
    rows = recheck.stdout.strip().splitlines()
    assert any(row.startswith(",sq,,") for row in rows)  # no trial, no search score: not in the search
    matrix = run_cli(
        "matrix",
        "--dataset",
        "digits",
        "--storage",
        url,
        "--seeds",
        "1",
        "--device",
        "cpu",
        "--format",
        "csv",
        "--output",
        str(folder / "matrix"),
        "--loss",
        f"sq={SQUARED} + y * p",
    )
    assert matrix.returncode == 0, matrix.stderr
    labels = [line.split(",")[0] for line in matrix.stdout.strip().splitlines()[1:] if "," in line]
    assert "sq" in labels and "cross_entropy" in labels


def _evolution_config(tmp_path: Path, n_trials: int) -> Path:
    values = {
        "n_trials": n_trials,
        "population_size": 4,
        "tournament_size": 2,
        "epochs": 3,
        "model_width": 8,
        "baseline_seeds": 0,
        "constants": 0,  # the paper's space: structural mutations only
        "device": "cpu",
        "sampler": "evolution",
        "objectives": ["accuracy"],
        "artifacts": False,
        "heartbeat_interval": 1,
        "grace_period": 4,
        "checkpoint_dir": str(tmp_path / "checkpoints"),
    }
    path = tmp_path / "evolution.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    return path


@pytest.mark.slow
def test_the_papers_search_is_a_plain_single_objective_study_and_a_killed_one_continues_its_population(
    tmp_path, sqlite_url
):
    config = _evolution_config(tmp_path, n_trials=16)
    process = _start(config, sqlite_url)
    _wait_for(
        lambda: (
            sum(
                1
                for t in _study(sqlite_url, "digits-base").trials
                if t.state == TrialState.COMPLETE and "parent" in t.user_attrs
            )
            >= 2
        ),
        process,
    )
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = _study(sqlite_url, "digits-base").trials
    last_before = max(t.number for t in before)

    resumed = run_cli("search", str(config), "--storage", sqlite_url, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    study = _study(sqlite_url, "digits-base")
    assert len(study.directions) == 1 and study.metric_names == ["accuracy"]
    assert study.user_attrs["objectives"] == ["accuracy"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 16
    assert all(0.0 <= t.user_attrs["robustness"] <= 1.0 for t in complete)
    children = [t for t in study.trials if t.number > last_before and "parent" in t.user_attrs]
    assert children, "the resumed search bred no children"
    # the first children after the restart descend from trials of the killed run: the population went on
    assert any(t.user_attrs["parent"] <= last_before for t in children[:3])
    assert {t.user_attrs["mutation"] for t in children} <= {"operator", "input", "arity"}
    # plain Optuna reads it: the optuna CLI, and the library without optiloss
    optuna_cli = Path(sys.executable).with_name("optuna")
    listed = subprocess.run(
        [str(optuna_cli), "best-trial", "--study-name", "digits-base", "--storage", sqlite_url, "-f", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["value"] == {"accuracy": study.best_value}
    trials = subprocess.run(
        [str(optuna_cli), "trials", "--study-name", "digits-base", "--storage", sqlite_url, "-f", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert trials.returncode == 0, trials.stderr
    assert sum(1 for row in json.loads(trials.stdout) if row["state"] == "COMPLETE") == 16
    pareto = run_cli("pareto", "digits-base", "--storage", sqlite_url)
    assert pareto.returncode == 0 and "robustness" in pareto.stdout.splitlines()[0]


def test_the_dashboard_note_of_a_single_objective_study_shows_the_best_losses_with_robustness():
    from optiloss.report.dashboard import hypervolume_history, study_note

    study = optuna.create_study(directions=["maximize"], study_name="one-objective")
    study.set_metric_names(["accuracy"])
    study.set_user_attr("dataset", "digits")
    for accuracy, robustness, formula in ((0.9, 0.7, "(y - p)^2"), (0.95, 0.6, "-(y * ln(|p| + eps))")):
        trial = study.ask()
        trial.set_user_attr("robustness", robustness)
        trial.set_user_attr("formula", formula)
        study.tell(trial, accuracy)
    note = study_note(study)
    assert "Objective (maximised): validation **accuracy**" in note and "## Best" in note
    assert "| 1 | 0.9500 |  | 0.6000 |" in note and "| 0 |" not in note  # no noise floor: no vs column
    numbers, volumes = hypervolume_history(study.trials)
    assert numbers == [0, 1] and volumes[1] >= volumes[0] > 0
