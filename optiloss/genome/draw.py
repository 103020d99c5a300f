"""Random genomes that read both ``y`` and ``p`` by construction.

A uniformly random genome (every categorical gene uniform over its choices,
every constant uniform in :data:`~optiloss.genome.genome.CONSTANT_RANGE`,
independently) rarely trains: at the default size (5 nodes, 2 constants) only
about 2 % of such genomes have an output whose active graph reads both the
target ``y`` and the probabilities ``p`` (:data:`UNIFORM_ACCEPTANCE`); the
others are rejected by the screen's first check before anything is trained.

:func:`draw_genes` draws from that uniform distribution **conditioned on the
output reading both** ``y`` and ``p``:

- every structure (assignment of the operator and input genes) whose active
  graph reads ``y`` and ``p`` is equally likely, and no other is ever drawn;
- the constants stay independent and uniform in their range (they never decide
  whether ``y`` and ``p`` are read);
- genes outside the active graph stay uniform.

It draws by rejection on the structure alone (a walk from the output over at
most ``n_nodes`` nodes, microseconds, no tensor is touched), which is what
makes the distribution exactly the conditioned one. With ``fixed`` genes (a
child's inherited genes), only the other genes are drawn, from the same
uniform distribution conditioned on the whole genome reading ``y`` and ``p``
given the fixed ones: a repair of the child's redrawn (mutated) genes. When the
fixed genes leave no way to read both within ``max_draws`` draws, the last draw
is returned as it is and the screen rejects it (the sampler then draws another
child).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from optiloss.genome.genome import CONSTANT_RANGE, constant_gene, gene_names, input_choices
from optiloss.genome.operators import OPERATOR_NAMES, OPERATORS

MAX_DRAWS = 2000
"""Draws of the free genes before :func:`draw_genes` gives up and returns its last draw."""
UNIFORM_ACCEPTANCE = 0.019
"""The share of uniformly random 5-node genomes with 2 constants whose output reads both ``y`` and
``p`` (measured over 100,000 draws; ``tests/test_genome_draw.py`` checks it): about one in 50, so a
redraw costs about 50 structure walks, well under a millisecond."""

_ARITY = {name: operator.arity for name, operator in OPERATORS.items()}


def gene_choices(n_nodes: int, n_constants: int = 0) -> dict[str, tuple[str, ...] | tuple[float, float]]:
    """Every gene of a genome: the choices of a categorical gene (operators, inputs), or the
    ``(low, high)`` range of a constant. The same genes :meth:`Genome.suggest` asks a trial for."""
    genes: dict[str, tuple[str, ...] | tuple[float, float]] = {
        constant_gene(k): CONSTANT_RANGE for k in range(n_constants)
    }
    for index in range(n_nodes):
        op_name, in1_name, in2_name = gene_names(index)
        genes[op_name] = OPERATOR_NAMES
        genes[in1_name] = genes[in2_name] = input_choices(index, n_constants)
    return genes


def leaves_read(params: Mapping[str, Any], n_nodes: int) -> frozenset[str]:
    """The leaves (``y``, ``p``, ``1``, ``-1``, ``c0`` …) the output node's active graph reads, from
    the genes alone; equals :attr:`Genome.leaves_used` of the decoded genome."""
    leaves: set[str] = set()
    seen: set[int] = set()
    stack = [n_nodes - 1]
    while stack:
        index = stack.pop()
        if index in seen:
            continue
        seen.add(index)
        op_name, in1_name, in2_name = gene_names(index)
        refs = (params[in1_name], params[in2_name])[: _ARITY[params[op_name]]]
        for ref in refs:
            if ref[0] == "n":
                stack.append(int(ref[1:]))
            else:
                leaves.add(ref)
    return frozenset(leaves)


def reads_y_and_p(params: Mapping[str, Any], n_nodes: int) -> bool:
    """Whether the genome of ``params`` has an output that reads both ``y`` and ``p``."""
    return {"y", "p"} <= leaves_read(params, n_nodes)


def draw_genes(
    rng: np.random.RandomState,
    n_nodes: int,
    n_constants: int = 0,
    fixed: Mapping[str, Any] | None = None,
    max_draws: int = MAX_DRAWS,
) -> dict[str, Any]:
    """Every gene of a genome (as :meth:`Genome.to_params` gives them), the genes not in ``fixed``
    drawn from the uniform distribution conditioned on the output reading ``y`` and ``p`` (see the
    module docstring). After ``max_draws`` draws that all miss (possible only with ``fixed`` genes),
    the last draw is returned."""
    fixed = dict(fixed or {})
    genes = gene_choices(n_nodes, n_constants)
    free = [name for name in genes if name not in fixed]
    categorical = [name for name in free if isinstance(genes[name][0], str)]
    sizes = np.array([len(genes[name]) for name in categorical])
    params = dict(fixed)
    low, high = CONSTANT_RANGE
    for name in free:  # the constants: drawn once, they never decide what is read
        if name not in categorical:
            params[name] = float(rng.uniform(low, high))
    for _ in range(max(1, max_draws)):
        picks = rng.randint(0, sizes) if len(sizes) else ()
        for name, pick in zip(categorical, picks):
            params[name] = genes[name][int(pick)]
        if not categorical or reads_y_and_p(params, n_nodes):
            break
    return {name: params[name] for name in genes}


__all__ = ["MAX_DRAWS", "UNIFORM_ACCEPTANCE", "draw_genes", "gene_choices", "leaves_read", "reads_y_and_p"]
