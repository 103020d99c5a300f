"""Creating, continuing and seeding a loss-search study.

A search study is a plain Optuna study: maximised objectives named
``accuracy`` and ``robustness`` (or ``accuracy`` alone), study user attrs
``dataset``, ``augmentation``, ``nodes``, ``model``, ``objectives`` and
``config``, and the genome's genes as categorical parameters. Nothing in it
needs optiloss to be read.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from optiloss.data import resolved_image_size
from optiloss.errors import UsageError
from optiloss.genome import BASELINE, Genome, zoo
from optiloss.genome.named import named_losses
from optiloss.records import SearchTrialRecord, StudyKey, TrialKey
from optiloss.search.evolution import RegularizedEvolutionSampler
from optiloss.search.guided import GuidedSampler
from optiloss.search.sampler import ScreeningSampler, given_genes, record_on_trial
from optiloss.settings import SearchConfig, training_differences
from optiloss.studies import count_trials

METRIC_NAMES = ("accuracy", "robustness")
IDENTITY_ATTRS = (
    StudyKey.DATASET,
    StudyKey.AUGMENTATION,
    StudyKey.NODES,
    StudyKey.CONSTANTS,
    StudyKey.MODEL,
    StudyKey.OBJECTIVES,
)
"""Study user attrs that a continuing search must match: a study answers one question."""


def sampler_seed(base_seed: int, trials_in_study: int, worker: int = 0) -> int:
    """Seed for a (re)started sampler; it differs after every trial, so a restart never replays
    generation 0."""
    return int(np.random.SeedSequence([base_seed, trials_in_study, worker]).generate_state(1)[0])


def make_sampler(config: SearchConfig, trials_in_study: int, worker: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler of ``config.sampler``, built explicitly on every start (Optuna's default for two
    objectives is TPE): ``nsga2``, ``evolution`` (regularized evolution), ``random`` or ``tpe``; with
    ``config.screen_in_sampler``, wrapped so that rejected genomes are redrawn, not stored."""
    seed = sampler_seed(config.seed, trials_in_study, worker)
    sampler: optuna.samplers.BaseSampler
    if config.sampler == "guided":  # screens its own candidates
        return GuidedSampler(
            config.nodes, seed, constants=config.constants, screen_options=config.screen_options()
        )
    if config.sampler == "evolution":
        assert config.tournament_size is not None  # SearchConfig.__post_init__ fills it
        sampler = RegularizedEvolutionSampler(
            config.nodes,
            config.population_size,
            config.tournament_size,
            seed=seed,
            constants=config.constants,
        )
    elif config.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    elif config.sampler == "tpe":
        # as Optuna's AutoSampler sets it for a multi-objective study with categorical parameters:
        # without multivariate, a two-objective TPE draws each gene on its own; the constant liar
        # keeps workers from proposing what a running trial already tries
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    else:
        sampler = optuna.samplers.NSGAIISampler(population_size=config.population_size, seed=seed)
    if config.screen_in_sampler:
        return ScreeningSampler(
            sampler, config.nodes, seed, screen_options=config.screen_options(), constants=config.constants
        )
    return sampler


KEPT_SETTINGS: dict[str, Any] = {"screen_in_sampler": False}
"""Settings a continued study keeps as it was made unless the file or an option sets them, with the
value of a study whose stored config lacks the key (made before the setting existed)."""


def settle_config(config: SearchConfig, study_attrs: Mapping[str, Any]) -> SearchConfig:
    """The config a study is searched with, given the study's user attrs: a continued study keeps its
    number of constants (0 for a study made before constants) and whether it screens in the sampler
    (false for a study made before that became the default, :data:`KEPT_SETTINGS`) unless the
    config's file or options set them. A new study takes ``config`` as it is."""
    if StudyKey.DATASET not in study_attrs:
        return config
    given = config.given_keys()
    stored_config = study_attrs.get(StudyKey.CONFIG) or {}
    kept = {
        key: stored_config.get(key, made_before)
        for key, made_before in KEPT_SETTINGS.items()
        if key not in given and stored_config.get(key, made_before) != getattr(config, key)
    }
    if "constants" not in given and study_attrs.get(StudyKey.CONSTANTS, 0) != config.constants:
        kept["constants"] = study_attrs.get(StudyKey.CONSTANTS, 0)
    return config.replace(**kept) if kept else config


def stored_study_attrs(storage: BaseStorage, name: str) -> dict[str, Any]:
    """The user attrs of the study ``name`` in ``storage``, empty if there is none yet."""
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    except KeyError:
        return {}


def search_study_attrs(config: SearchConfig) -> dict[str, Any]:
    """The study user attrs a new search study records: what question it answers, and its whole config."""
    return {
        StudyKey.DATASET: config.dataset,
        StudyKey.AUGMENTATION: config.augmentation,
        StudyKey.NODES: config.nodes,
        StudyKey.CONSTANTS: config.constants,
        StudyKey.MODEL: config.model,
        StudyKey.OBJECTIVES: list(config.objectives),
        StudyKey.IMAGE_SIZE: resolved_image_size(config.dataset, config.image_size),
        StudyKey.CONFIG: config.as_dict(),
    }


def open_search_study(
    config: SearchConfig,
    storage: BaseStorage,
    worker: int = 0,
    *,
    num_classes: int,
    log: Callable[[str], None] | None = None,
) -> optuna.Study:
    """Create the study of ``config`` or continue it: :func:`settle_config` against what the storage
    holds, then :func:`open_settled_study`."""
    settled = settle_config(config, stored_study_attrs(storage, config.resolved_study_name))
    return open_settled_study(settled, storage, worker, num_classes=num_classes, log=log)


def open_settled_study(
    config: SearchConfig,
    storage: BaseStorage,
    worker: int = 0,
    *,
    num_classes: int,
    log: Callable[[str], None] | None = None,
) -> optuna.Study:
    """Create the study of ``config``, already settled (:func:`settle_config`), or continue it.

    A new study gets its metric names, user attrs and the zoo of known losses
    enqueued into its first generation. An existing one must have been created
    for the same dataset, augmentation, genome size, surrogate and objectives
    (else :class:`UsageError`). The losses of ``config.losses`` are enqueued
    into either, once: a loss the study already holds (the zoo's, or a trial's) is not queued again;
    ``log`` (default print) says so, and the user's name is recorded with it
    (:attr:`~optiloss.records.TrialKey.ALSO_NAMED`). ``num_classes`` is the
    data set's class count, which the zoo's label smoothing needs (:func:`optiloss.genome.zoo`).
    """
    name = config.resolved_study_name
    existing = count_trials(storage, name)
    # a bad formula stops before anything is written
    given = named_losses(config.losses, config.nodes, config.constants)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        directions=["maximize"] * len(config.objectives),
        sampler=make_sampler(config, existing, worker),
    )
    attrs = study.user_attrs
    if StudyKey.DATASET in attrs:
        # studies from before the model and objectives keys trained the CNN on two objectives
        # ... and had no constants
        stored = {
            StudyKey.MODEL: "cnn",
            StudyKey.OBJECTIVES: list(METRIC_NAMES),
            StudyKey.CONSTANTS: 0,
            **attrs,
        }
        wanted = {key: getattr(config, key) for key in IDENTITY_ATTRS}  # the keys are config fields
        wanted[StudyKey.OBJECTIVES] = list(config.objectives)
        different = [
            f"{key} {stored.get(key)!r} (this run: {wanted[key]!r})"
            for key in IDENTITY_ATTRS
            if stored.get(key) != wanted[key]
            # a continued study keeps its own constants unless the file or an option sets them
            and not (key == StudyKey.CONSTANTS and key not in config.given_keys())
        ]
        different += _training_differences(config, attrs.get(StudyKey.CONFIG) or {})
        if different:
            raise UsageError(
                f"study {name!r} was created with "
                + ", ".join(different)
                + "; its trials would not be comparable: continue it with its own settings or choose "
                + f"another study name (--study-name {_free_name(storage, name)})"
            )
    else:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(config.objectives))
        for key, value in search_study_attrs(config).items():
            study.set_user_attr(key, value)
        _enqueue_first_generation(study, config, given, num_classes)
    held = _losses_held(study, config.nodes)
    for loss_name, genome in given.items():
        holder = held.get(genome.structure)
        if holder is None:
            study.enqueue_trial(genome.to_params(), user_attrs={TrialKey.LOSS_NAME: loss_name})
            continue
        record = SearchTrialRecord.from_trial(holder)
        if loss_name in (record.name, *record.also_named):
            continue  # given again on a resume: nothing new
        what = f"the zoo's {record.zoo}" if record.zoo else f"trial {holder.number}'s loss"
        (log or print)(f"{loss_name} is {what}; trained once, as {record.label()}")
        _name_also(study, holder, loss_name)
    return study


def _training_differences(config: SearchConfig, stored: Mapping[str, Any]) -> list[str]:
    """``key stored (this run: value)`` for each training key (:data:`~optiloss.settings.TRAINING_KEYS`)
    in which ``config`` differs from the study's stored config."""
    return [
        f"{key} {before!r} (this run: {now!r})" for key, before, now in training_differences(stored, config)
    ]


def _free_name(storage: BaseStorage, name: str) -> str:
    """``{name}-2``, ``{name}-3`` …: the first that names no study in ``storage``."""
    taken = {study.study_name for study in storage.get_all_studies()}
    return next(f"{name}-{k}" for k in range(2, len(taken) + 3) if f"{name}-{k}" not in taken)


def _enqueue_first_generation(
    study: optuna.Study, config: SearchConfig, given: Mapping[str, Genome], num_classes: int
) -> None:
    """Queue a new study's known losses: cross-entropy (every comparison's reference, and the loss
    a disguised copy is a duplicate of), then the losses the user gave, so that the rest of the zoo
    cannot take the budget before them, then the rest of the zoo. A given loss that is a zoo loss
    is queued as the zoo's (the caller records the user's name for it)."""
    known = zoo(config.nodes, config.constants, num_classes, config.conditions().active)
    first = {name: genome for name, genome in known.items() if name == BASELINE}
    for loss_name, genome in first.items():
        study.enqueue_trial(genome.to_params(), user_attrs={TrialKey.ZOO: loss_name})
    zoo_structures = {genome.structure for genome in known.values()}
    queued: set[str] = set()
    for loss_name, genome in given.items():
        if genome.structure not in zoo_structures and genome.structure not in queued:
            study.enqueue_trial(genome.to_params(), user_attrs={TrialKey.LOSS_NAME: loss_name})
            queued.add(genome.structure)
    for loss_name, genome in known.items():
        if loss_name not in first:
            study.enqueue_trial(genome.to_params(), user_attrs={TrialKey.ZOO: loss_name}, skip_if_exists=True)


def _losses_held(study: optuna.Study, nodes: int) -> dict[str, FrozenTrial]:
    """The study's trials by the structure of the loss they hold (enqueued ones too), first first."""
    held: dict[str, FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False):
        params = given_genes(trial)
        try:
            structure = Genome.from_params(params, nodes).structure
        except (ValueError, KeyError):
            continue
        held.setdefault(structure, trial)
    return held


_STATE_PREFERENCE = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.PRUNED)
"""Which of a loss's trials (the first, its retries) speaks for it: finished first, failed last."""


def given_loss_lines(study: optuna.Study, config: SearchConfig) -> list[str]:
    """One line per loss of ``config.losses``: trained as trial N, the zoo's loss or a found one,
    waiting (and the ``--n-trials`` that trains it), rejected or failed."""
    if not config.losses:
        return []
    given = named_losses(config.losses, config.nodes, config.constants)
    trials = study.get_trials(deepcopy=False)
    by_structure: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        params = given_genes(trial)
        try:
            by_structure.setdefault(Genome.from_params(params, config.nodes).structure, []).append(trial)
        except (ValueError, KeyError):
            continue
    complete = sum(trial.state == TrialState.COMPLETE for trial in trials)
    waiting = [trial.number for trial in trials if trial.state == TrialState.WAITING]
    lines = []
    for loss_name, genome in given.items():
        holders = by_structure.get(genome.structure, [])
        if not holders:
            lines.append(f"given loss {loss_name}: not in study {study.study_name}")
            continue
        trial = min(
            holders,
            key=lambda t: (_STATE_PREFERENCE.index(t.state) if t.state in _STATE_PREFERENCE else 9, t.number),
        )
        record = SearchTrialRecord.from_trial(trial)
        who = (
            ""
            if record.name == loss_name
            else (f" (the zoo's {record.zoo})" if record.zoo else f" ({record.label()}'s loss)")
        )
        if trial.state == TrialState.COMPLETE:
            values = ", ".join(f"{name} {value:.4f}" for name, value in zip(config.objectives, trial.values))
            lines.append(f"given loss {loss_name}: trained as trial {trial.number}{who}, {values}")
        elif trial.state == TrialState.WAITING:
            ahead = sum(number <= trial.number for number in waiting)
            why = (
                "the study met its budget first"
                if complete >= config.n_trials
                else "the search stopped first"
            )
            lines.append(
                f"given loss {loss_name}: waiting as trial {trial.number}{who}, not trained: {why}; "
                f"run the search again with --n-trials {complete + ahead} to train it"
            )
        elif trial.state == TrialState.RUNNING:
            lines.append(f"given loss {loss_name}: training as trial {trial.number}{who}")
        elif trial.state == TrialState.PRUNED:
            reason = trial.user_attrs.get(TrialKey.REJECTED, "rejected")
            lines.append(f"given loss {loss_name}: rejected as trial {trial.number}{who}: {reason}")
        else:
            reason = trial.user_attrs.get(TrialKey.FAIL_REASON, "failed")
            lines.append(f"given loss {loss_name}: failed as trial {trial.number}{who} ({reason})")
    return lines


def _name_also(study: optuna.Study, trial: FrozenTrial, name: str) -> None:
    """Record a user's name for a loss a trial already holds: on the trial while it is not finished,
    else in the study's map (finished trials cannot change)."""
    names = [*SearchTrialRecord.from_trial(trial).also_named, name]
    if not trial.state.is_finished():
        record_on_trial(study, trial, TrialKey.ALSO_NAMED, names)
        return
    mapping = dict(study.user_attrs.get(StudyKey.ALSO_NAMED) or {})
    mapping[name] = trial.number
    study.set_user_attr(StudyKey.ALSO_NAMED, mapping)
