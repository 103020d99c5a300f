"""Regularized (ageing) evolution as an Optuna sampler: the paper's search.

The paper searches with regularized evolution (Real et al. 2019), with the
settings of its predecessor's code, which this sampler implements:

- a population of 100 losses, generation 0 random (uniform over the genomes
  that read ``y`` and ``p``: :func:`optiloss.genome.draw.draw_genes`);
- each child comes from a tournament of 20 members drawn without replacement
  from the population; the fittest member is the parent;
- the child is the parent after exactly one mutation, no crossover: with
  probability 0.70 an *operator* mutation (an active node's operator replaced
  by a different one of the same arity), 0.15 an *input* mutation (one input
  that an active node reads replaced by another reference it may read,
  :func:`~optiloss.genome.input_choices`), 0.15 an *arity* mutation (an active
  node's operator replaced by one of the other arity);
- ageing: when a child joins the population, the oldest member leaves,
  whatever its fitness.

How it differs, and why:

- **Fitness is the first objective only.** A search study has two objectives
  (accuracy, robustness); the tournament compares ``values[0]`` (accuracy,
  the paper's fitness) in the study's direction for it, and ignores the rest.
  A single-objective study works the same. Ties go to the member drawn first.
- **The population lives in the storage, not in memory.** It is the
  ``population_size`` most recently completed trials (``datetime_complete``,
  ties by trial number) that carry a full genome, so a killed and restarted
  process, or a new sampler instance with another seed, continues the same
  population, and parallel workers share one (asynchronous regularized
  evolution: a child joins when its trial completes, not when it was drawn).
  Until the study has ``population_size`` such trials, genomes are random
  (generation 0), drawn so that they read ``y`` and ``p``. The storage is read once per trial: a wrapper's
  redraws for the same trial reuse that reading.
- **Only COMPLETE trials are members.** Genomes rejected by the screen
  (PRUNED) or failed trials never enter the population; a diverged trial is
  COMPLETE with the penalty values and joins as a member that loses every
  tournament against a trained loss, until it ages out. Enqueued losses (the
  zoo) join like any other completed trial.
- **A mutation must change the program.** Only active nodes are mutated, and a
  mutation whose child prints the same :attr:`~optiloss.genome.Genome.structure`
  as the parent (an input replaced by a node that prints alike), or that no
  longer reads both ``y`` and ``p`` (an input replaced, or a binary node made
  unary), is drawn again (the same kind up to :data:`MUTATION_DRAWS_PER_KIND`
  times, then a new kind, up to :data:`MAX_MUTATION_DRAWS` kinds), so a child
  that cannot train for its structure is never stored. Where a kind has no
  such child (an arity mutation of the only node that joins ``y`` and ``p``),
  another kind is drawn: for such parents the kinds drift from 70/15/15. Unary operators keep their second
  input gene, so an arity mutation from unary to binary starts reading it.
- **Lineage** is written on the child's trial by the sampler itself: the user
  attrs ``parent`` (the parent's trial number) and ``mutation`` (its kind,
  :class:`optiloss.records.TrialKey`). Generation-0 genomes have none.

Trials with a genome already (enqueued ``fixed_params``, or a retried trial's
params) keep it. It can be wrapped by :class:`~optiloss.search.sampler.ScreeningSampler`,
which calls :meth:`~RegularizedEvolutionSampler.sample_relative` again for each
redraw: every call runs a new tournament and mutation, and the lineage kept is
that of the last child drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from optiloss.genome import BINARY_OPERATORS, UNARY_OPERATORS, Genome, Node, input_choices
from optiloss.genome.draw import draw_genes
from optiloss.genome.genome import CONSTANT_RANGE
from optiloss.genome.operators import OPERATORS
from optiloss.records import TrialKey
from optiloss.search.sampler import gene_holds, genome_search_space, given_genes, record_on_trial

MUTATION_KINDS: tuple[str, ...] = ("operator", "input", "arity")
MUTATION_PROBABILITIES: tuple[float, ...] = (0.70, 0.15, 0.15)
CONSTANT_MUTATION_SHARE = 0.25
"""In studies with constants, the share of children whose mutation moves a constant the parent uses
(a Gaussian step) instead of changing its structure; the structural kinds keep their 70/15/15."""
CONSTANT_STEP = 0.5
"""The standard deviation of a constant's Gaussian step: a twentieth of :data:`CONSTANT_RANGE`."""
MAX_MUTATION_DRAWS = 100
"""How often a mutation kind is drawn again when its children print like their parent or lose ``y``
or ``p``."""
MUTATION_DRAWS_PER_KIND = 10
"""How often a mutation of one kind is drawn again before another kind is drawn."""

_BY_ARITY: dict[int, tuple[str, ...]] = {
    1: tuple(op.name for op in UNARY_OPERATORS),
    2: tuple(op.name for op in BINARY_OPERATORS),
}


class RegularizedEvolutionSampler(optuna.samplers.BaseSampler):
    """Regularized evolution over loss genomes of ``nodes`` nodes; see the module docstring."""

    def __init__(
        self,
        nodes: int,
        population_size: int = 100,
        tournament_size: int = 20,
        seed: int | None = None,
        constants: int = 0,
    ) -> None:
        if population_size < 1:
            raise ValueError(f"population_size must be at least 1, got {population_size}")
        if not 1 <= tournament_size <= population_size:
            raise ValueError(
                f"tournament_size must be between 1 and population_size ({population_size}),"
                f" got {tournament_size}"
            )
        self._nodes = nodes
        self._constants = constants
        self._population_size = population_size
        self._tournament_size = tournament_size
        self._space = genome_search_space(nodes, constants)
        self._rng = np.random.RandomState(seed)
        self._random_sampler = optuna.samplers.RandomSampler(seed=seed)
        # the population read for the trial being sampled, so that a wrapper's redraws read it once
        self._population_cache: tuple[tuple[str, int], list[FrozenTrial]] | None = None

    @property
    def population_size(self) -> int:
        return self._population_size

    @property
    def tournament_size(self) -> int:
        return self._tournament_size

    # ------------------------------------------------------------- Optuna API
    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        if given_genes(trial):  # an enqueued loss or a retry
            return {}
        population = self._population_for(study, trial)
        if len(population) < self._population_size:
            params = self._random_params()
        else:
            parent = self._tournament(study, population)
            kind, child = self.mutate(Genome.from_params(parent.params, self._nodes))
            params = child.to_params()
            # a wrapper that redraws calls this again: the genome it keeps wrote its lineage last
            record_on_trial(study, trial, TrialKey.PARENT, parent.number)
            record_on_trial(study, trial, TrialKey.MUTATION, kind)
        return {name: params[name] for name in search_space if name in params}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        # never reached for genes (they are sampled relatively); anything else is sampled at random
        return self._random_sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._random_sampler.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._random_sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random_sampler.reseed_rng()

    # ----------------------------------------------------------- population
    def population(self, study: optuna.Study) -> list[FrozenTrial]:
        """The current population, oldest first: the ``population_size`` most recently completed
        trials that carry a full genome."""
        complete = sorted(
            study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
            key=lambda t: (t.datetime_complete or datetime.min, t.number),
        )
        members: list[FrozenTrial] = []
        for trial in reversed(complete):
            if len(members) == self._population_size:
                break
            if trial.values and self._has_genome(trial):
                members.append(trial)
        return members[::-1]

    def _population_for(self, study: optuna.Study, trial: FrozenTrial) -> list[FrozenTrial]:
        cache = self._population_cache
        key = (study.study_name, trial.number)
        if cache is None or cache[0] != key:
            cache = (key, self.population(study))
            self._population_cache = cache
        return cache[1]

    def _has_genome(self, trial: FrozenTrial) -> bool:
        for name, distribution in self._space.items():
            if not gene_holds(distribution, trial.params.get(name)):
                return False
        return True

    def _tournament(self, study: optuna.Study, population: list[FrozenTrial]) -> FrozenTrial:
        sign = -1.0 if study.directions[0] == StudyDirection.MINIMIZE else 1.0
        drawn = self._rng.choice(len(population), size=self._tournament_size, replace=False)
        best = drawn[0]
        for index in drawn[1:]:
            if sign * population[index].values[0] > sign * population[best].values[0]:
                best = index
        return population[best]

    def _random_params(self) -> dict[str, Any]:
        return draw_genes(self._rng, self._nodes, self._constants)

    # ------------------------------------------------------------- mutation
    def mutate(self, parent: Genome) -> tuple[str, Genome]:
        """(kind, child): one mutation of ``parent`` that changes its printed structure and still reads
        ``y`` and ``p`` (drawn again when it does not; after :data:`MAX_MUTATION_DRAWS` draws the last
        is kept), with the sampler's random state. The guided sampler breeds its candidates with it."""
        for _ in range(MAX_MUTATION_DRAWS):
            if parent.constants_used and self._rng.uniform() < CONSTANT_MUTATION_SHARE:
                kind = "constant"
            else:
                kind = MUTATION_KINDS[self._rng.choice(len(MUTATION_KINDS), p=MUTATION_PROBABILITIES)]
            # a kind is tried a few times before another is drawn, so the kinds keep their shares
            # wherever each has mutations that keep y and p (an arity mutation of mul(y, p) has none)
            for _ in range(MUTATION_DRAWS_PER_KIND):
                child = getattr(self, f"_mutate_{kind}")(parent)
                if child.structure != parent.structure and {"y", "p"} <= child.leaves_used:
                    return kind, child
        return kind, child

    def _mutate_operator(self, parent: Genome) -> Genome:
        index = _choice(self._rng, parent.active_nodes)
        node = parent.nodes[index]
        others = [name for name in _BY_ARITY[OPERATORS[node.operator].arity] if name != node.operator]
        return _replace(parent, index, Node(_choice(self._rng, others), node.inputs))

    def _mutate_arity(self, parent: Genome) -> Genome:
        index = _choice(self._rng, parent.active_nodes)
        node = parent.nodes[index]
        other_arity = 3 - OPERATORS[node.operator].arity
        return _replace(parent, index, Node(_choice(self._rng, _BY_ARITY[other_arity]), node.inputs))

    def _mutate_input(self, parent: Genome) -> Genome:
        used = [
            (index, slot)
            for index in parent.active_nodes
            for slot in range(OPERATORS[parent.nodes[index].operator].arity)
        ]
        index, slot = used[self._rng.randint(len(used))]
        node = parent.nodes[index]
        others = [ref for ref in input_choices(index, self._constants) if ref != node.inputs[slot]]
        inputs = list(node.inputs)
        inputs[slot] = _choice(self._rng, others)
        return _replace(parent, index, Node(node.operator, (inputs[0], inputs[1])))

    def _mutate_constant(self, parent: Genome) -> Genome:
        """One constant the output uses, moved by a Gaussian step of :data:`CONSTANT_STEP`, kept in range."""
        index = _choice(self._rng, parent.constants_used)
        values = list(parent.constants)
        low, high = CONSTANT_RANGE
        values[index] = float(np.clip(values[index] + self._rng.normal(0.0, CONSTANT_STEP), low, high))
        return parent.with_constants(tuple(values))


def _choice(rng: np.random.RandomState, options: Sequence[Any]) -> Any:
    return options[rng.randint(len(options))]


def _replace(genome: Genome, index: int, node: Node) -> Genome:
    nodes = list(genome.nodes)
    nodes[index] = node
    return Genome(tuple(nodes), genome.negated, genome.constants)


__all__ = ["MAX_MUTATION_DRAWS", "MUTATION_KINDS", "MUTATION_PROBABILITIES", "RegularizedEvolutionSampler"]
