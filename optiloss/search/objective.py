"""The objective of a loss search: decode, screen, train the surrogate, score."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.artifacts._protocol import ArtifactStore
from optuna.trial import TrialState

from optiloss.augment import AugmentSettings, TrainingAugmentation, build_augmentation, corrupted_copies
from optiloss.data import ImageSplits
from optiloss.genome import Genome, screen
from optiloss.models import create_model
from optiloss.report.dashboard import artifact_store, upload_trial_artifacts
from optiloss.search.config import SearchConfig
from optiloss.search.recovery import INTERRUPTED, worker_record
from optiloss.train import Checkpointing, LossFunction, TrainSettings, accuracy, precision, seeded, train

DIVERGED_VALUES = (0.0, 0.0)
"""Finite penalty for a loss whose training diverged (NaN values would make the trial FAIL)."""


@dataclass
class Evaluation:
    """One surrogate training run scored on the validation split and its corrupted copies."""

    accuracy: float
    robustness: float
    per_corruption: dict[str, float] = field(default_factory=dict)
    diverged: str | None = None
    training_seconds: float = 0.0
    evaluation_seconds: float = 0.0
    final_train_loss: float | None = None
    resumed_from_epoch: int | None = None
    history: list[dict] = field(default_factory=list)


class LossEvaluator:
    """Trains a model with any loss and scores it on one split and its corrupted copies.

    The one place that turns (loss, augmentation, seed) into scores, shared by
    the search objective, recheck, the loss x augmentation matrix and the
    transfer stage, so they all measure the same thing. ``data`` must already
    be on ``device``; the corrupted copies of the scored split (``"val"`` for
    the search, ``"test"`` for transfer) are made, or read from the cache, once.
    """

    def __init__(self, data: ImageSplits, device: torch.device, settings: TrainSettings, *,
                 model: str = "surrogate", model_width: int = 32, weights: str | None = None,
                 augment: AugmentSettings = AugmentSettings(), corruption_severity: int = 3,
                 corruption_seed: int = 0, split: str = "val", progress: bool = False) -> None:
        self.data = data
        self.device = device
        self.settings = settings
        self.model = model
        self.model_width = model_width
        self.weights = weights
        self.augment = augment
        self.progress = progress
        self.images, self.labels = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
        self.corrupted = corrupted_copies(self.images, corruption_severity, corruption_seed)

    @classmethod
    def for_search(cls, config: SearchConfig, data: ImageSplits, device: torch.device,
                   progress: bool = False) -> "LossEvaluator":
        """The surrogate of a search config, scored on the validation split."""
        settings = TrainSettings(epochs=config.epochs, batch_size=config.batch_size,
                                 learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                                 fast=config.mixed_precision, compile=config.compile,
                                 deterministic=config.deterministic)
        return cls(data, device, settings, model="surrogate", model_width=config.model_width,
                   augment=config.augment_settings(), corruption_severity=config.corruption_severity,
                   corruption_seed=config.seed, split="val", progress=progress)

    def augmentation(self, name: str) -> TrainingAugmentation:
        return build_augmentation(name, self.data.image_size, self.data.num_classes, self.augment)

    def evaluate(self, loss: LossFunction, augmentation: TrainingAugmentation, seed: int,
                 description: str = "epochs", checkpointing: Checkpointing | None = None) -> Evaluation:
        """Train a fresh model (initialised from ``seed``) with ``loss`` and score it.

        With ``checkpointing``, training saves every epoch and resumes from an
        existing checkpoint (``Evaluation.resumed_from_epoch``).
        """
        data = self.data
        with seeded(seed, self.device):
            model = create_model(self.model, data.num_classes, data.channels, self.model_width,
                                 self.weights).to(self.device)
            result = train(model, data.train_images, data.train_labels, loss, augmentation, self.settings,
                           progress=self.progress, description=description, checkpointing=checkpointing)
        if result.diverged:
            return Evaluation(*DIVERGED_VALUES, diverged=result.diverged, training_seconds=result.seconds,
                              resumed_from_epoch=result.resumed_from_epoch, history=result.history)
        started = time.perf_counter()
        per_corruption = {name: accuracy(model, images, self.labels, fast=self.settings.fast)
                          for name, images in self.corrupted.items()}
        return Evaluation(accuracy=accuracy(model, self.images, self.labels, fast=self.settings.fast),
                          robustness=sum(per_corruption.values()) / len(per_corruption),
                          per_corruption=per_corruption, training_seconds=result.seconds,
                          evaluation_seconds=time.perf_counter() - started,
                          final_train_loss=result.history[-1]["loss"],
                          resumed_from_epoch=result.resumed_from_epoch, history=result.history)


class Rejected(optuna.TrialPruned):
    """A genome rejected before training; the trial ends PRUNED with ``user_attrs['rejected']``."""


class LossSearchObjective:
    """Callable objective returning ``(accuracy, robustness)`` on the validation split.

    Every trial trains with the same seed (``config.seed``), so two genomes are
    compared on the same initial weights and batches; ``recheck`` varies it.
    ``data`` must already be on ``device``.
    """

    def __init__(self, config: SearchConfig, data: ImageSplits, device: torch.device,
                 progress: bool = False, artifacts: ArtifactStore | None = None) -> None:
        """``artifacts``: where each trained trial's plots go (default: ``config.artifact_dir``
        when ``config.artifacts`` is on); any Optuna artifact store works."""
        self.config = config
        self.evaluator = LossEvaluator.for_search(config, data, device, progress)
        if artifacts is None and config.artifacts:
            artifacts = artifact_store(config.artifact_dir)
        self.artifacts = artifacts
        self.augmentation = self.evaluator.augmentation(config.augmentation)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        trial.set_user_attr("worker", worker_record(trial.number))  # first, so a dead worker is seen at once
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", INTERRUPTED)  # retried when the search resumes
            raise

    def _run(self, trial: optuna.Trial) -> tuple[float, float]:
        trial.relative_params  # noqa: B018 -- makes an enqueued trial join NSGA-II's generation
        genome = Genome.suggest(trial, self.config.nodes)
        screened = screen(genome)
        trial.set_user_attr("formula", screened.genome.formula)
        if not screened.accepted:
            self._reject(trial, screened.reason)
        duplicate = self._trial_with_fingerprint(trial, screened.fingerprint)
        if duplicate is not None:
            self._reject(trial, f"duplicate of trial {duplicate}")
        genome = screened.genome
        trial.set_user_attr("fingerprint", screened.fingerprint)
        trial.set_user_attr("latex", genome.latex)
        trial.set_user_attr("orientation", "negated" if genome.negated else "as written")
        return self.train_and_score(trial, genome)

    @staticmethod
    def _reject(trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("rejected", reason)
        raise Rejected(reason)

    @staticmethod
    def _trial_with_fingerprint(trial: optuna.Trial, fingerprint: str) -> int | None:
        """Number of an evaluated (or running) trial with the same behaviour, if any."""
        for other in trial.study.get_trials(deepcopy=False,
                                            states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if other.number != trial.number and other.user_attrs.get("fingerprint") == fingerprint:
                return other.number
        return None

    def train_and_score(self, trial: optuna.Trial, genome: Genome) -> tuple[float, float]:
        """Train with checkpoints; a retry resumes from its failed predecessor's last epoch."""
        inherited = trial.user_attrs.get("checkpoint")  # copied from the trial this one retries
        own = Path(self.config.checkpoint_dir) / trial.study.study_name / str(trial.number) / "checkpoint.pt"
        trial.set_user_attr("checkpoint", str(own))
        checkpointing = Checkpointing(save_to=own, resume_from=Path(inherited) if inherited else None)
        result = self.evaluator.evaluate(genome, self.augmentation, self.config.seed,
                                         description=f"trial {trial.number} epochs", checkpointing=checkpointing)
        for path in {own, Path(inherited) if inherited else own}:
            shutil.rmtree(path.parent, ignore_errors=True)
            with contextlib.suppress(OSError):  # the study's folder, once its last trial is done
                path.parent.parent.rmdir()
        if result.resumed_from_epoch:
            trial.set_user_attr("resumed_from_epoch", result.resumed_from_epoch)
        if self.artifacts is not None and result.history:
            upload_trial_artifacts(trial, genome, result.history, self.artifacts)
        trial.set_user_attr("training_seconds", round(result.training_seconds, 3))
        trial.set_user_attr("precision", precision(self.evaluator.settings, self.evaluator.device))
        if result.diverged:
            trial.set_user_attr("diverged", result.diverged)
            return DIVERGED_VALUES
        trial.set_user_attr("final_train_loss", result.final_train_loss)
        for name, value in result.per_corruption.items():
            trial.set_user_attr(f"robustness_{name}", value)
        trial.set_user_attr("evaluation_seconds", round(result.evaluation_seconds, 3))
        return result.accuracy, result.robustness
