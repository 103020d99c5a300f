"""Regularized evolution as an Optuna sampler: generation 0, one-mutation children, tournaments,
ageing, resuming from the storage, and screening around it.

The objective is a cheap deterministic score of the decoded genome's structure: these test the
sampler, not training.
"""

import collections
import time

import optuna
import pytest
from optuna.trial import TrialState

from optiloss.genome import OPERATORS, Genome, input_choices, screen, zoo
from optiloss.search.evolution import MUTATION_KINDS, RegularizedEvolutionSampler
from optiloss.search.sampler import ScreeningSampler, genome_search_space

NODES = 5


def score(genome: Genome) -> float:
    """A deterministic accuracy in [0, 1) from the program's structure."""
    return int(genome.structure_hash, 16) % 100_003 / 100_003


def genome_of(trial: optuna.trial.FrozenTrial) -> Genome:
    return Genome.from_params(trial.params, NODES)


def make_objective(sampler, n_objectives: int = 2, champion: Genome | None = None, extra_param: bool = False):
    """Suggests the genome (the sampler writes the lineage on the trial), scores the structure;
    ``champion`` scores 2 (better than anything else)."""

    def objective(trial: optuna.Trial):
        genome = Genome.suggest(trial, NODES)
        if extra_param:
            trial.set_user_attr("x", trial.suggest_float("x", 0.0, 1.0))
        value = 2.0 if champion is not None and genome.structure == champion.structure else score(genome)
        return value if n_objectives == 1 else (value, 1.0 - value)

    return objective


def run(study: optuna.Study, sampler, n_trials: int, **objective_options) -> list[optuna.trial.FrozenTrial]:
    study.optimize(make_objective(sampler, len(study.directions), **objective_options), n_trials=n_trials)
    return study.get_trials(deepcopy=False)


def population_when_sampled(trials, child, size: int) -> list[optuna.trial.FrozenTrial]:
    """The ``size`` most recent completions before ``child`` was started (the trials run one by one)."""
    done = [
        t for t in trials if t.state == TrialState.COMPLETE and t.datetime_complete <= child.datetime_start
    ]
    done.sort(key=lambda t: (t.datetime_complete, t.number))
    return done[-size:]


def changed_genes(parent: Genome, child: Genome) -> list[tuple[int, int]]:
    """``(node, gene)`` pairs that differ; gene 0 is the operator, 1 and 2 the inputs."""
    return [
        (index, gene)
        for index, (a, b) in enumerate(zip(parent.nodes, child.nodes))
        for gene, (x, y) in enumerate(zip((a.operator, *a.inputs), (b.operator, *b.inputs)))
        if x != y
    ]


def assert_one_mutation(parent: Genome, child: Genome, kind: str) -> None:
    changed = changed_genes(parent, child)
    assert len(changed) == 1, changed
    ((index, gene),) = changed
    assert index in parent.active_nodes
    assert child.structure != parent.structure
    before, after = parent.nodes[index], child.nodes[index]
    arity_before, arity_after = OPERATORS[before.operator].arity, OPERATORS[after.operator].arity
    if kind == "operator":
        assert gene == 0 and arity_after == arity_before
    elif kind == "arity":
        assert gene == 0 and arity_after != arity_before
    else:
        assert kind == "input" and gene in (1, 2)
        assert gene <= arity_before  # an input the node reads: the second only for a binary operator
        assert child.nodes[index].inputs[gene - 1] in input_choices(index)


def test_generation_zero_is_random_until_the_population_is_full_then_each_child_is_one_mutation_away():
    sampler = RegularizedEvolutionSampler(NODES, population_size=10, tournament_size=4, seed=0)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    trials = run(study, sampler, 90, extra_param=True)
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert not any("parent" in t.user_attrs for t in trials[:10])  # generation 0: no lineage
    assert len({tuple(genome_of(t).to_params().items()) for t in trials[:10]}) == 10
    kinds = collections.Counter()
    for child in trials[10:]:
        parent = trials[child.user_attrs["parent"]]
        assert parent in population_when_sampled(trials, child, 10)
        assert_one_mutation(genome_of(parent), genome_of(child), child.user_attrs["mutation"])
        kinds[child.user_attrs["mutation"]] += 1
    assert set(kinds) == set(MUTATION_KINDS)
    # a parameter that is no gene is sampled by the random fallback
    assert all(0.0 <= t.params["x"] <= 1.0 for t in trials) and len({t.params["x"] for t in trials}) == 90


def test_every_call_draws_a_fresh_child_and_the_kinds_are_70_15_15():
    """A wrapper redraws by calling sample_relative again for the same trial."""
    sampler = RegularizedEvolutionSampler(NODES, population_size=8, tournament_size=3, seed=1)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    trials = run(study, sampler, 8)
    study.ask()
    frozen = study.get_trials(deepcopy=False)[-1]
    space = sampler.infer_relative_search_space(study, frozen)
    assert space == genome_search_space(NODES)
    kinds = collections.Counter()
    children = set()
    for _ in range(3000):
        child = sampler.sample_relative(study, frozen, space)
        assert child.keys() == space.keys()
        lineage = study._storage.get_trial(frozen._trial_id).user_attrs  # written by this draw
        assert lineage["parent"] in range(8)
        assert_one_mutation(
            genome_of(trials[lineage["parent"]]), Genome.from_params(child, NODES), lineage["mutation"]
        )
        kinds[lineage["mutation"]] += 1
        children.add(tuple(child.items()))
    # the one-mutation neighbours of 8 parents that still read y and p number a few hundred
    assert len(children) > 200
    assert all({"y", "p"} <= Genome.from_params(dict(child), NODES).leaves_used for child in children)
    assert set(kinds) == set(MUTATION_KINDS)
    # where every kind has children that keep y and p, the kinds are drawn 70/15/15; where one has
    # none (an arity mutation of the only node that joins y and p), another kind is drawn instead
    redundant = Genome.from_nodes(("mul", "y", "p"), ("sub", "p", "y"), ("add", "n0", "n1"))
    kinds = collections.Counter(sampler.mutate(redundant)[0] for _ in range(3000))
    assert abs(kinds["operator"] / 3000 - 0.70) < 0.03
    assert abs(kinds["input"] / 3000 - 0.15) < 0.03
    assert abs(kinds["arity"] / 3000 - 0.15) < 0.03
    joined_once = Genome.from_nodes(("mul", "y", "p"))
    for _ in range(300):
        kind, child = sampler.mutate(joined_once)
        assert kind != "arity" and {"y", "p"} <= child.leaves_used  # no arity mutation keeps both


@pytest.mark.parametrize("directions", [["maximize"], ["maximize", "maximize"], ["minimize"]])
def test_with_the_whole_population_in_the_tournament_the_parent_is_its_best_member(directions):
    sampler = RegularizedEvolutionSampler(NODES, population_size=6, tournament_size=6, seed=2)
    study = optuna.create_study(directions=directions, sampler=sampler)
    trials = run(study, sampler, 40)
    best = max if directions[0] == "maximize" else min
    for child in trials[6:]:
        population = population_when_sampled(trials, child, 6)
        parent = trials[child.user_attrs["parent"]]
        assert parent in population
        assert parent.values[0] == best(t.values[0] for t in population)


def test_a_parent_beats_the_other_members_of_its_tournament():
    """A tournament of k: the parent is better than or equal to at least k - 1 other members."""
    size, k = 10, 4
    sampler = RegularizedEvolutionSampler(NODES, population_size=size, tournament_size=k, seed=3)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    trials = run(study, sampler, 120)
    parents_rank = collections.Counter()
    for child in trials[size:]:
        population = population_when_sampled(trials, child, size)
        parent = trials[child.user_attrs["parent"]]
        assert parent in population
        worse = sum(1 for t in population if t.number != parent.number and t.values[0] <= parent.values[0])
        assert worse >= k - 1
        parents_rank[worse] += 1
    assert len(parents_rank) > 1  # not always the best: a tournament, not truncation


def test_a_member_older_than_the_population_is_never_a_parent_again():
    champion = zoo(NODES)["cross_entropy"]
    sampler = RegularizedEvolutionSampler(NODES, population_size=8, tournament_size=8, seed=4)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    study.enqueue_trial(champion.to_params())
    trials = run(study, sampler, 40, champion=champion)
    assert trials[0].values[0] == 2.0
    assert trials[8].user_attrs["parent"] == 0  # the champion wins while it is a member ...
    assert all(t.user_attrs["parent"] != 0 for t in trials[9:])  # ... and never once it has aged out
    for child in trials[8:]:
        window = {t.number for t in population_when_sampled(trials, child, 8)}
        assert child.user_attrs["parent"] in window


def test_the_population_is_the_most_recent_completions_by_completion_time():
    sampler = RegularizedEvolutionSampler(NODES, population_size=3, tournament_size=2, seed=5)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    asked = [study.ask() for _ in range(5)]
    for trial in asked:
        Genome.suggest(trial, NODES)
    study.tell(asked[4], state=TrialState.PRUNED)  # never a member
    for number in (2, 0, 3, 1):
        time.sleep(0.002)
        study.tell(asked[number], (0.5, 0.5))
    assert [t.number for t in sampler.population(study)] == [0, 3, 1]
    child = study.ask()
    Genome.suggest(child, NODES)
    assert study.get_trials()[child.number].user_attrs["parent"] in (0, 3, 1)  # written by the sampler


def test_a_new_sampler_on_the_same_storage_continues_the_stored_population(tmp_path):
    storage = f"sqlite:///{tmp_path / 'evolution.db'}"
    first = RegularizedEvolutionSampler(NODES, population_size=6, tournament_size=3, seed=6)
    study = optuna.create_study(
        study_name="s", storage=storage, directions=["maximize", "maximize"], sampler=first
    )
    run(study, first, 4)  # killed in generation 0
    second = RegularizedEvolutionSampler(NODES, population_size=6, tournament_size=3, seed=7)
    study = optuna.load_study(study_name="s", storage=storage, sampler=second)
    trials = run(study, second, 8)
    assert not any("parent" in t.user_attrs for t in trials[:6])  # generation 0 counts stored trials
    assert all("parent" in t.user_attrs for t in trials[6:12])
    third = RegularizedEvolutionSampler(NODES, population_size=6, tournament_size=3, seed=8)
    study = optuna.load_study(study_name="s", storage=storage, sampler=third)
    trials = run(study, third, 6)
    assert len(trials) == 18
    for child in trials[6:]:
        parent = trials[child.user_attrs["parent"]]
        assert parent in population_when_sampled(trials, child, 6)  # the stored population, not a new one
        assert_one_mutation(genome_of(parent), genome_of(child), child.user_attrs["mutation"])
    assert trials[12].user_attrs["parent"] in range(6, 12)


def test_enqueued_and_retried_trials_keep_their_genome_and_have_no_lineage():
    sampler = RegularizedEvolutionSampler(NODES, population_size=4, tournament_size=2, seed=9)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    run(study, sampler, 6)
    enqueued = zoo(NODES)["mse"].to_params()
    study.enqueue_trial(enqueued)
    retried = zoo(NODES)["focal"].to_params()
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING, params=retried, distributions=genome_search_space(NODES)
        )
    )
    trials = run(study, sampler, 3)
    assert trials[6].params == enqueued and "parent" not in trials[6].user_attrs
    assert trials[7].params == retried and "parent" not in trials[7].user_attrs
    assert "parent" in trials[8].user_attrs


def test_wrapped_by_the_screening_sampler_it_still_produces_valid_screened_children():
    inner = RegularizedEvolutionSampler(NODES, population_size=6, tournament_size=3, seed=10)
    sampler = ScreeningSampler(inner, NODES, seed=10)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    for genome in list(zoo(NODES).values())[:2]:
        study.enqueue_trial(genome.to_params())
    trials = run(study, inner, 24)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 24
    assert all(screen(genome_of(t)).accepted for t in trials)
    assert sum(sum(t.user_attrs.get("screened_out", {}).values()) for t in trials) > 0  # redraws happened
    assert not any("parent" in t.user_attrs for t in trials[:6])
    for child in trials[6:]:
        parent = trials[child.user_attrs["parent"]]  # the lineage of the draw that passed
        assert parent in population_when_sampled(trials, child, 6)
        assert_one_mutation(genome_of(parent), genome_of(child), child.user_attrs["mutation"])
    sampler.reseed_rng()


def test_the_same_seed_gives_the_same_search_and_bad_sizes_are_refused():
    def params(seed):
        sampler = RegularizedEvolutionSampler(NODES, population_size=5, tournament_size=2, seed=seed)
        study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
        return [t.params for t in run(study, sampler, 15)]

    assert params(11) == params(11) != params(12)
    RegularizedEvolutionSampler(NODES, seed=0).reseed_rng()
    with pytest.raises(ValueError, match="tournament_size"):
        RegularizedEvolutionSampler(NODES, population_size=5, tournament_size=6)
    with pytest.raises(ValueError, match="population_size"):
        RegularizedEvolutionSampler(NODES, population_size=0)
