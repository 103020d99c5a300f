"""Random genomes that read y and p by construction (optiloss.genome.draw): never one that misses
either, drawn from the documented distribution (uniform genes conditioned on reading both)."""

import collections
import itertools

import numpy as np
import pytest
from scipy import stats

from optiloss.genome import Genome, input_choices
from optiloss.genome.draw import UNIFORM_ACCEPTANCE, draw_genes, gene_choices, leaves_read, reads_y_and_p
from optiloss.genome.genome import CONSTANT_RANGE
from optiloss.genome.operators import OPERATOR_NAMES, OPERATORS


@pytest.mark.parametrize(("nodes", "constants"), [(5, 2), (4, 0), (8, 2)])
def test_a_random_draw_never_misses_y_or_p(nodes, constants):
    rng = np.random.RandomState(0)
    for _ in range(2000):
        params = draw_genes(rng, nodes, constants)
        genome = Genome.from_params(params, nodes)  # every gene present and valid
        assert {"y", "p"} <= genome.leaves_used
        assert leaves_read(params, nodes) == genome.leaves_used
        assert all(CONSTANT_RANGE[0] <= value <= CONSTANT_RANGE[1] for value in genome.constants)


def test_without_conditioning_few_uniform_genomes_read_both_as_documented():
    """max_draws=1 returns the first uniform draw as it is: the share that reads both is the
    documented acceptance of a uniform genome."""
    rng = np.random.RandomState(1)
    hits = sum(reads_y_and_p(draw_genes(rng, 5, 2, max_draws=1), 5) for _ in range(20_000))
    assert abs(hits / 20_000 - UNIFORM_ACCEPTANCE) < 0.004


def test_one_node_genomes_are_the_fourteen_binary_joins_of_y_and_p_equally_often():
    rng = np.random.RandomState(2)
    drawn = collections.Counter(
        tuple(draw_genes(rng, 1).values()) for _ in range(7000)
    )  # (node0_op, node0_in1, node0_in2)
    binary = [name for name in OPERATOR_NAMES if OPERATORS[name].arity == 2]
    assert set(drawn) == {(op, a, b) for op in binary for a, b in (("y", "p"), ("p", "y"))}
    assert stats.chisquare(list(drawn.values())).pvalue > 1e-3


def _exact_two_node_distribution() -> dict[tuple, float]:
    """The documented distribution for two nodes and no constants, by enumeration: every structure
    that reads y and p equally likely. Returned as the probability of (arity of node 0, arity of
    the output, the output's two inputs), with operators counted by arity."""
    count = {arity: sum(OPERATORS[name].arity == arity for name in OPERATOR_NAMES) for arity in (1, 2)}
    weights: dict[tuple, float] = collections.defaultdict(float)
    for a0, a1 in itertools.product((1, 2), repeat=2):
        for in0 in itertools.product(input_choices(0), repeat=2):
            for in1 in itertools.product(input_choices(1), repeat=2):
                params = {
                    "node0_op": next(n for n in OPERATOR_NAMES if OPERATORS[n].arity == a0),
                    "node1_op": next(n for n in OPERATOR_NAMES if OPERATORS[n].arity == a1),
                    "node0_in1": in0[0],
                    "node0_in2": in0[1],
                    "node1_in1": in1[0],
                    "node1_in2": in1[1],
                }
                if reads_y_and_p(params, 2):
                    weights[(a0, a1, *in1)] += count[a0] * count[a1]
    total = sum(weights.values())
    return {key: weight / total for key, weight in weights.items()}


def test_two_node_draws_follow_the_documented_distribution_exactly():
    exact = _exact_two_node_distribution()
    rng = np.random.RandomState(3)
    n = 6000
    drawn = collections.Counter()
    for _ in range(n):
        params = draw_genes(rng, 2)
        arity = (OPERATORS[params["node0_op"]].arity, OPERATORS[params["node1_op"]].arity)
        drawn[(*arity, params["node1_in1"], params["node1_in2"])] += 1
    assert set(drawn) <= set(exact)  # nothing outside the support
    keys = sorted(exact)
    observed = np.array([drawn[key] for key in keys], dtype=float)
    expected = np.array([exact[key] * n for key in keys])
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # within an arity, each operator equally likely: operators never decide what is read
    unary = collections.Counter()
    for _ in range(3000):
        params = draw_genes(rng, 2)
        if OPERATORS[params["node0_op"]].arity == 1:
            unary[params["node0_op"]] += 1
    assert len(unary) == 27 and stats.chisquare(list(unary.values())).pvalue > 1e-3


def test_fixed_genes_are_kept_and_the_free_ones_repair_the_genome():
    rng = np.random.RandomState(4)
    # a child whose output reads y and a node the mutation left free: only p can complete it
    child = Genome.from_nodes(("ln", "y"), ("mul", "y", "n3"), n_nodes=5).to_params()
    fixed = {name: value for name, value in child.items() if not name.startswith("node3")}
    for _ in range(200):
        params = draw_genes(rng, 5, 0, fixed)
        assert {name: params[name] for name in fixed} == fixed
        assert reads_y_and_p(params, 5)
    # fixed genes that cannot read p: the last draw comes back as it is, for the screen to reject
    hopeless = {name: value for name, value in child.items() if name.startswith("node4")}
    hopeless.update({"node4_op": "ln", "node4_in1": "y"})
    params = draw_genes(rng, 5, 0, hopeless, max_draws=50)
    assert set(params) == set(gene_choices(5)) and not reads_y_and_p(params, 5)


def test_the_same_seed_draws_the_same_genomes():
    first, second = np.random.RandomState(5), np.random.RandomState(5)
    assert [draw_genes(first, 5, 2) for _ in range(3)] == [draw_genes(second, 5, 2) for _ in range(3)]
