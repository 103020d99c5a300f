"""Screening inside the sampler: rejected genomes are redrawn before they become stored trials.

With ``screen_in_sampler = true``, :class:`ScreeningSampler` wraps the
study's sampler (NSGA-II, regularized evolution, random or TPE). For every new
trial it asks that sampler for a child, completes the genes the sampler left to
random sampling (all of them in NSGA-II's generation 0 and for the random
sampler; a mutated gene of an NSGA-II child) with
:func:`optiloss.genome.draw.draw_genes`, so that a random genome reads ``y``
and ``p`` by construction and a child whose redrawn genes would lose one is
repaired, screens the genome (:func:`optiloss.genome.screen`, and the
fingerprints of trained and running trials) and redraws until one passes, at
most ``max_draws`` times. Only the genome that passes becomes a trial, so the
study stores no PRUNED trial per rejected genome; the trial records how many
genomes were redrawn before it, by reason, in the user attr ``screened_out``
(:attr:`optiloss.records.TrialKey.SCREENED_OUT`), written by the sampler itself.

It wraps rather than subclasses :class:`~optuna.samplers.NSGAIISampler`:
NSGA-II keys its generation bookkeeping on its class name, so the studies stay
readable by, and resumable with, the plain sampler.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from optiloss.genome import Genome, gene_names, input_choices, screen
from optiloss.genome.draw import draw_genes
from optiloss.genome.genome import CONSTANT_RANGE, constant_gene
from optiloss.genome.operators import OPERATOR_NAMES
from optiloss.records import TrialKey
from optiloss.studies import reason_kind


def record_on_trial(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Write ``key`` onto an unfinished ``trial`` held only as a :class:`FrozenTrial` (a sampler's
    bookkeeping on the trial being sampled, as Optuna's GA samplers write theirs; a name given to a
    running trial), through the study's storage. The one place optiloss uses ``study._storage``."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def given_genes(trial: FrozenTrial) -> dict[str, Any]:
    """The genes a trial holds before any sampling: an enqueued loss's or a retry's (empty for a new
    trial). Optuna keeps an enqueued trial's parameters in its system attr ``fixed_params``; this is
    the one place optiloss reads it."""
    return dict(trial.params or trial.system_attrs.get("fixed_params") or {})


def genome_search_space(nodes: int, constants: int = 0) -> dict[str, BaseDistribution]:
    """Every gene of an ``nodes``-node genome with ``constants`` constants as the distribution the
    objective suggests: categorical structure genes, float constants in :data:`CONSTANT_RANGE`."""
    space: dict[str, BaseDistribution] = {
        constant_gene(k): FloatDistribution(*CONSTANT_RANGE) for k in range(constants)
    }
    for index in range(nodes):
        op_name, in1_name, in2_name = gene_names(index)
        space[op_name] = CategoricalDistribution(OPERATOR_NAMES)
        space[in1_name] = space[in2_name] = CategoricalDistribution(input_choices(index, constants))
    return space


def gene_holds(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is a value of the gene's distribution (one of its choices, or in its range)."""
    if isinstance(distribution, FloatDistribution):
        return isinstance(value, int | float) and distribution.low <= value <= distribution.high
    assert isinstance(distribution, CategoricalDistribution)
    return value in distribution.choices


def random_gene(rng: np.random.RandomState, distribution: BaseDistribution) -> Any:
    """A uniformly random value of a gene's distribution (categorical or float)."""
    if isinstance(distribution, FloatDistribution):
        return float(rng.uniform(distribution.low, distribution.high))
    assert isinstance(distribution, CategoricalDistribution)
    return distribution.choices[rng.randint(len(distribution.choices))]


class ScreeningSampler(optuna.samplers.BaseSampler):
    """``inner`` (NSGA-II or another sampler of whole genomes), drawing each new trial's genome until
    it passes the screen."""

    def __init__(
        self,
        inner: optuna.samplers.BaseSampler,
        nodes: int,
        seed: int | None = None,
        max_draws: int = 500,
        screen_options: dict[str, bool] | None = None,
        constants: int = 0,
    ) -> None:
        """``screen_options``: the study's fingerprint settings (:meth:`SearchConfig.screen_options`);
        ``constants``: the study's constant genes."""
        self._inner = inner
        self._nodes = nodes
        self._constants = constants
        self._space = genome_search_space(nodes, constants)
        self._rng = np.random.RandomState(seed)
        self._max_draws = max(1, max_draws)
        self._screen_options = screen_options or {}

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        if given_genes(trial):  # an enqueued zoo loss or a retry
            self._inner.sample_relative(study, trial, search_space)  # keeps its genome, joins its generation
            if TrialKey.SCREENED_OUT in trial.user_attrs:  # a retry's inherited count: nothing was redrawn
                record_on_trial(study, trial, TrialKey.SCREENED_OUT, {})
            return {}
        alive = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        trained = {t.user_attrs.get(TrialKey.FINGERPRINT) for t in alive}
        screened_out: Counter = Counter()
        for _ in range(self._max_draws):
            child = self._inner.sample_relative(study, trial, search_space)
            params = self._completed(child, search_space)
            result = screen(Genome.from_params(params, self._nodes), **self._screen_options)
            reason = result.reason or ("duplicate" if result.fingerprint in trained else None)
            if reason is None:
                break
            screened_out[reason_kind(reason)] += 1
        # after max_draws the last genome goes to the objective, which rejects it as a trial
        if screened_out:
            record_on_trial(study, trial, TrialKey.SCREENED_OUT, dict(screened_out))
        return params

    def _completed(self, child: dict[str, Any], search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """The child with the genes its sampler left out drawn so that the genome reads ``y`` and ``p``
        (:func:`~optiloss.genome.draw.draw_genes`); any gene outside the genome at random."""
        fixed = {name: child[name] for name in search_space if name in child and name in self._space}
        missing = [name for name in self._space if name not in fixed]
        genes = draw_genes(self._rng, self._nodes, self._constants, fixed) if missing else fixed
        return {
            name: genes[name]
            if name in genes
            else child[name]
            if name in child
            else random_gene(self._rng, distribution)
            for name, distribution in search_space.items()
        }

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()
        self._rng.seed()
