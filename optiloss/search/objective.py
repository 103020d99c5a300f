"""The objective of a loss search: decode, screen, train the surrogate, score."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from optiloss.data import ImageSplits
from optiloss.genome import BASELINE, Genome
from optiloss.liveness import worker_record
from optiloss.records import SECONDS_DIGITS, SearchTrialRecord, TrialKey, given_name
from optiloss.scoring import (
    DIVERGED_VALUES,
    LossEvaluator,
    Rejected,
    record_training,
    reject,
    screen_or_reject,
)
from optiloss.search.hooks import TrialTrained
from optiloss.search.recovery import INTERRUPTED
from optiloss.settings import SearchConfig
from optiloss.train import Checkpointing

__all__ = ["DIVERGED_VALUES", "LossSearchObjective", "Rejected"]


def early_rejection_epoch(config: SearchConfig) -> int | None:
    """The epoch after which slow learners are judged, or None when early rejection is off."""
    if config.early_rejection_at <= 0:
        return None
    epoch = max(1, round(config.early_rejection_at * config.epochs))
    return epoch if epoch < config.epochs else None


def on_front(study: optuna.Study, values: Sequence[float]) -> bool:
    """Whether a trial with ``values`` (maximised) would be on the study's Pareto front: no COMPLETE
    trial is at least as good in every objective and different."""
    mine = tuple(values)
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        theirs = tuple(other.values or ())
        if len(theirs) == len(mine) and theirs != mine and all(t >= m for t, m in zip(theirs, mine)):
            return False
    return True


class LossSearchObjective:
    """Callable objective returning ``(accuracy, robustness)`` on the validation split, or
    ``(accuracy,)`` when ``config.objectives`` is accuracy alone (robustness is then a user attr).

    Every trial trains with the same seed (``config.seed``), so two genomes are
    compared on the same initial weights and batches; ``recheck`` varies it.
    ``data`` must already be on ``device``.
    """

    def __init__(
        self,
        config: SearchConfig,
        data: ImageSplits | None = None,
        device: torch.device | None = None,
        progress: bool = False,
        trial_trained: TrialTrained | None = None,
        *,
        evaluator: LossEvaluator | None = None,
    ) -> None:
        """Scores with ``evaluator`` when given (a search builds one and shares it with its noise
        floor), else with a new one on ``data`` (already on ``device``).
        ``trial_trained(trial, genome, history)`` runs after each trained trial (see
        :class:`~optiloss.search.hooks.SearchHooks`), e.g. to attach the dashboard's plots."""
        self.config = config
        if evaluator is None:
            if data is None or device is None:
                raise ValueError("LossSearchObjective needs an evaluator, or data and a device")
            evaluator = LossEvaluator.for_search(config, data, device, progress)
        self.evaluator = evaluator
        self.trial_trained = trial_trained
        self.augmentation = self.evaluator.augmentation(config.augmentation)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        # first, so that a dead worker is seen at once
        trial.set_user_attr(TrialKey.WORKER, worker_record(trial.number))
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            trial.set_user_attr(TrialKey.FAIL_REASON, INTERRUPTED)  # retried when the search resumes
            raise

    def _run(self, trial: optuna.Trial) -> tuple[float, ...]:
        # the sampler draws the genome here, and writes its own bookkeeping (lineage, redraws) on the trial
        trial.relative_params  # noqa: B018 -- also makes an enqueued trial join NSGA-II's generation
        genome = Genome.suggest(trial, self.config.nodes, self.config.constants)
        screened = screen_or_reject(trial, genome, **self.config.screen_options())
        assert screened.fingerprint is not None  # an accepted genome has one
        duplicate = self._trial_with_fingerprint(trial, screened.fingerprint)
        if duplicate is not None:
            reject(trial, f"duplicate of trial {duplicate}")
        genome = screened.genome
        identity = SearchTrialRecord(
            trial.number,
            formula=genome.formula,
            latex=genome.latex,
            fingerprint=screened.fingerprint,
            negated=genome.negated,
        )
        for key, value in identity.identity_attrs().items():
            trial.set_user_attr(key, value)
        return self.train_and_score(trial, genome)

    @staticmethod
    def _trial_with_fingerprint(trial: optuna.Trial, fingerprint: str) -> int | None:
        """Number of an evaluated (or running) trial with the same behaviour, if any."""
        for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if other.number != trial.number and other.user_attrs.get(TrialKey.FINGERPRINT) == fingerprint:
                return other.number
        return None

    def _slow_learner_check(self, trial: optuna.Trial) -> Callable[[dict[str, float]], None] | None:
        """The epoch hook that rejects a slow learner, or None (early rejection off, a zoo loss,
        or no finished cross-entropy trial with a training curve to compare with yet)."""
        epoch = early_rejection_epoch(self.config)
        if epoch is None or given_name(trial.user_attrs) is not None:
            return None
        curves = (
            t.user_attrs.get(TrialKey.TRAIN_ACCURACY_BY_EPOCH, ())
            for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get(TrialKey.ZOO) == BASELINE
        )
        reference = next((curve for curve in curves if len(curve) >= epoch), None)
        if reference is None:
            return None
        threshold = self.config.early_rejection_ratio * reference[epoch - 1]

        def check(row: dict[str, float]) -> None:
            if row["epoch"] == epoch and row["train_accuracy"] < threshold:
                trial.set_user_attr(TrialKey.TRAINING_SECONDS, round(row["seconds"], SECONDS_DIGITS))
                reject(
                    trial,
                    f"slow learner: training accuracy {row['train_accuracy']:.4f} after "
                    f"epoch {epoch} of {self.config.epochs}, below "
                    f"{self.config.early_rejection_ratio} x cross-entropy's "
                    f"{reference[epoch - 1]:.4f}",
                )

        return check

    def train_and_score(self, trial: optuna.Trial, genome: Genome) -> tuple[float, ...]:
        """Train with checkpoints; a retry resumes from its failed predecessor's last epoch.
        A slow learner (see :class:`~optiloss.settings.SearchConfig`) ends as :class:`Rejected`."""
        inherited = self._inherited_checkpoint(trial)
        own = Path(self.config.checkpoint_dir) / trial.study.study_name / str(trial.number) / "checkpoint.pt"
        trial.set_user_attr(TrialKey.CHECKPOINT, str(own))
        checkpointing = Checkpointing(
            save_to=own,
            resume_from=Path(inherited) if inherited else None,
            every_seconds=self.config.checkpoint_interval,
        )
        try:
            result = self.evaluator.evaluate(
                genome,
                self.augmentation,
                self.config.seed,
                description=f"trial {trial.number} epochs",
                checkpointing=checkpointing,
                after_epoch=self._slow_learner_check(trial),
            )
        except Rejected:
            self._remove_checkpoints(own, inherited)
            raise
        self._remove_checkpoints(own, inherited)
        values = DIVERGED_VALUES if result.diverged else (result.accuracy, result.robustness)
        if self.trial_trained is not None and result.history and self._wants_plots(trial, values):
            self.trial_trained(trial, genome, result.history)
        record_training(trial, result, self.evaluator.precision)
        return self._objective_values(*values, trial)

    def _wants_plots(self, trial: optuna.Trial, values: tuple[float, float]) -> bool:
        """Whether the trained trial gets its per-trial plots: every one, or with
        ``artifacts_front_only`` (the default) one that no COMPLETE trial dominates as it finishes
        (drawing them cost about half a second a trial on a CPU, a sixth of a demo trial)."""
        if not self.config.artifacts_front_only:
            return True
        if values == DIVERGED_VALUES:
            return False
        return on_front(trial.study, values if "robustness" in self.config.objectives else values[:1])

    def _inherited_checkpoint(self, trial: optuna.Trial) -> str | None:
        """The checkpoint of the trial this one retries (copied into its user attrs), if it lies in
        the configured ``checkpoint_dir``. A path elsewhere is refused, neither read nor removed:
        whoever can write a trial attribute of a shared study must not choose a file that another
        worker loads or deletes. The trial then trains from its start, saying so on stderr."""
        inherited = trial.user_attrs.get(TrialKey.CHECKPOINT)
        if not inherited:
            return None
        folder = Path(self.config.checkpoint_dir).resolve()
        if Path(inherited).resolve().is_relative_to(folder):
            return str(inherited)
        print(
            f"optiloss: trial {trial.number}: its checkpoint {inherited} lies outside checkpoint_dir "
            f"{folder}: refused, the trial trains from its start",
            file=sys.stderr,
        )
        return None

    def _objective_values(self, accuracy: float, robustness: float, trial: optuna.Trial) -> tuple[float, ...]:
        if "robustness" in self.config.objectives:
            return accuracy, robustness
        trial.set_user_attr(TrialKey.ROBUSTNESS, robustness)
        return (accuracy,)

    @staticmethod
    def _remove_checkpoints(own: Path, inherited: str | None) -> None:
        for path in {own, Path(inherited) if inherited else own}:
            shutil.rmtree(path.parent, ignore_errors=True)
            with contextlib.suppress(OSError):  # the study's folder, once its last trial is done
                path.parent.parent.rmdir()
