"""``sampler = "guided"``: every trained loss teaches the next choice.

For each new trial, :class:`GuidedSampler`

1. reads the study's trained trials (COMPLETE, with a whole genome) and their
   phenotypes (:func:`optiloss.genome.phenotype.phenotype`: what each loss does on
   the screen's probe set);
2. until :attr:`GuidedSampler.startup` losses are trained (the zoo counts), draws a
   uniformly random genome that passes the screen and trains like no trained or
   running trial (its fingerprint);
3. then fits a :class:`PhenotypePredictor` per objective (an ensemble: a mean and a
   spread), draws a pool of :attr:`~GuidedSampler.pool_size` screened, distinct
   candidates (mutations and uniform crossovers of the Pareto set and the most
   accurate trials, constants moved too, plus a share :data:`UNIFORM_SHARE` of
   uniform draws), and picks by Thompson sampling: one ensemble member's
   prediction for every candidate, the candidate adding most hypervolume to the
   study's measured front (two objectives), or, for ``objectives = ["accuracy"]``,
   the largest expected improvement over the best accuracy. A share
   :data:`EXPLORE_SHARE` of the picks is a uniform candidate instead.

The sampler holds no state a study does not: phenotypes are recomputed from the
trials' parameters, so a resumed search (or a second worker) rebuilds it from the
study alone, and the same seed on the same study proposes the same genome. The
pick writes onto its trial, through :mod:`optiloss.records`' keys, its
fingerprint (so a second worker's objective sees it as running at once, and a worker whose pick
another running trial claimed at the same moment picks again), how it
was picked, and the predicted mean and spread of each objective, which ``show``
sets beside the measured values. Studies stay plain Optuna studies: the genome is
in the usual parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from optiloss.genome import Genome, screen
from optiloss.genome.draw import draw_genes
from optiloss.genome.phenotype import phenotype
from optiloss.records import TrialKey
from optiloss.search.evolution import RegularizedEvolutionSampler
from optiloss.search.sampler import gene_holds, genome_search_space, given_genes, random_gene, record_on_trial
from optiloss.statistics import hypervolume, non_dominated, non_dominated_rows

PREDICTORS = ("ridge", "knn", "forest")
"""The predictor kinds :class:`PhenotypePredictor` offers (``bench/predictor.py`` compares them)."""
DEFAULT_PREDICTOR = "forest"
"""Chosen by the gate (bench/predictor.py, docs/benchmarks.md): the best forward-chained rank correlation."""
DEFAULT_STARTUP = 12
"""Trained losses (the zoo's count) before the predictor picks: the zoo and a few uniform draws."""
ENSEMBLE_MEMBERS = 16
UNIFORM_SHARE = 0.25
"""The share of a pool drawn uniformly at random rather than bred from the best trials."""
EXPLORE_SHARE = 0.1
"""The share of picks that take a uniform candidate whatever the prediction."""
CROSSOVER_SHARE = 0.3
"""The share of bred candidates that are a uniform crossover of two parents (then mutated once)."""
PARENTS = 8
"""The most accurate trials bred from, beside the Pareto set."""
STANDARD_CLIP = 4.0
"""Standardised features are clipped to this many standard deviations: a candidate unlike every
trained loss is predicted from the edge of what was seen, not extrapolated without bound."""
FOREST_ROWS = 512
"""Above this many trained losses each tree of the ``forest`` predictor is fitted on a bootstrap
sample of this size, so that a pick's fit stops growing with the study (the gate, at 230 losses,
fits every tree on all of them)."""
MAX_POOL_DRAWS = 20
"""Draws per pool place before a pool is taken as it is (screen rejections, duplicates)."""
MAX_CLAIMS = 3
"""Picks per trial when two workers claim the same genome at once (the last one stands: the
objective's duplicate check rejects it then)."""


class PhenotypePredictor:
    """An ensemble predicting a study's objectives from phenotypes: ``fit(X, Y)`` then
    ``members(X)``, the (members, candidates, objectives) predictions whose mean and spread are the
    prediction and its uncertainty.

    Kinds (:data:`PREDICTORS`): ``ridge``, ridge regressions on bootstrap resamples of the trained
    trials (features standardised, the penalty scaled to their number); ``knn``, the mean of the
    nearest trained phenotypes on bootstrap resamples; ``forest``, scikit-learn's extra trees, one
    member a tree.
    """

    def __init__(self, kind: str = DEFAULT_PREDICTOR, members: int = ENSEMBLE_MEMBERS, seed: int = 0) -> None:
        if kind not in PREDICTORS:
            raise ValueError(f"unknown predictor {kind!r}; known: {', '.join(PREDICTORS)}")
        self.kind, self.size, self._rng = kind, members, np.random.RandomState(seed)
        self._fitted: list[Any] = []

    def fit(self, features: np.ndarray, targets: np.ndarray) -> PhenotypePredictor:
        self._mean = features.mean(0)
        spread = features.std(0)
        # a feature that barely varies among the trained losses says nothing, and would blow up
        # a candidate that differs in it: it is left out
        self._scale = np.where(spread > 1e-3, spread, np.inf)
        x = self._standardised(features)
        if self.kind == "forest":
            from sklearn.ensemble import ExtraTreesRegressor

            sampled = len(x) > FOREST_ROWS
            forest = ExtraTreesRegressor(
                n_estimators=self.size,
                min_samples_leaf=2,
                max_features=0.3,
                bootstrap=sampled,
                max_samples=FOREST_ROWS if sampled else None,
                random_state=self._rng.randint(2**31),
            )
            self._fitted = list(forest.fit(x, targets).estimators_)
            return self
        self._fitted = []
        for _ in range(self.size):
            rows = self._rng.randint(len(x), size=len(x))
            if self.kind == "ridge":
                self._fitted.append(_ridge(x[rows], targets[rows], penalty=float(x.shape[1])))
            else:
                self._fitted.append((x[rows], targets[rows]))
        return self

    def _standardised(self, features: np.ndarray) -> np.ndarray:
        return np.clip((features - self._mean) / self._scale, -STANDARD_CLIP, STANDARD_CLIP)

    def members(self, features: np.ndarray) -> np.ndarray:
        """Each member's prediction, within [0, 1] (the objectives are accuracies): an array
        (members, len(features), objectives)."""
        x = self._standardised(features)
        if self.kind == "forest":
            predicted = np.stack([tree.predict(x).reshape(len(x), -1) for tree in self._fitted])
        elif self.kind == "ridge":
            predicted = np.stack([x @ weights + intercept for weights, intercept in self._fitted])
        else:
            predicted = np.stack([_nearest_mean(x, known, values) for known, values in self._fitted])
        return np.clip(predicted, 0.0, 1.0)


def _ridge(x: np.ndarray, y: np.ndarray, penalty: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression weights and intercept, solved in the smaller of the two dimensions."""
    centre_x, centre_y = x.mean(0), y.mean(0)
    xc, yc = x - centre_x, y - centre_y
    if len(xc) < xc.shape[1]:  # dual form: n x n
        dual = np.linalg.solve(xc @ xc.T + penalty * np.eye(len(xc)), yc)
        weights = xc.T @ dual
    else:
        weights = np.linalg.solve(xc.T @ xc + penalty * np.eye(xc.shape[1]), xc.T @ yc)
    return weights, centre_y - centre_x @ weights


def _nearest_mean(x: np.ndarray, known: np.ndarray, values: np.ndarray, k: int = 5) -> np.ndarray:
    distances = ((x[:, None, :] - known[None, :, :]) ** 2).sum(-1)
    nearest = np.argsort(distances, axis=1)[:, : min(k, len(known))]
    return values[nearest].mean(1)


def expected_improvement(mean: np.ndarray, spread: np.ndarray, best: float) -> np.ndarray:
    spread = np.maximum(spread, 1e-9)
    z = (mean - best) / spread
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return (mean - best) * cdf + spread * pdf


@dataclass(frozen=True)
class Candidate:
    params: dict[str, Any]
    fingerprint: str
    phenotype: np.ndarray
    origin: str
    """``uniform``, ``mutation`` or ``crossover``."""


class GuidedSampler(optuna.samplers.BaseSampler):
    """Model-guided search over whole genomes; see the module docstring."""

    def __init__(
        self,
        nodes: int,
        seed: int | None = None,
        *,
        constants: int = 0,
        screen_options: dict[str, bool] | None = None,
        startup: int | None = None,
        pool_size: int = 40,
        predictor: str = DEFAULT_PREDICTOR,
    ) -> None:
        self._nodes, self._constants = nodes, constants
        self._space = genome_search_space(nodes, constants)
        self._rng = np.random.RandomState(seed)
        self._screen_options = screen_options or {}
        self._soft_targets = self._screen_options.get("soft_targets", True)
        self.startup = DEFAULT_STARTUP if startup is None else startup
        self.pool_size, self.predictor = pool_size, predictor
        # mutation moves (operator, input, arity, constant) shared with regularized evolution, drawn
        # from a random state of its own seeded from this one's
        self._breeder = RegularizedEvolutionSampler(
            nodes, 1, 1, seed=int(self._rng.randint(2**31)), constants=constants
        )
        self._phenotypes: dict[str, np.ndarray] = {}  # candidates', by fingerprint
        self._trained: dict[int, np.ndarray] = {}  # trained trials', by number

    # ------------------------------------------------------------- Optuna API
    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space or given_genes(trial):
            return {}  # an enqueued loss or a retry keeps its genome
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        taken = {
            str(t.user_attrs[TrialKey.FINGERPRINT]) for t in trials if TrialKey.FINGERPRINT in t.user_attrs
        }
        trained = [t for t in trials if t.state == TrialState.COMPLETE and t.values and self._has_genome(t)]
        for _ in range(MAX_CLAIMS):
            if len(trained) < self.startup:
                pick, prediction, how = self._uniform(taken), None, "startup"
            else:
                pick, prediction, how = self._guided_pick(study, trained, taken)
            if not pick.fingerprint:
                break
            # claimed: seen by a second worker's objective as running from now on
            record_on_trial(study, trial, TrialKey.FINGERPRINT, pick.fingerprint)
            if not self._claimed_elsewhere(study, trial, pick.fingerprint):
                break
            taken.add(pick.fingerprint)
        record_on_trial(study, trial, TrialKey.GUIDED_PICK, how)
        if prediction is not None:
            record_on_trial(study, trial, TrialKey.PREDICTED, prediction)
        return {name: pick.params[name] for name in search_space}

    @staticmethod
    def _claimed_elsewhere(study: optuna.Study, trial: FrozenTrial, fingerprint: str) -> bool:
        """Whether another trial, running or trained, holds ``fingerprint``: a second worker that
        picked the same genome while this one was picking (and may have trained it meanwhile). Each
        worker claims (writes) before it checks, so of two such workers at least one sees the other's
        claim and picks again."""
        return any(
            other.number != trial.number and other.user_attrs.get(TrialKey.FINGERPRINT) == fingerprint
            for other in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
        )

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return random_gene(self._rng, param_distribution)

    def reseed_rng(self) -> None:
        self._rng.seed()

    # --------------------------------------------------------------- picking
    def _guided_pick(
        self, study: optuna.Study, trained: list[FrozenTrial], taken: set[str]
    ) -> tuple[Candidate, dict[str, dict[str, float]], str]:
        features = np.stack([self._phenotype_of(t) for t in trained])
        values = np.array([t.values for t in trained], dtype=np.float64)
        model = PhenotypePredictor(self.predictor, seed=self._rng.randint(2**31)).fit(features, values)
        pool = self._pool(trained, taken)
        predictions = model.members(np.stack([c.phenotype for c in pool]))
        if self._rng.uniform() < EXPLORE_SHARE:
            uniform = [i for i, c in enumerate(pool) if c.origin == "uniform"] or list(range(len(pool)))
            chosen, how = uniform[self._rng.randint(len(uniform))], "uniform"
        elif values.shape[1] == 1:
            mean, spread = predictions.mean(0)[:, 0], predictions.std(0)[:, 0]
            chosen, how = (
                int(np.argmax(expected_improvement(mean, spread, values[:, 0].max()))),
                "expected improvement",
            )
        else:
            sampled = predictions[self._rng.randint(len(predictions))]
            front = non_dominated(values[:, :2]).tolist()
            front_area = hypervolume(front)
            gains = np.array([hypervolume([*front, point[:2].tolist()]) - front_area for point in sampled])
            chosen = int(np.argmax(gains)) if gains.max() > 0 else int(np.argmax(sampled.sum(1)))
            how = "thompson"
        names = study.metric_names or [f"objective {i}" for i in range(values.shape[1])]
        mean, spread = predictions.mean(0)[chosen], predictions.std(0)[chosen]
        prediction = {
            name: {"mean": round(float(m), 4), "sd": round(float(s), 4)}
            for name, m, s in zip(names, mean, spread)
        }
        return pool[chosen], prediction, f"{how} ({pool[chosen].origin})"

    def _pool(self, trained: list[FrozenTrial], taken: set[str]) -> list[Candidate]:
        parents = _parents(trained)
        pool: list[Candidate] = []
        seen = set(taken)
        for _ in range(self.pool_size * MAX_POOL_DRAWS):
            if len(pool) == self.pool_size:
                break
            if self._rng.uniform() < UNIFORM_SHARE:
                params, origin = self._random_params(), "uniform"
            else:
                params, origin = self._bred(parents)
            candidate = self._screened(params, origin)
            if candidate is not None and candidate.fingerprint not in seen:
                seen.add(candidate.fingerprint)
                pool.append(candidate)
        if not pool:  # nothing new passed: a uniform draw, as the screening sampler would redraw
            pool.append(self._uniform(taken))
        return pool

    def _bred(self, parents: list[FrozenTrial]) -> tuple[dict[str, Any], str]:
        first = parents[self._rng.randint(len(parents))]
        genome = Genome.from_params(first.params, self._nodes)
        origin = "mutation"
        if len(parents) > 1 and self._rng.uniform() < CROSSOVER_SHARE:
            second = parents[self._rng.randint(len(parents))]
            mixed = {
                name: (first if self._rng.uniform() < 0.5 else second).params[name] for name in self._space
            }
            genome, origin = Genome.from_params(mixed, self._nodes), "crossover"
        _, child = self._breeder.mutate(genome)
        return child.to_params(), origin

    def _uniform(self, taken: set[str]) -> Candidate:
        """A uniformly random genome that passes the screen and is not ``taken`` (the last draw after
        :data:`MAX_POOL_DRAWS` x pool size tries, for the objective to reject)."""
        params = self._random_params()
        for _ in range(self.pool_size * MAX_POOL_DRAWS):
            candidate = self._screened(params, "uniform")
            if candidate is not None and candidate.fingerprint not in taken:
                return candidate
            params = self._random_params()
        return Candidate(params, "", np.zeros(0), "uniform")

    def _screened(self, params: dict[str, Any], origin: str) -> Candidate | None:
        result = screen(Genome.from_params(params, self._nodes), **self._screen_options)
        if not result.accepted or result.fingerprint is None:
            return None
        vector = self._phenotypes.get(result.fingerprint)
        if vector is None:
            vector = phenotype(result.genome, self._soft_targets, result.behaviour)
            self._phenotypes[result.fingerprint] = vector
        return Candidate(params, result.fingerprint, vector, origin)

    def _phenotype_of(self, trial: FrozenTrial) -> np.ndarray:
        """A trained trial's phenotype, computed once per process (a finished trial's genome never
        changes); a genome that fails today's screen still has one."""
        if trial.number not in self._trained:
            result = screen(Genome.from_params(trial.params, self._nodes), **self._screen_options)
            self._trained[trial.number] = phenotype(result.genome, self._soft_targets, result.behaviour)
        return self._trained[trial.number]

    def _random_params(self) -> dict[str, Any]:
        """A uniform genome among those reading ``y`` and ``p`` (:func:`optiloss.genome.draw.draw_genes`)."""
        return draw_genes(self._rng, self._nodes, self._constants)

    def _has_genome(self, trial: FrozenTrial) -> bool:
        return all(gene_holds(d, trial.params.get(name)) for name, d in self._space.items())


def _parents(trained: list[FrozenTrial]) -> list[FrozenTrial]:
    """The Pareto set of the trained trials (every objective maximised) and the :data:`PARENTS` most
    accurate. Computed here rather than by ``study.best_trials``, which deep-copies every trial of the
    study on each call (over a second per pick at 1,000 trials)."""
    front = [trained[i] for i in non_dominated_rows(np.array([t.values for t in trained], dtype=np.float64))]
    best = sorted(trained, key=lambda t: -t.values[0])[:PARENTS]
    chosen = {t.number: t for t in front + best}
    return [chosen[n] for n in sorted(chosen)]


__all__ = ["GuidedSampler", "PhenotypePredictor", "PREDICTORS"]
