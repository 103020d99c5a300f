"""The search loop in-process: NSGA-II inheritance, divergence, study identity."""

import collections
import json
import re

import optuna
import pytest
import torch

from optiloss.data import load_dataset
from optiloss.devices import worker_device
from optiloss.errors import UsageError
from optiloss.genome import Genome
from optiloss.scoring import DIVERGED_VALUES
from optiloss.search import LossSearchObjective, SearchConfig, open_search_study, open_storage
from optiloss.search.study import sampler_seed


def test_nsga2_children_take_their_genes_from_their_parents():
    config = SearchConfig.from_mapping({"population_size": 8, "seed": 1})
    study = optuna.create_study(
        directions=["maximize", "maximize"], sampler=optuna.samplers.NSGAIISampler(population_size=8, seed=1)
    )

    def cheap_objective(trial):
        genome = Genome.suggest(trial, config.nodes)
        digest = int(genome.structure_hash, 16)
        return digest % 1000 / 1000, (digest // 1000) % 1000 / 1000

    study.optimize(cheap_objective, n_trials=16)
    generation = collections.defaultdict(list)
    for trial in study.trials:
        generation[trial.system_attrs["NSGAIISampler:generation"]].append(trial)
    assert len(generation[0]) == 8 and len(generation[1]) == 8
    inherited = total = 0
    for child in generation[1]:
        for name, value in child.params.items():
            total += 1
            inherited += any(parent.params[name] == value for parent in generation[0])
    # a random draw from 34 operators or 4-8 inputs would match the 8 parents far less often
    assert inherited / total > 0.85, inherited / total


def test_sampler_seed_changes_with_the_trial_count_and_worker():
    assert sampler_seed(0, 0) == sampler_seed(0, 0)
    assert len({sampler_seed(0, 0), sampler_seed(0, 10), sampler_seed(0, 10, 1), sampler_seed(1, 0)}) == 4


def test_a_diverging_loss_ends_with_finite_penalty_values_and_a_reason(tmp_path):
    config = SearchConfig.from_mapping(
        {
            "epochs": 2,
            "model_width": 8,
            "device": "cpu",
            "checkpoint_dir": str(tmp_path),
            "artifact_dir": str(tmp_path / "artifacts"),
        }
    )
    objective = LossSearchObjective(config, load_dataset("digits"), torch.device("cpu"))
    study = optuna.create_study(directions=["maximize", "maximize"])
    trial = study.ask()
    # e^e^e^e overflows float32: y * inf is inf (or NaN where y = 0) from the first step
    exploding = Genome.from_nodes(
        ("exp", "1"),
        ("exp", "n0"),
        ("exp", "n1"),
        ("exp", "n2"),
        ("mul", "y", "n3"),
        ("add", "n4", "p"),
        n_nodes=6,
    )
    assert objective.train_and_score(trial, exploding) == DIVERGED_VALUES
    assert trial.user_attrs["diverged"].startswith("non-finite loss in epoch")


def test_continuing_a_study_with_other_settings_is_refused(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    open_search_study(
        SearchConfig.from_mapping({"study_name": "mine", "constants": 0}), storage, num_classes=10
    )
    assert len(optuna.load_study(study_name="mine", storage=storage).trials) == 6  # the zoo, enqueued
    open_search_study(
        SearchConfig.from_mapping({"study_name": "mine", "n_trials": 50, "sampler": "random"}),
        storage,
        num_classes=10,
    )  # the budget and the search's strategy may change
    with pytest.raises(UsageError, match="nodes 5 .this run: 6."):
        open_search_study(
            SearchConfig.from_mapping({"study_name": "mine", "nodes": 6}), storage, num_classes=10
        )
    # what a trial trains with may not: its trials would not be comparable (issue 33)
    with pytest.raises(UsageError, match=r"epochs 10 \(this run: 3\).*--study-name mine-2\)$"):
        open_search_study(
            SearchConfig.from_mapping({"study_name": "mine", "epochs": 3}), storage, num_classes=10
        )


@pytest.mark.parametrize(
    "device, gpus, placements",
    [
        ("cuda", 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]),
        ("auto", 2, ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0", "cuda:1"]),
        ("cuda", 1, ["cuda:0"] * 6),
        ("cuda:1", 2, ["cuda:1"] * 6),
        ("auto", 0, ["cpu"] * 6),
        ("cpu", 8, ["cpu"] * 6),
    ],
)
def test_workers_spread_over_every_gpu_or_stay_where_they_are_pinned(device, gpus, placements):
    assert [worker_device(device, worker, gpus) for worker in range(6)] == placements


@pytest.mark.parametrize(
    "device, gpus, message",
    [
        ("cuda", 0, "--device cuda was asked for, but torch sees no CUDA device; use --device cpu"),
        ("cuda:2", 2, "--device cuda:2 was asked for, but torch sees 2 CUDA device(s) (cuda:0 to cuda:1)"),
    ],
)
def test_a_missing_gpu_is_a_usage_error(device, gpus, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        worker_device(device, 0, gpus)


def test_a_gpu_index_is_a_valid_device_setting():
    assert SearchConfig.from_mapping({"device": "cuda:3"}).device == "cuda:3"
    message = "device must be one of auto, cpu, cuda, cuda:N (a GPU index), got 'cuda:x'"
    with pytest.raises(UsageError, match=re.escape(message)):
        SearchConfig.from_mapping({"device": "cuda:x"})


def _study_with_cross_entropy_curve(curve: list[float]) -> optuna.Study:
    """A study whose finished cross-entropy trial reached ``curve`` (training accuracy per epoch)."""
    from optiloss.genome import gene_names, input_choices, zoo
    from optiloss.genome.operators import OPERATOR_NAMES

    study = optuna.create_study(directions=["maximize", "maximize"])
    cross_entropy = zoo()["cross_entropy"]
    distributions = {}
    for index in range(5):
        op_name, in1_name, in2_name = gene_names(index)
        distributions[op_name] = optuna.distributions.CategoricalDistribution(OPERATOR_NAMES)
        for name in (in1_name, in2_name):
            distributions[name] = optuna.distributions.CategoricalDistribution(input_choices(index))
    study.add_trial(
        optuna.trial.create_trial(
            params=cross_entropy.to_params(),
            distributions=distributions,
            values=[0.9, 0.5],
            user_attrs={"zoo": "cross_entropy", "train_accuracy_by_epoch": curve},
        )
    )
    return study


@pytest.mark.parametrize("reference, rejected", [(0.999, True), (0.05, False)])
def test_a_slow_learner_stops_early_and_is_rejected_naming_both_accuracies(tmp_path, reference, rejected):
    from optiloss.genome import zoo

    config = SearchConfig.from_mapping(
        {
            "epochs": 5,
            "model_width": 8,
            "device": "cpu",
            "early_rejection_at": 0.2,
            "early_rejection_ratio": 1.0,
            "checkpoint_dir": str(tmp_path),
            "artifacts": False,
        }
    )
    study = _study_with_cross_entropy_curve([reference] * 5)
    study.enqueue_trial(zoo()["mse"].to_params())
    study.optimize(LossSearchObjective(config, load_dataset("digits"), torch.device("cpu")), n_trials=1)
    trial = study.trials[-1]
    if rejected:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert re.fullmatch(
            r"slow learner: training accuracy 0\.\d{4} after epoch 1 of 5, below 1\.0 x "
            r"cross-entropy's 0\.9990",
            trial.user_attrs["rejected"],
        )
        assert "train_accuracy_by_epoch" not in trial.user_attrs and trial.user_attrs["training_seconds"] > 0
    else:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert len(trial.user_attrs["train_accuracy_by_epoch"]) == 5
    assert not list(tmp_path.iterdir())  # no checkpoint left behind either way


def test_screening_in_the_sampler_stores_only_genomes_that_pass_and_counts_the_rest(tmp_path):
    from optiloss.genome import screen
    from optiloss.search.sampler import ScreeningSampler

    config = SearchConfig.from_mapping(
        {
            "n_trials": 16,
            "population_size": 8,
            "epochs": 1,
            "model_width": 4,
            "device": "cpu",
            "artifacts": False,
            "checkpoint_dir": str(tmp_path),
            "screen_in_sampler": True,
        }
    )
    study = open_search_study(config, open_storage(f"sqlite:///{tmp_path / 's.db'}"), num_classes=10)
    assert isinstance(study.sampler, ScreeningSampler)
    study.optimize(
        LossSearchObjective(config, load_dataset("digits"), torch.device("cpu")),
        callbacks=[optuna.study.MaxTrialsCallback(16, states=(optuna.trial.TrialState.COMPLETE,))],
    )
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 16  # nothing PRUNED
    assert all(screen(Genome.from_params(t.params, 5)).accepted for t in study.trials)
    assert len({t.user_attrs["fingerprint"] for t in study.trials}) == 16
    redrawn = [t.user_attrs.get("screened_out", {}) for t in study.trials]
    assert not any(redrawn[:6])  # the enqueued zoo is taken as it is
    assert sum(sum(counts.values()) for counts in redrawn) > 0
    assert {t.system_attrs["NSGAIISampler:generation"] for t in study.trials} == {0, 1}


def test_the_screening_sampler_leaves_a_waiting_trial_with_a_genome_as_it_is():
    """A retry (RetryHeartbeatStaleTrialCallback) stores its genome as params, not fixed_params."""
    from optiloss.genome import zoo
    from optiloss.search.sampler import ScreeningSampler, genome_search_space

    sampler = ScreeningSampler(optuna.samplers.NSGAIISampler(population_size=4, seed=0), nodes=5, seed=0)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    params = zoo()["mse"].to_params()
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, params=params, distributions=genome_search_space(5)
        )
    )
    trial = study.ask()
    assert trial.relative_params == {} and "screened_out" not in trial.user_attrs
    assert Genome.suggest(trial, 5).to_params() == params


@pytest.mark.parametrize("device", ["cuda:N", "cuda:", "gpu:0"])
def test_a_device_that_names_no_gpu_index_is_refused(device):
    message = f"device must be one of auto, cpu, cuda, cuda:N (a GPU index), got '{device}'"
    with pytest.raises(UsageError, match=re.escape(message)):
        SearchConfig.from_mapping({"device": device})


def _two_trial_config(tmp_path) -> SearchConfig:
    """Two short digits trials with two cross-entropy seed runs, for the tests that count calls."""
    return SearchConfig.from_mapping(
        {
            "n_trials": 2,
            "population_size": 4,
            "epochs": 1,
            "model_width": 8,
            "device": "cpu",
            "baseline_seeds": 2,
            "artifacts": False,
            "checkpoint_dir": str(tmp_path / "checkpoints"),
        }
    )


def test_one_search_builds_one_evaluator_and_copies_the_data_to_the_device_once(tmp_path, monkeypatch):
    """The noise floor and the trials share the search's evaluator: one device copy, one set of
    corrupted copies, one precision."""
    from optiloss.data import ImageSplits
    from optiloss.scoring import LossEvaluator
    from optiloss.search import run_search

    copies, evaluators = [], []
    original_to, original_init = ImageSplits.to, LossEvaluator.__init__

    def counting_to(self, device):
        copies.append(device)
        return original_to(self, device)

    def counting_init(self, *args, **kwargs):
        evaluators.append(self)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(ImageSplits, "to", counting_to)
    monkeypatch.setattr(LossEvaluator, "__init__", counting_init)
    config = _two_trial_config(tmp_path)
    outcome = run_search(config, f"sqlite:///{tmp_path / 'one.db'}", progress=False, log=lambda line: None)
    assert outcome.complete_after == 2 and len(outcome.study.user_attrs["cross_entropy_seeds"]) == 2
    assert len(copies) == 1 and len(evaluators) == 1


def test_a_search_settles_its_config_once_and_hands_it_to_the_study(tmp_path, monkeypatch):
    from optiloss.search import run as search_run
    from optiloss.search import study as search_study

    settled = []
    original = search_study.settle_config

    def counting(config, attrs):
        settled.append(config)
        return original(config, attrs)

    monkeypatch.setattr(search_study, "settle_config", counting)
    monkeypatch.setattr(search_run, "settle_config", counting)
    config = _two_trial_config(tmp_path)
    search_run.run_search(config, f"sqlite:///{tmp_path / 'one.db'}", progress=False, log=lambda line: None)
    assert len(settled) == 1


def test_a_given_loss_the_zoo_holds_already_is_named_not_silently_dropped(tiny_config, sqlite_url):
    from conftest import run_main

    result = run_main(
        "search",
        str(tiny_config),
        "--storage",
        sqlite_url,
        "--no-progress",
        "--loss",
        "sq=(y - p)^2",
        "--loss",
        "mine=-(y * sqrt(|p|))",
    )
    assert result.returncode == 0, result.stderr
    assert "sq is the zoo's mse; trained once, as mse" in result.stdout
    study = optuna.load_study(study_name="digits-base", storage=sqlite_url)
    mse = next(t for t in study.trials if t.user_attrs.get("zoo") == "mse")
    assert mse.user_attrs["also_named"] == ["sq"]
    assert not any(t.user_attrs.get("loss_name") == "sq" for t in study.trials)
    assert any(t.user_attrs.get("loss_name") == "mine" for t in study.trials)
    shown = run_main("show", "digits-base", str(mse.number), "--storage", sqlite_url)
    assert "also_named: ['sq']" in shown.stdout
    # named again on a later run, when the mse trial has finished: recorded on the study
    again = run_main(
        "search",
        str(tiny_config),
        "--storage",
        sqlite_url,
        "--no-progress",
        "--n-trials",
        "6",
        "--loss",
        "square=(y - p)^2",
    )
    assert "square is the zoo's mse; trained once, as mse" in again.stdout
    assert optuna.load_study(study_name="digits-base", storage=sqlite_url).user_attrs["also_named"] == {
        "square": mse.number
    }


def test_tpe_is_the_multivariate_tpe_with_the_constant_liar_that_optuna_advises_for_this_space():
    from optiloss.search.study import make_sampler

    config = SearchConfig.from_mapping({"dataset": "digits", "sampler": "tpe", "screen_in_sampler": False})
    sampler = make_sampler(config, trials_in_study=0)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    # a two-objective study leaves TPE independent per gene unless asked; Optuna's AutoSampler asks
    assert sampler._multivariate and sampler._constant_liar


def _digits_config(tmp_path, **keys):
    values = {
        "n_trials": 4,
        "population_size": 4,
        "epochs": 1,
        "subset": 300,
        "model_width": 8,
        "device": "cpu",
        "baseline_seeds": 0,
        "artifacts": False,
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        **keys,
    }
    path = tmp_path / "search.toml"
    path.write_text("".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()))
    return str(path)


GIVEN = {"d1": "-(y * sqrt(|p|))", "d2": "max((1 - p) * y, 0)", "d3": "(y - p)^2 + y * p"}


def test_given_losses_train_before_the_zoo_takes_the_budget_and_each_ends_with_a_line(tmp_path, sqlite_url):
    from conftest import run_main

    config = _digits_config(tmp_path)  # 2 constants: the zoo holds 8 losses, more than the 4 trials
    options = [word for name, formula in GIVEN.items() for word in ("--loss", f"{name}={formula}")]
    result = run_main("search", config, "--storage", sqlite_url, "--no-progress", *options)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="digits-base", storage=sqlite_url)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert [t.user_attrs.get("zoo") or t.user_attrs.get("loss_name") for t in complete] == [
        "cross_entropy",
        "d1",
        "d2",
        "d3",
    ]
    ending = result.stdout.strip().splitlines()[-3:]
    for number, (name, line) in enumerate(zip(GIVEN, ending), start=1):
        assert re.fullmatch(
            rf"digits-base: given loss {name}: trained as trial {number}, accuracy 0\.\d{{4}}, "
            r"robustness 0\.\d{4}",
            line,
        ), line
    # a loss given when the budget is met waits behind the rest of the zoo, named, and its line says
    # what trains it (above the zoo's size: tests/test_paper_workflows.py)
    waits = run_main("search", config, "--storage", sqlite_url, "--loss", "d5=y * (1 - p)^2 * (1 - p)")
    assert waits.returncode == 0, waits.stderr
    assert waits.stdout.strip().splitlines()[-1] == (
        "digits-base: given loss d5: waiting as trial 11, not trained: the study met its budget first; "
        "run the search again with --n-trials 12 to train it"
    )
    waiting = optuna.load_study(study_name="digits-base", storage=sqlite_url).trials[11]
    assert waiting.state == optuna.trial.TrialState.WAITING and waiting.user_attrs["loss_name"] == "d5"


def test_a_retry_queued_after_the_budget_was_met_does_not_stay_waiting(tmp_path, sqlite_url):
    import socket
    import subprocess

    from conftest import run_main

    config = _digits_config(tmp_path, n_trials=1, constants=0)
    assert run_main("search", config, "--storage", sqlite_url, "--no-progress").returncode == 0
    study = optuna.load_study(study_name="digits-base", storage=sqlite_url)
    orphan = study.ask()  # a worker that died mid-trial once the budget was met
    finished = subprocess.Popen(["true"])
    finished.wait()  # its process id names no process now
    record = {"host": socket.gethostname(), "pid": finished.pid, "trial": orphan.number}
    orphan.set_user_attr("worker", record)
    again = run_main("search", config, "--storage", sqlite_url, "--no-progress")
    assert again.returncode == 0, again.stderr
    trials = optuna.load_study(study_name="digits-base", storage=sqlite_url).trials
    retry = next(t for t in trials if orphan.number in t.system_attrs.get("retry_history", []))
    assert retry.state == optuna.trial.TrialState.FAIL
    assert (
        retry.user_attrs["fail_reason"]
        == "retry not needed: the study had reached its budget of 1 COMPLETE trials"
    )
    assert (
        f"retry trial(s) {retry.number} no longer needed (1 trials complete): closed as FAIL" in again.stdout
    )
    assert not any(
        t.state == optuna.trial.TrialState.WAITING and "retry_history" in t.system_attrs for t in trials
    )
