"""Creating, continuing and seeding a loss-search study.

A search study is a plain Optuna study: two maximised objectives named
``accuracy`` and ``robustness``, study user attrs ``dataset``,
``augmentation``, ``nodes`` and ``config``, and the genome's genes as
categorical parameters. Nothing in it needs optiloss to be read.
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna
from optuna.storages import BaseStorage

from optiloss.errors import UsageError
from optiloss.genome import zoo
from optiloss.search.sampler import ScreeningSampler
from optiloss.settings import SearchConfig
from optiloss.studies import count_trials

METRIC_NAMES = ("accuracy", "robustness")
IDENTITY_ATTRS = ("dataset", "augmentation", "nodes", "model")
"""Study user attrs that a continuing search must match: a study answers one question."""


def sampler_seed(base_seed: int, trials_in_study: int, worker: int = 0) -> int:
    """Seed for a (re)started sampler; it differs after every trial, so a restart never replays
    generation 0."""
    return int(np.random.SeedSequence([base_seed, trials_in_study, worker]).generate_state(1)[0])


def make_sampler(config: SearchConfig, trials_in_study: int, worker: int = 0) -> optuna.samplers.BaseSampler:
    """NSGA-II, built explicitly on every start (Optuna's default for two objectives is TPE); with
    ``config.screen_in_sampler``, wrapped so that rejected genomes are redrawn, not stored."""
    seed = sampler_seed(config.seed, trials_in_study, worker)
    nsga2 = optuna.samplers.NSGAIISampler(population_size=config.population_size, seed=seed)
    if config.screen_in_sampler:
        return ScreeningSampler(nsga2, config.nodes, seed)
    return nsga2


def open_search_study(config: SearchConfig, storage: BaseStorage, worker: int = 0) -> optuna.Study:
    """Create the study of ``config`` or continue it.

    A new study gets its metric names, user attrs and the zoo of known losses
    enqueued into its first generation. An existing one must have been created
    for the same dataset, augmentation and genome size (else :class:`UsageError`).
    """
    name = config.resolved_study_name
    existing = count_trials(storage, name)
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                directions=["maximize", "maximize"],
                                sampler=make_sampler(config, existing, worker))
    attrs = study.user_attrs
    if "dataset" in attrs:
        stored = {"model": "cnn", **attrs}  # studies from before the model key trained the CNN
        different = [f"{key} {stored.get(key)!r} (this run: {getattr(config, key)!r})"
                     for key in IDENTITY_ATTRS if stored.get(key) != getattr(config, key)]
        if different:
            raise UsageError(f"study {name!r} was created with " + ", ".join(different)
                             + "; continue it with its own settings or choose another --study-name")
        return study
    with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(METRIC_NAMES))
    study.set_user_attr("dataset", config.dataset)
    study.set_user_attr("augmentation", config.augmentation)
    study.set_user_attr("nodes", config.nodes)
    study.set_user_attr("model", config.model)
    study.set_user_attr("config", config.as_dict())
    for loss_name, genome in zoo(config.nodes).items():
        study.enqueue_trial(genome.to_params(), user_attrs={"zoo": loss_name}, skip_if_exists=True)
    return study
