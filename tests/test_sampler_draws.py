"""Samplers never store a genome that cannot train for its structure: random draws read y and p by
construction, children that lose either are repaired or redrawn inside the sampler; and new studies
screen in the sampler while a study made before continues as it was made.

The objectives here score the decoded genome's structure (no training): they test the samplers."""

import itertools
import shutil

import optuna
import pytest
from optuna.trial import TrialState

from optiloss.genome import Genome, screen
from optiloss.search import SearchConfig, open_search_study, open_storage
from optiloss.search.evolution import RegularizedEvolutionSampler
from optiloss.search.run import run_search
from optiloss.search.sampler import ScreeningSampler
from optiloss.search.study import settle_config

from conftest import ROOT

NODES = 5
STRUCTURAL = ("does not depend on y", "does not depend on p", "does not depend on p or y")


def structure_score(trial: optuna.Trial) -> tuple[float, float]:
    digest = int(Genome.suggest(trial, NODES).structure_hash, 16)
    return digest % 1000 / 1000, (digest // 1000) % 1000 / 1000


class Scripted(optuna.samplers.BaseSampler):
    """Hands out the given children (gene dicts, possibly partial) in turn, then the last forever."""

    def __init__(self, *children: dict) -> None:
        self.children = itertools.chain(children, itertools.repeat(children[-1]))

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return dict(next(self.children))

    def sample_independent(self, study, trial, param_name, param_distribution):
        raise AssertionError("the screening sampler draws every gene itself")


def _one_trial(inner: optuna.samplers.BaseSampler) -> optuna.trial.FrozenTrial:
    study = optuna.create_study(
        directions=["maximize", "maximize"], sampler=ScreeningSampler(inner, NODES, seed=0)
    )
    study.optimize(structure_score, n_trials=1)
    (trial,) = study.get_trials()
    return trial


def test_a_child_that_loses_p_is_redrawn_in_the_sampler_and_never_stored():
    lost = Genome.from_nodes(("ln", "y"), ("mul", "y", "n0")).to_params()
    good = Genome.from_nodes(("ln", "p"), ("mul", "y", "n0")).to_params()
    trial = _one_trial(Scripted(lost, lost, good))
    assert trial.state == TrialState.COMPLETE and trial.params == good
    assert trial.user_attrs["screened_out"] == {"does not depend on p": 2}


def test_a_child_whose_redrawn_genes_would_lose_p_is_repaired():
    """An NSGA-II child leaves its mutated genes to random sampling: they are drawn so that the
    genome reads p, the inherited genes stay as they were, and nothing is redrawn."""
    child = Genome.from_nodes(("ln", "y"), ("mul", "y", "n3"), n_nodes=NODES).to_params()
    inherited = {name: value for name, value in child.items() if not name.startswith("node3")}
    for seed in range(20):
        sampler = ScreeningSampler(Scripted(inherited), NODES, seed=seed)
        study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
        study.optimize(structure_score, n_trials=1)
        (trial,) = study.get_trials()
        assert {name: trial.params[name] for name in inherited} == inherited
        assert {"y", "p"} <= Genome.from_params(trial.params, NODES).leaves_used
        assert not set(trial.user_attrs.get("screened_out", {})) & set(STRUCTURAL)


@pytest.mark.parametrize(
    "inner",
    [
        optuna.samplers.NSGAIISampler(population_size=8, seed=0),
        optuna.samplers.RandomSampler(seed=0),
    ],
    ids=["nsga2", "random"],
)
def test_every_stored_genome_reads_y_and_p_and_random_draws_are_never_redrawn_for_structure(inner):
    sampler = ScreeningSampler(inner, NODES, seed=1)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    study.optimize(structure_score, n_trials=40)
    trials = study.get_trials()
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(screen(Genome.from_params(t.params, NODES)).accepted for t in trials)
    random_draws = trials if isinstance(inner, optuna.samplers.RandomSampler) else trials[:8]
    for trial in random_draws:  # the random sampler, NSGA-II's generation 0: right by construction
        assert not set(trial.user_attrs.get("screened_out", {})) & set(STRUCTURAL)


def _config(tmp_path, **extra) -> SearchConfig:
    values = {"epochs": 1, "model_width": 8, "device": "cpu", "artifacts": False, **extra}
    return SearchConfig.from_mapping(values)


def test_a_new_study_screens_in_the_sampler(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'new.db'}")
    study = open_search_study(_config(tmp_path), storage, num_classes=10)
    assert isinstance(study.sampler, ScreeningSampler)
    assert study.user_attrs["config"]["screen_in_sampler"] is True


def test_a_study_keeps_the_screening_it_was_made_with_unless_the_run_sets_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'made.db'}"
    made = open_search_study(_config(tmp_path, screen_in_sampler=False), open_storage(url), num_classes=10)
    assert not isinstance(made.sampler, ScreeningSampler)
    # the default no longer applies
    again = open_search_study(_config(tmp_path), open_storage(url), num_classes=10)
    assert not isinstance(again.sampler, ScreeningSampler)
    assert not settle_config(_config(tmp_path), again.user_attrs).screen_in_sampler
    told = open_search_study(_config(tmp_path, screen_in_sampler=True), open_storage(url), num_classes=10)
    assert isinstance(told.sampler, ScreeningSampler)


def test_the_committed_old_study_continues_as_it_was_made(tmp_path):
    """tests/data/studies-v0.1 was made before screening in the sampler: a search continues it with
    plain NSGA-II, its rejected genomes stored as PRUNED trials with their reason, as it always did."""
    database = tmp_path / "studies.db"
    shutil.copy(ROOT / "tests" / "data" / "studies-v0.1" / "studies.db", database)
    url = f"sqlite:///{database}"
    before = len(optuna.load_study(study_name="digits-base", storage=url).trials)
    config = _config(
        tmp_path,
        dataset="digits",
        n_trials=12,
        population_size=6,
        constants=0,
        baseline_seeds=2,
        checkpoint_dir=str(tmp_path / "checkpoints"),
    )
    outcome = run_search(config, url, progress=False, log=lambda line: None)
    assert outcome.study is not None and type(outcome.study.sampler) is optuna.samplers.NSGAIISampler
    new = optuna.load_study(study_name="digits-base", storage=url).trials[before:]
    assert outcome.complete_after == 12 and all("screened_out" not in t.user_attrs for t in new)
    pruned = [t for t in new if t.state == TrialState.PRUNED]
    assert pruned and all(t.user_attrs["rejected"] for t in pruned)
    assert outcome.rejected == len(pruned)


def test_the_evolution_sampler_alone_stores_only_genomes_that_read_y_and_p():
    """Its generation 0 is drawn by construction, its mutations that lose y or p are drawn again."""
    sampler = RegularizedEvolutionSampler(NODES, population_size=10, tournament_size=3, seed=2)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    study.optimize(structure_score, n_trials=120)
    trials = study.get_trials()
    assert sum("parent" in t.user_attrs for t in trials) == 110
    assert all({"y", "p"} <= Genome.from_params(t.params, NODES).leaves_used for t in trials)
