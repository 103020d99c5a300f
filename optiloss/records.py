"""The stored record: every user attribute optiloss writes on a study or a trial, named once here.

A study is optiloss's public interface: plain Optuna, ``optuna trials`` and
optuna-dashboard read it without optiloss. Its schema lives in this module, as
Optuna's GA samplers name their storage keys once on the class that owns them:

- :class:`TrialKey` and :class:`StudyKey`: every user-attribute key, a constant;
- :class:`TrainingRecord`: what a trained search trial and a transfer run both
  record about their training (seconds, precision, divergence, per-corruption
  accuracy, ...), written by the one :meth:`~TrainingRecord.to_user_attrs`;
- :class:`SearchTrialRecord`: a search trial as its readers see it (which loss,
  its name and :meth:`~SearchTrialRecord.label`, lineage, training);
- :class:`TransferRunRecord`: one (loss, augmentation, seed) run of a transfer study.

Records are read with ``from_trial`` and written with ``to_user_attrs``.
Studies written by earlier versions read unchanged: a key they lack reads as
its field's default (``tests/data/studies-v0.1.db`` is such a study).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial


class TrialKey:
    """The user-attribute keys of a trial (search trials and transfer runs)."""

    # which loss a search trial holds
    ZOO = "zoo"
    """A loss of the zoo enqueued in the first generation: its name."""
    LOSS_NAME = "loss_name"
    """A loss given by hand (``--loss NAME=FORMULA``, ``[losses]``): its name."""
    ALSO_NAMED = "also_named"
    """Names a user gave to the loss this trial already held (a given loss equal to a zoo loss)."""
    FORMULA = "formula"
    LATEX = "latex"
    FINGERPRINT = "fingerprint"
    """The screen's behavioural fingerprint: trials that share one train alike."""
    ORIENTATION = "orientation"
    """``"as written"`` or ``"negated"`` (:data:`NEGATED`): how the screen oriented the genome."""
    REJECTED = "rejected"
    """Why a PRUNED trial's genome was rejected (the screen, a duplicate, a slow learner)."""
    # what the samplers write about how the genome was drawn
    PARENT = "parent"
    MUTATION = "mutation"
    SCREENED_OUT = "screened_out"
    """Genomes the screening sampler redrew before this trial's, by reason."""
    GUIDED_PICK = "guided_pick"
    """How the guided sampler picked the genome (startup, thompson, expected improvement, uniform)
    and what bred it (mutation, crossover, uniform)."""
    PREDICTED = "predicted"
    """The guided sampler's prediction for the trial: ``{objective: {"mean", "sd"}}``."""
    # liveness and recovery
    WORKER = "worker"
    """``{"host", "pid", "trial"}`` of the process running the trial."""
    FAIL_REASON = "fail_reason"
    CHECKPOINT = "checkpoint"
    # training (TrainingRecord)
    TRAINING_SECONDS = "training_seconds"
    EVALUATION_SECONDS = "evaluation_seconds"
    PRECISION = "precision"
    RESUMED_FROM_EPOCH = "resumed_from_epoch"
    DIVERGED = "diverged"
    FINAL_TRAIN_LOSS = "final_train_loss"
    TRAIN_ACCURACY_BY_EPOCH = "train_accuracy_by_epoch"
    ROBUSTNESS = "robustness"
    """Robustness of a single-objective (accuracy-only) study's trial, where it is no objective."""
    ROBUSTNESS_PREFIX = "robustness_"
    """``robustness_<corruption>``: accuracy on each corrupted copy."""
    CIFAR_C = "cifar_c"
    """Mean accuracy on the released CIFAR-10-C / CIFAR-100-C files: 15 corruptions x 5 severities."""
    CIFAR_C_PREFIX = "cifar_c_"
    """``cifar_c_<corruption>_s<severity>``: accuracy on one block of the released files."""
    # a transfer run (TransferRunRecord)
    RUN = "run"
    LOSS = "loss"
    AUGMENTATION = "augmentation"
    SEED = "seed"
    SOURCE_STUDY = "source_study"


class StudyKey:
    """The user-attribute keys of a study."""

    DATASET = "dataset"
    AUGMENTATION = "augmentation"
    NODES = "nodes"
    CONSTANTS = "constants"
    """How many real-valued constants its genomes have (0 for studies made before constants)."""
    MODEL = "model"
    OBJECTIVES = "objectives"
    IMAGE_SIZE = "image_size"
    CONFIG = "config"
    """A search study's whole :class:`~optiloss.settings.SearchConfig` as a table."""
    NOISE_FLOOR = "cross_entropy_seeds"
    """Cross-entropy's runs with extra seeds, ``[{"seed", "accuracy", "robustness"}, ...]``."""
    SOURCE_STUDY = "source_study"
    SELECT = "select"
    AUGMENT_SETTINGS = "augment_settings"
    ALSO_NAMED = "also_named"
    """``{name: trial number}``: names given to losses that finished trials already held."""
    CONDITIONS = "conditions"
    """What the data conditions did to the training part: rates, the measured ``flipped_share`` and the
    training class counts (:class:`optiloss.data.conditions.ConditionRecord`); absent without one."""
    KIND = "kind"
    """What a study that is no search or transfer holds: ``"recheck"`` or ``"matrix"`` (a run ledger)."""
    TUNED_LOSS = "tuned_loss"
    """A tune study's loss: ``{"label", "formula", "space"}`` of the loss whose constants it tunes
    (``space`` :data:`optiloss.tune.SIGN_KEEPING`; absent in a study made before, which searched the
    whole range)."""


NEGATED = "negated"
AS_WRITTEN = "as written"
SECONDS_DIGITS = 3
"""Seconds are stored rounded to milliseconds, by every writer."""
CURVE_DIGITS = 4


@dataclass(frozen=True)
class TrainingRecord:
    """What one training run records: written by the search objective and the transfer loop alike.

    Fields that are None are not written; ``robustness_by_corruption`` becomes one
    ``robustness_<corruption>`` key each.
    """

    training_seconds: float
    precision: str
    evaluation_seconds: float | None = None
    resumed_from_epoch: int | None = None
    diverged: str | None = None
    final_train_loss: float | None = None
    train_accuracy_by_epoch: tuple[float, ...] | None = None
    robustness_by_corruption: Mapping[str, float] = field(default_factory=dict)
    released_by_corruption: Mapping[str, float] = field(default_factory=dict)
    """Accuracy per ``<corruption>_s<severity>`` of the released CIFAR-C files; their mean is
    ``cifar_c``."""

    def to_user_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            TrialKey.TRAINING_SECONDS: round(self.training_seconds, SECONDS_DIGITS),
            TrialKey.PRECISION: self.precision,
        }
        optional = {
            TrialKey.EVALUATION_SECONDS: None
            if self.evaluation_seconds is None
            else round(self.evaluation_seconds, SECONDS_DIGITS),
            TrialKey.RESUMED_FROM_EPOCH: self.resumed_from_epoch or None,
            TrialKey.DIVERGED: self.diverged,
            TrialKey.FINAL_TRAIN_LOSS: self.final_train_loss,
            TrialKey.TRAIN_ACCURACY_BY_EPOCH: None
            if self.train_accuracy_by_epoch is None
            else [round(value, CURVE_DIGITS) for value in self.train_accuracy_by_epoch],
        }
        attrs.update({key: value for key, value in optional.items() if value is not None})
        attrs.update(
            {
                TrialKey.ROBUSTNESS_PREFIX + name: value
                for name, value in self.robustness_by_corruption.items()
            }
        )
        if self.released_by_corruption:
            values = self.released_by_corruption.values()
            attrs[TrialKey.CIFAR_C] = sum(values) / len(values)
            attrs.update(
                {TrialKey.CIFAR_C_PREFIX + key: value for key, value in self.released_by_corruption.items()}
            )
        return attrs

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> TrainingRecord | None:
        """The record of a trial's attrs, or None when it has not finished training."""
        if TrialKey.TRAINING_SECONDS not in attrs:
            return None
        curve = attrs.get(TrialKey.TRAIN_ACCURACY_BY_EPOCH)
        return cls(
            training_seconds=attrs[TrialKey.TRAINING_SECONDS],
            precision=attrs.get(TrialKey.PRECISION, ""),
            evaluation_seconds=attrs.get(TrialKey.EVALUATION_SECONDS),
            resumed_from_epoch=attrs.get(TrialKey.RESUMED_FROM_EPOCH),
            diverged=attrs.get(TrialKey.DIVERGED),
            final_train_loss=attrs.get(TrialKey.FINAL_TRAIN_LOSS),
            train_accuracy_by_epoch=None if curve is None else tuple(curve),
            robustness_by_corruption=robustness_by_corruption(attrs),
            released_by_corruption=released_by_corruption(attrs),
        )


def robustness_by_corruption(attrs: Mapping[str, Any]) -> dict[str, float]:
    """``{corruption: accuracy}`` from a trial's ``robustness_<corruption>`` attrs."""
    prefix = TrialKey.ROBUSTNESS_PREFIX
    return {key[len(prefix) :]: value for key, value in attrs.items() if key.startswith(prefix)}


def released_by_corruption(attrs: Mapping[str, Any]) -> dict[str, float]:
    """``{<corruption>_s<severity>: accuracy}`` from a run's ``cifar_c_...`` attrs."""
    prefix = TrialKey.CIFAR_C_PREFIX
    return {key[len(prefix) :]: value for key, value in attrs.items() if key.startswith(prefix)}


def given_name(attrs: Mapping[str, Any]) -> str | None:
    """A search trial's loss name from its attrs: its zoo name or the name it was given, else None."""
    return attrs.get(TrialKey.ZOO) or attrs.get(TrialKey.LOSS_NAME)


FOUND_LABEL = re.compile(r"trial_\d+")
"""The label of a loss the search found; no loss may be given a name of this form
(:func:`optiloss.genome.named.named_losses`), so a label of this form is always a found loss."""


def loss_label(
    number: int | None,
    name: str | None,
    *,
    pooled_from: str | None = None,
    matrix_augmentation: str | None = None,
) -> str:
    """How every table, ledger, report and the dry run name a search trial's loss.

    A named loss (the zoo's, or one given by hand) is called by its name everywhere. A loss the search
    found is ``trial_<number>``; pooled from several studies (a transfer of several sources)
    ``<study>:trial_<number>`` with ``pooled_from`` its study; in the matrix, which takes losses from
    one study per augmentation, ``<augmentation>#<number>`` with ``matrix_augmentation``."""
    if name:
        return name
    if matrix_augmentation is not None:
        return f"{matrix_augmentation}#{number}"
    return pooled_label(f"trial_{number}", pooled_from)


def pooled_label(label: str, study: str | None) -> str:
    """``label`` (as :func:`loss_label` gave it for one study) in its pooled form: a found loss with
    its ``study``, so the same trial number of two studies stays apart; a name, or no study, as it is."""
    return f"{study}:{label}" if study and FOUND_LABEL.fullmatch(label) else label


@dataclass(frozen=True)
class SearchTrialRecord:
    """A search trial as optiloss reads it back. Build it with :meth:`from_trial`."""

    number: int
    values: tuple[float, ...] | None = None
    zoo: str | None = None
    loss_name: str | None = None
    formula: str = ""
    latex: str = ""
    fingerprint: str | None = None
    negated: bool = False
    rejected: str | None = None
    robustness_attr: float | None = None
    parent: int | None = None
    mutation: str | None = None
    screened_out: Mapping[str, int] = field(default_factory=dict)
    also_named: tuple[str, ...] = ()
    training: TrainingRecord | None = None

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> SearchTrialRecord:
        attrs = trial.user_attrs
        return cls(
            number=trial.number,
            values=None if trial.values is None else tuple(trial.values),
            zoo=attrs.get(TrialKey.ZOO),
            loss_name=attrs.get(TrialKey.LOSS_NAME),
            formula=attrs.get(TrialKey.FORMULA, ""),
            latex=attrs.get(TrialKey.LATEX, ""),
            fingerprint=attrs.get(TrialKey.FINGERPRINT),
            negated=attrs.get(TrialKey.ORIENTATION) == NEGATED,
            rejected=attrs.get(TrialKey.REJECTED),
            robustness_attr=attrs.get(TrialKey.ROBUSTNESS),
            parent=attrs.get(TrialKey.PARENT),
            mutation=attrs.get(TrialKey.MUTATION),
            screened_out=attrs.get(TrialKey.SCREENED_OUT, {}),
            also_named=tuple(attrs.get(TrialKey.ALSO_NAMED, ())),
            training=TrainingRecord.from_user_attrs(attrs),
        )

    @property
    def name(self) -> str | None:
        """The loss's zoo or given name, or None for a loss the search drew."""
        return self.zoo or self.loss_name

    @property
    def shown_name(self) -> str:
        """The name a table shows the loss by beside its trial number: :attr:`name`, empty for a loss
        the search drew."""
        return self.name or ""

    def label(self, *, pooled_from: str | None = None, matrix_augmentation: str | None = None) -> str:
        """How reports name it (:func:`loss_label`): :attr:`name`, else ``trial_<number>`` or its pooled
        or matrix form."""
        return loss_label(
            self.number, self.name, pooled_from=pooled_from, matrix_augmentation=matrix_augmentation
        )

    @property
    def diverged(self) -> str | None:
        return self.training.diverged if self.training else None

    @property
    def robustness(self) -> float | None:
        """Its robustness: the second objective, or the user attr of an accuracy-only study."""
        if self.values is not None and len(self.values) > 1:
            return self.values[1]
        return self.robustness_attr

    def identity_attrs(self) -> dict[str, Any]:
        """The keys that say which loss the trial holds (written once the genome is screened)."""
        attrs = {
            TrialKey.FORMULA: self.formula,
            TrialKey.LATEX: self.latex,
            TrialKey.ORIENTATION: NEGATED if self.negated else AS_WRITTEN,
        }
        if self.fingerprint is not None:
            attrs[TrialKey.FINGERPRINT] = self.fingerprint
        return attrs


@dataclass(frozen=True)
class TransferRunRecord:
    """One run of a transfer study: ``loss`` trained under ``augmentation`` with seed ``seed``."""

    loss: str
    augmentation: str
    seed: int
    formula: str
    source_study: str = ""
    training: TrainingRecord | None = None

    @property
    def run(self) -> str:
        """The run's key, unique in its study: ``<augmentation>/<loss>/seed<seed>``."""
        return run_key(self.augmentation, self.loss, self.seed)

    def label(self) -> str:
        return self.loss

    def to_user_attrs(self) -> dict[str, Any]:
        attrs = {
            TrialKey.RUN: self.run,
            TrialKey.LOSS: self.loss,
            TrialKey.AUGMENTATION: self.augmentation,
            TrialKey.SEED: self.seed,
            TrialKey.FORMULA: self.formula,
            TrialKey.SOURCE_STUDY: self.source_study,
        }
        if self.training is not None:
            attrs.update(self.training.to_user_attrs())
        return attrs

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TransferRunRecord:
        attrs = trial.user_attrs
        return cls(
            loss=attrs[TrialKey.LOSS],
            augmentation=attrs[TrialKey.AUGMENTATION],
            seed=attrs.get(TrialKey.SEED, 0),
            formula=attrs.get(TrialKey.FORMULA, ""),
            source_study=attrs.get(TrialKey.SOURCE_STUDY, ""),
            training=TrainingRecord.from_user_attrs(attrs),
        )


def run_key(augmentation: str, loss: str, seed: int) -> str:
    """The key of a transfer run (:attr:`TransferRunRecord.run`)."""
    return f"{augmentation}/{loss}/seed{seed}"
