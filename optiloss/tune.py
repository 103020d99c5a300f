"""Tuning one loss's constants (``optiloss tune``): the structure fixed, its numbers searched.

A tune study is a plain Optuna study over the constants a loss uses, each a
float parameter searched near the loss's own value and never across zero
(:func:`constant_space`): a constant ``c`` > 0 is ``const<k>`` on a logarithmic
range from ``c / 10`` to ``10 c``, a constant below zero is ``minus_const<k>``
(its magnitude) on the same kind of range, a zero is ``const<k>`` in
:data:`ZERO_RANGE` (each range cut at :data:`~optiloss.genome.genome.CONSTANT_RANGE`'s
bound where that still holds the value), so a weight never flips its sign.
Optuna's CMA-ES where there are two or more (Hansen's evolution strategy, as
TaylorGLO tunes its loss coefficients), TPE for one. A tune study made before
this searched every ``const<k>`` over the whole ``CONSTANT_RANGE`` and
continues so. Every trial trains the
search surrogate with the study's config and scores it on the validation split,
exactly like a search trial, so a tuned loss and a searched one are measured
alike; the test split stays for :func:`optiloss.evaluate.compare_losses`. It is
resumable like a search: run the same command again and it continues until the
study holds ``n_trials`` COMPLETE trials. The first trial trains the loss's own
constants, so the tuned result is never worse on validation than the start.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from tqdm.auto import tqdm

from optiloss.devices import resolve_device
from optiloss.errors import UsageError
from optiloss.genome import Genome, screen, zoo
from optiloss.genome.genome import CONSTANT_RANGE, constant_gene
from optiloss.genome.named import named_losses
from optiloss.liveness import fail_dead_trials, worker_record
from optiloss.records import StudyKey, TrialKey
from optiloss.scoring import DIVERGED_VALUES, LossEvaluator, load_data, record_training, screen_or_reject
from optiloss.settings import SearchConfig
from optiloss.storage import open_storage

SIGN_KEEPING = "sign-keeping"
SCALE_FACTOR = 10.0
"""A non-zero constant is searched from its value divided by this to its value times this."""
ZERO_RANGE = (-0.1, 0.1)
"""The linear range a constant that is zero in the loss is searched in."""
NEGATED_PREFIX = "minus_"


def constant_space(
    start: Genome, sign_keeping: bool = True
) -> tuple[dict[str, FloatDistribution], dict[str, float]]:
    """(the parameters a tune study of ``start`` searches, by name, as the module docstring says; the
    values of them that give ``start``'s own constants, its first trial). Without ``sign_keeping``,
    the space of a study made before: every ``const<k>`` over :data:`CONSTANT_RANGE`."""
    space, first = {}, {}
    for k in start.constants_used:
        value, name = start.constants[k], constant_gene(k)
        if not sign_keeping:
            space[name], first[name] = FloatDistribution(*CONSTANT_RANGE), value
        elif value == 0:
            space[name], first[name] = FloatDistribution(*ZERO_RANGE), value
        else:
            magnitude = abs(value)
            bound = CONSTANT_RANGE[1] if value > 0 else -CONSTANT_RANGE[0]
            high = max(magnitude, min(magnitude * SCALE_FACTOR, bound))
            name = name if value > 0 else NEGATED_PREFIX + name
            space[name] = FloatDistribution(magnitude / SCALE_FACTOR, high, log=True)
            first[name] = magnitude
    return space, first


@dataclass(frozen=True)
class TuneOutcome:
    """A tune study, the loss it tunes and the best genome it found (its validation accuracy)."""

    study: optuna.Study
    label: str
    start: Genome
    best: Genome
    best_accuracy: float
    start_accuracy: float | None


def tune_study_name(source: str, label: str) -> str:
    return f"{source}-tune-{label}"


def tuned_genome(start: Genome, params: dict[str, float]) -> Genome:
    """``start`` with the constants a tune trial set (the others as they were)."""
    values = list(start.constants)
    for k in start.constants_used:
        gene = constant_gene(k)
        values[k] = float(params[gene]) if gene in params else -float(params[NEGATED_PREFIX + gene])
    return start.with_constants(tuple(values))


def tune_loss(
    start: Genome,
    label: str,
    config: SearchConfig,
    storage_url: str | None = None,
    *,
    n_trials: int = 30,
    study_name: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TuneOutcome:
    """Tune the constants ``start`` uses on ``config``'s surrogate, data and augmentation until the tune
    study holds ``n_trials`` COMPLETE trials; returns the best. A loss without constants is a
    :class:`UsageError`."""
    used = start.constants_used
    if not used:
        raise UsageError(
            f"loss {label} = {start.formula!r} has no constants to tune (no number besides 1 and -1): "
            "write its strengths as numbers, e.g. -((0.9 * y) + 0.01) * ln(p)"
        )
    name = study_name or tune_study_name(config.resolved_study_name, label)
    storage = open_storage(storage_url)
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    recorded = existing[name].user_attrs.get(StudyKey.TUNED_LOSS) if name in existing else None
    space, first_params = constant_space(
        start, sign_keeping=recorded is None or recorded.get("space") == SIGN_KEEPING
    )
    sampler: optuna.samplers.BaseSampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)  # x0 is deprecated in Optuna 4.9+, still honoured
        if len(used) >= 2:
            sampler = optuna.samplers.CmaEsSampler(x0=first_params, seed=config.seed)
        else:
            sampler = optuna.samplers.TPESampler(seed=config.seed)
        study = optuna.create_study(
            study_name=name, storage=storage, load_if_exists=True, direction="maximize", sampler=sampler
        )
        study.set_metric_names(["accuracy"])
    if recorded is not None and recorded["formula"] != start.formula:
        raise UsageError(
            f"tune study {name!r} tunes {recorded['label']} = {recorded['formula']!r}, "
            f"not {start.formula!r}: use another --study-name"
        )
    if recorded is None:
        study.set_user_attr(
            StudyKey.TUNED_LOSS, {"label": label, "formula": start.formula, "space": SIGN_KEEPING}
        )
        study.set_user_attr(StudyKey.CONFIG, config.as_dict())
        study.enqueue_trial(first_params)  # the loss as given: tuning starts from it
    fail_dead_trials(storage, study)
    device = resolve_device(config.device)
    evaluator = LossEvaluator.for_search(config, load_data(config, progress).to(device), device)
    augmentation = evaluator.augmentation(config.augmentation)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(TrialKey.WORKER, worker_record(trial.number))
        params = {name: trial.suggest_float(name, d.low, d.high, log=d.log) for name, d in space.items()}
        genome = tuned_genome(start, params).with_orientation(False)
        screened = screen_or_reject(trial, genome, **config.screen_options())
        result = evaluator.evaluate(screened.genome, augmentation, config.seed)
        record_training(trial, result, evaluator.precision)
        return DIVERGED_VALUES[0] if result.diverged else result.accuracy

    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    remaining = max(0, n_trials - done)
    log(f"{name}: tuning {len(used)} constant(s) of {label} = {start.formula}; {done}/{n_trials} complete")
    if remaining:
        bar = tqdm(total=n_trials, initial=done, desc="tune trials", unit="trial", disable=not progress)
        callback = optuna.study.MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE,))
        try:
            study.optimize(
                objective,
                callbacks=[callback, lambda study, trial: bar.update(trial.state == TrialState.COMPLETE)],
            )
        finally:
            bar.close()
    best = study.best_trial
    first = study.trials[0] if study.trials and study.trials[0].state == TrialState.COMPLETE else None
    return TuneOutcome(
        study,
        label,
        start,
        screen(tuned_genome(start, best.params).with_orientation(False)).genome,
        float(best.values[0]),
        first.values[0] if first is not None else None,
    )


def zoo_loss(name: str, config: SearchConfig, option: str) -> Genome:
    """The screened zoo loss ``name`` as a study of ``config`` has it (with its constants, label
    smoothing's weights from the data set's class count, the noisy-label losses under a data
    condition); an unknown name is a :class:`UsageError`
    naming ``option`` and the zoo's losses."""
    classes = load_data(config, progress=False).num_classes
    known = zoo(config.nodes, max(2, config.constants), classes, config.conditions().active)
    if name not in known:
        raise UsageError(f"{option} {name!r}: the zoo's losses are {', '.join(known)}")
    return screen(known[name]).genome


def baseline_loss(against: str, config: SearchConfig, storage_url: str | None = None) -> tuple[Genome, str]:
    """(genome, name) of what a tuned loss is tested against: the best of the tune study ``against``
    in the storage (a tuned baseline), else the zoo loss of that name."""
    storage = open_storage(storage_url, create=False)
    names = {
        summary.study_name for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)
    }
    if against not in names:
        return zoo_loss(against, config, "--against"), against
    other = optuna.load_study(study_name=against, storage=storage)
    tuned = other.user_attrs.get(StudyKey.TUNED_LOSS)
    if tuned is None:
        raise UsageError(f"--against {against!r} is no tune study")
    start = named_losses({"baseline": tuned["formula"]}, config.nodes)["baseline"]
    return screen(tuned_genome(start, other.best_trial.params)).genome, f"{tuned['label']} (tuned)"
