"""Turning (loss, augmentation, seed) into scores: what search, recheck, matrix and transfer share.

:class:`LossEvaluator` trains a fresh model with a loss and scores it on one
split and its corrupted copies; :func:`load_data` gives every command the same
data for its settings (:mod:`optiloss.devices` the same device).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import optuna
import torch

from optiloss.augment import TrainingAugmentation, build_augmentation, corrupted_suite
from optiloss.data import ImageSplits, load_dataset
from optiloss.data.conditions import apply_conditions
from optiloss.data.registry import resize_images
from optiloss.data.released import ReleasedCorruptions, released_key
from optiloss.errors import UsageError
from optiloss.genome import Genome, ScreenResult, screen
from optiloss.models import DEFAULT_WIDTH, create_model, surrogate_named
from optiloss.records import TrainingRecord, TrialKey
from optiloss.settings import RunSettings, SearchConfig, TransferConfig
from optiloss.train import (
    Checkpointing,
    LossFunction,
    TrainResult,
    accuracies,
    backend_flags,
    compute_precision,
    seeded,
    stacked_accuracies,
    train,
)

RECHECK_SEED_STRIDE = 7919
"""Retraining seed k (recheck, evaluate) is ``config.seed + 7919 * k`` (k >= 1): never a seed a search
trained with."""
CLEAN = "clean"
"""The uncorrupted split's key among the scored image sets (no corruption has this name)."""
DIVERGED_VALUES = (0.0, 0.0)
"""Finite penalty for a loss whose training diverged (NaN values would make an Optuna trial FAIL)."""


class DataFor(Protocol):
    """Where a function that trains gets the data of the settings it trains with, in place of
    :func:`load_data` (an experiment run's shared data, :class:`optiloss.experiment.context.RunContext`)."""

    def __call__(self, settings: RunSettings, *, merge_validation: bool = False) -> ImageSplits: ...


def load_splits(settings: RunSettings, progress: bool = True) -> ImageSplits:
    """The data set of ``settings``, on the CPU, split train / validation / test, as stored (no condition)."""
    return load_dataset(
        settings.dataset,
        settings.validation_fraction,
        data_root=settings.data_root,
        image_size=settings.image_size,
        subset=settings.subset,
        download=settings.download,
        progress=progress,
    )


def conditioned(data: ImageSplits, settings: RunSettings, *, merge_validation: bool = False) -> ImageSplits:
    """``data`` (as :func:`load_splits` gives it) with the data conditions of ``settings`` (label noise,
    imbalance: :mod:`optiloss.data.conditions`) applied to the training part. ``merge_validation``: the
    validation part joins the training part first (a run that selects nothing), so the conditions apply
    to all of it."""
    if merge_validation:
        data = merge_validation_into_training(data)
    conditions = settings.conditions()
    if not conditions.active:
        return data
    return apply_conditions(data, conditions)[0]


def load_data(settings: RunSettings, progress: bool = True, *, merge_validation: bool = False) -> ImageSplits:
    """The data set of ``settings``, on the CPU, split train / validation / test, with its data
    conditions applied to the training part (:func:`conditioned`)."""
    return conditioned(load_splits(settings, progress), settings, merge_validation=merge_validation)


def loader(progress: bool = True) -> DataFor:
    """:func:`load_data` as a :data:`DataFor`."""

    def data_for(settings: RunSettings, *, merge_validation: bool = False) -> ImageSplits:
        return load_data(settings, progress, merge_validation=merge_validation)

    return data_for


def merge_validation_into_training(data: ImageSplits) -> ImageSplits:
    """The splits with the validation part added to the training part (for runs that select nothing)."""
    return dataclasses.replace(
        data,
        train_images=torch.cat([data.train_images, data.val_images]),
        train_labels=torch.cat([data.train_labels, data.val_labels]),
    )


@dataclass
class Evaluation:
    """One training run scored on a split and its corrupted copies."""

    accuracy: float
    robustness: float
    per_corruption: dict[str, float] = field(default_factory=dict)
    released: dict[str, float] = field(default_factory=dict)
    """Accuracy on the released CIFAR-C files per ``<corruption>_s<severity>`` (empty without them)."""
    diverged: str | None = None
    training_seconds: float = 0.0
    evaluation_seconds: float = 0.0
    final_train_loss: float | None = None
    resumed_from_epoch: int | None = None
    history: list[dict] = field(default_factory=list)

    def record(self, precision: str) -> TrainingRecord:
        """What a trial or transfer run stores about this run (:class:`optiloss.records.TrainingRecord`);
        a diverged run records no scores, curve or final loss."""
        if self.diverged:
            return TrainingRecord(
                self.training_seconds,
                precision,
                resumed_from_epoch=self.resumed_from_epoch,
                diverged=self.diverged,
            )
        return TrainingRecord(
            self.training_seconds,
            precision,
            resumed_from_epoch=self.resumed_from_epoch,
            evaluation_seconds=self.evaluation_seconds,
            final_train_loss=self.final_train_loss,
            train_accuracy_by_epoch=tuple(row["train_accuracy"] for row in self.history),
            robustness_by_corruption=dict(self.per_corruption),
            released_by_corruption=dict(self.released),
        )


class LossEvaluator:
    """Trains a model with any loss and scores it on one split and its corrupted copies.

    The one place that turns (loss, augmentation, seed) into scores, shared by
    the search objective, recheck, the loss x augmentation matrix and the
    transfer stage, so they all measure the same thing. ``data`` must already
    be on ``device``; the corrupted copies of the scored split (``"val"`` for
    the search, ``"test"`` for transfer) are made, or read from the cache, once.
    """

    def __init__(
        self,
        data: ImageSplits,
        device: torch.device,
        settings: RunSettings,
        *,
        model: str = "cnn",
        model_width: int = DEFAULT_WIDTH,
        weights: str | None = None,
        split: str = "val",
        progress: bool = False,
        released: ReleasedCorruptions | None = None,
    ) -> None:
        spec = surrogate_named(model)
        if spec is not None and min(data.image_size) < spec.minimum_image_size:
            raise UsageError(
                f"model {model} needs images of at least {spec.minimum_image_size} px, "
                f"{data.name} has {data.image_size[0]} px: "
                'use model = "cnn" or set image_size'
            )
        self.data = data
        self.device = device
        self.settings = settings
        self.train_settings = settings.train_settings()
        self.precision = compute_precision(self.train_settings, device)
        """What the model computes in on ``device`` (``"bf16"`` or ``"float32"``), recorded with each run."""
        self.model = model
        self.model_width = model_width
        self.weights = weights
        self.progress = progress
        self.flip_tta = spec is not None and spec.flip_tta  # e.g. airbench scores with mirrored views
        self.images, self.labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
        corrupted = corrupted_suite(
            self.images, settings.severities(), settings.seed, settings.corruption_suite, progress
        )
        # the scored sets stacked once, so scoring runs in few large batches; the copies become views
        self._scored_names = [*corrupted, CLEAN]
        self._scored = torch.cat([*corrupted.values(), self.images])
        count = len(self.images)
        self.corrupted = {name: self._scored[i * count : (i + 1) * count] for i, name in enumerate(corrupted)}
        self.released = released
        """The released CIFAR-C files of the scored split, read after each training (None: not used)."""
        self._compiled_model: torch.nn.Module | None = None

    @classmethod
    def for_search(
        cls, config: SearchConfig, data: ImageSplits, device: torch.device, progress: bool = False
    ) -> LossEvaluator:
        """The surrogate of a search config, scored on the validation split."""
        assert config.model_width is not None  # SearchConfig.__post_init__ fills it from the surrogate
        return cls(
            data,
            device,
            config,
            model=config.model,
            model_width=config.model_width,
            split="val",
            progress=progress,
        )

    @classmethod
    def for_transfer(
        cls,
        config: TransferConfig,
        data: ImageSplits,
        device: torch.device,
        progress: bool = False,
        released: ReleasedCorruptions | None = None,
    ) -> LossEvaluator:
        """The transfer model of ``config``, trained on ``data``'s training part, scored on its test split
        (and on the ``released`` CIFAR-C files of it, when given)."""
        return cls(
            data,
            device,
            config,
            model=config.model,
            weights=config.weights,
            split="test",
            progress=progress,
            released=released,
        )

    def augmentation(self, name: str) -> TrainingAugmentation:
        return build_augmentation(
            name, self.data.image_size, self.data.num_classes, self.settings.augment_settings()
        )

    def score(self, model: torch.nn.Module) -> tuple[dict[str, float], float]:
        """(accuracy per corruption, clean accuracy) of a trained ``model`` on the scored split, under
        the training run's backend flags: the stacked sets in few batches, read back from the device once."""
        with backend_flags(self.train_settings, self.device):
            scores = stacked_accuracies(
                model,
                self._scored,
                self.labels,
                self._scored_names,
                mixed_precision=self.train_settings.mixed_precision,
                flip_tta=self.flip_tta,
            )
        clean = scores.pop(CLEAN)
        return scores, clean

    def score_released(self, model: torch.nn.Module) -> dict[str, float]:
        """Accuracy of a trained ``model`` on each block of the released files (``<corruption>_s<k>``),
        one block in memory at a time, resized like the scored split; {} without released files."""
        if self.released is None:
            return {}
        scores: dict[str, float] = {}
        for corruption, severity, images in self.released.blocks():
            images = resize_images(images, self.images.shape[-1]).to(self.device)
            with backend_flags(self.train_settings, self.device):
                scores.update(
                    accuracies(
                        model,
                        {released_key(corruption, severity): images},
                        self.labels,
                        mixed_precision=self.train_settings.mixed_precision,
                        flip_tta=self.flip_tta,
                    )
                )
        return scores

    def _fresh_model(self) -> torch.nn.Module:
        """A model initialised from the current random state. With ``compile = true`` the surrogate on
        the device is built once per evaluator and each run's fresh weights (built on the CPU, as
        without compiling) are copied into it, so the compilation is paid once per process, not once
        per trial."""
        data = self.data
        model = create_model(self.model, data.num_classes, data.channels, self.model_width, self.weights)
        if not (self.train_settings.compile and surrogate_named(self.model) is not None):
            return model.to(self.device)
        if self._compiled_model is None:
            self._compiled_model = model.to(self.device)
        else:
            self._compiled_model.load_state_dict(model.state_dict())
        return self._compiled_model

    def train_model(
        self,
        loss: LossFunction,
        augmentation: TrainingAugmentation,
        seed: int,
        description: str = "epochs",
        checkpointing: Checkpointing | None = None,
        after_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> tuple[torch.nn.Module, TrainResult]:
        """A fresh model (initialised from ``seed``) trained with ``loss``, unscored, and what training
        produced; the arguments as in :meth:`evaluate`."""
        data = self.data
        with seeded(seed, self.device):
            model = self._fresh_model()
            result = train(
                model,
                data.train_images,
                data.train_labels,
                loss,
                augmentation,
                self.train_settings,
                progress=self.progress,
                description=description,
                checkpointing=checkpointing,
                after_epoch=after_epoch,
            )
        return model, result

    def evaluate(
        self,
        loss: LossFunction,
        augmentation: TrainingAugmentation,
        seed: int,
        description: str = "epochs",
        checkpointing: Checkpointing | None = None,
        after_epoch: Callable[[dict[str, float]], None] | None = None,
    ) -> Evaluation:
        """Train a fresh model (initialised from ``seed``) with ``loss`` and score it.

        With ``checkpointing``, training saves every epoch and resumes from an
        existing checkpoint (``Evaluation.resumed_from_epoch``); ``after_epoch`` as
        in :func:`optiloss.train.train` (it may stop training by raising).
        """
        model, result = self.train_model(loss, augmentation, seed, description, checkpointing, after_epoch)
        if result.diverged:
            return Evaluation(
                *DIVERGED_VALUES,
                diverged=result.diverged,
                training_seconds=result.seconds,
                resumed_from_epoch=result.resumed_from_epoch,
                history=result.history,
            )
        started = time.perf_counter()
        per_corruption, clean = self.score(model)
        released = self.score_released(model)
        return Evaluation(
            accuracy=clean,
            robustness=sum(per_corruption.values()) / len(per_corruption),
            per_corruption=per_corruption,
            released=released,
            training_seconds=result.seconds,
            evaluation_seconds=time.perf_counter() - started,
            final_train_loss=result.history[-1]["loss"],
            resumed_from_epoch=result.resumed_from_epoch,
            history=result.history,
        )


class Rejected(optuna.TrialPruned):
    """A genome rejected before or early in training; the trial ends PRUNED with
    ``user_attrs['rejected']``."""


def reject(trial: optuna.Trial, reason: str) -> NoReturn:
    """End ``trial`` as PRUNED with its reason recorded (:attr:`~optiloss.records.TrialKey.REJECTED`)."""
    trial.set_user_attr(TrialKey.REJECTED, reason)
    raise Rejected(reason)


def screen_or_reject(trial: optuna.Trial, genome: Genome, **options: Any) -> ScreenResult:
    """Screen ``genome`` (:func:`~optiloss.genome.screen` with ``options``) for ``trial``: its formula
    recorded, and a genome the screen refuses rejected (:func:`reject`). The steps every trial that
    trains a loss takes first (a search's and a tune study's)."""
    screened = screen(genome, **options)
    trial.set_user_attr(TrialKey.FORMULA, screened.genome.formula)
    if not screened.accepted:
        reject(trial, screened.reason or "rejected by the screen")
    return screened


def record_training(trial: optuna.Trial, evaluation: Evaluation, precision: str) -> None:
    """Write the :class:`~optiloss.records.TrainingRecord` of ``evaluation`` on ``trial``."""
    for key, value in evaluation.record(precision).to_user_attrs().items():
        trial.set_user_attr(key, value)
