"""Transfer studies: the best losses of a search retrained on larger models, against cross-entropy.

Each (augmentation, loss, seed) run is one trial of the Optuna study
``{source}-transfer-{model}-{dataset}`` with user attrs ``run``, ``loss``,
``augmentation``, ``seed``, ``formula`` and the metrics; values are test
accuracy and robustness (the corruption suite on the test split). A restart
skips finished runs and resumes an interrupted one from its last epoch.
"""

from __future__ import annotations

import math
import shutil
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from scipy import stats
from tqdm.auto import tqdm

from optiloss.augment import AUGMENTATIONS
from optiloss.evaluate import LossEvaluator, load_data, merge_validation_into_training, resolve_device
from optiloss.genome import Genome, screen, zoo
from optiloss.settings import TransferConfig
from optiloss.storage import open_storage
from optiloss.studies import fail_dead_trials, load_study, pareto_trials, trial_genome, worker_record
from optiloss.train import Checkpointing, compute_precision

BASELINE = "cross_entropy"
INTERRUPTED = "interrupted"


def load_transfer_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TransferConfig:
    """A :class:`TransferConfig` from a TOML file and CLI overrides (None values ignored)."""
    return TransferConfig.load(path, overrides)


def transfer_study_name(source: str, config: TransferConfig) -> str:
    return f"{source}-transfer-{config.model}-{config.dataset}"


def losses_to_transfer(source: optuna.Study, top_k: int) -> dict[str, tuple[Genome, float | None]]:
    """Label -> (oriented genome, source surrogate accuracy): the top-k of the Pareto set by accuracy,
    then cross-entropy and the other zoo losses; one entry per active structure."""
    nodes = source.user_attrs.get("nodes", 5)
    by_structure: dict[str, tuple[str, Genome, float | None]] = {}
    for trial in pareto_trials(source)[:top_k]:
        genome = trial_genome(source, trial)
        label = trial.user_attrs.get("zoo") or f"trial_{trial.number}"
        by_structure.setdefault(genome.structure_hash, (label, genome, trial.values[0]))
    complete = source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    zoo_accuracy = {t.user_attrs["zoo"]: t.values[0] for t in complete if "zoo" in t.user_attrs}
    for name, genome in zoo(nodes).items():
        oriented = screen(genome).genome
        by_structure.setdefault(oriented.structure_hash, (name, oriented, zoo_accuracy.get(name)))
    ordered = sorted(by_structure.values(), key=lambda item: item[0] != BASELINE)
    return {label: (genome, accuracy) for label, genome, accuracy in ordered}


def run_transfer(source_name: str, config: TransferConfig, storage_url: str | None = None, *,
                 progress: bool = True, log=print) -> optuna.Study:
    """Train every (loss, seed) of ``config`` not yet COMPLETE in the transfer study; returns the study.

    Runs left RUNNING by a dead process of this machine are failed and redone
    (from their last checkpoint); Ctrl-C fails the running one with
    ``fail_reason = "interrupted"`` and raises :class:`KeyboardInterrupt`, so
    running the same command again continues where it stopped.
    """
    storage = open_storage(storage_url, create=False)
    source = load_study(storage, source_name)
    losses = losses_to_transfer(source, config.top_k)
    device = resolve_device(config.device)
    # transfer trains on the whole training part (no model selection happens here) and scores the test part
    data = merge_validation_into_training(load_data(config, progress)).to(device)
    evaluator = LossEvaluator.for_transfer(config, data, device, progress=progress)
    name = transfer_study_name(source_name, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                    directions=["maximize", "maximize"])
        study.set_metric_names(["test_accuracy", "test_robustness"])
    study.set_user_attr("source_study", source_name)
    study.set_user_attr("model", config.model)
    study.set_user_attr("dataset", config.dataset)
    fail_dead_trials(storage, study)
    done = {t.user_attrs["run"] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    runs = [(label, seed) for label in losses for seed in range(config.seeds)
            if f"{config.augmentation}/{label}/seed{seed}" not in done]
    log(f"{name}: {len(losses)} losses x {config.seeds} seeds under {config.augmentation}; "
        f"{len(losses) * config.seeds - len(runs)} done, running {len(runs)}")
    augmentation = evaluator.augmentation(config.augmentation)
    for label, seed in tqdm(runs, desc="transfer runs", unit="run", disable=not progress):
        genome, _ = losses[label]
        run = f"{config.augmentation}/{label}/seed{seed}"
        trial = study.ask()
        trial.set_user_attr("worker", worker_record(trial.number))
        for key, value in (("run", run), ("loss", label), ("augmentation", config.augmentation),
                           ("seed", seed), ("formula", genome.formula)):
            trial.set_user_attr(key, value)
        checkpoint = Path(config.checkpoint_dir) / name / run.replace("/", "-") / "checkpoint.pt"
        checkpointing = Checkpointing(save_to=checkpoint, resume_from=checkpoint)
        try:
            result = evaluator.evaluate(genome, augmentation, config.seed + 1000 * seed,
                                        description=f"{label} seed {seed}", checkpointing=checkpointing)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", INTERRUPTED)  # its checkpoint stays for the resume
            study.tell(trial, state=TrialState.FAIL)
            raise
        shutil.rmtree(checkpoint.parent, ignore_errors=True)
        trial.set_user_attr("training_seconds", round(result.training_seconds, 2))
        if result.resumed_from_epoch:
            trial.set_user_attr("resumed_from_epoch", result.resumed_from_epoch)
        trial.set_user_attr("precision", compute_precision(evaluator.train_settings, device))
        if result.diverged:
            trial.set_user_attr("diverged", result.diverged)
        for corruption, value in result.per_corruption.items():
            trial.set_user_attr(f"robustness_{corruption}", value)
        study.tell(trial, [result.accuracy, result.robustness])
    return study


@dataclass
class TransferTable:
    """Per (loss, augmentation): test accuracies and robustness over seeds, tests against cross-entropy."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    fidelity: dict[str, float] = field(default_factory=dict)
    augmentations: list[str] = field(default_factory=list)


def _p_values(values: list[float], baseline: list[float]) -> tuple[float, float]:
    if len(values) < 2 or len(baseline) < 2 or (np.std(values) == 0 and np.std(baseline) == 0):
        return float("nan"), float("nan")
    welch = stats.ttest_ind(values, baseline, equal_var=False).pvalue
    mann_whitney = stats.mannwhitneyu(values, baseline, alternative="two-sided").pvalue
    return float(welch), float(mann_whitney)


def transfer_table(study: optuna.Study, source: optuna.Study | None = None, top_k: int = 3) -> TransferTable:
    """Statistics of a transfer study: mean +- std, Welch's t and Mann-Whitney U p-values against
    cross-entropy, and the fidelity (Spearman, Kendall) of the source's surrogate accuracy."""
    runs: dict[tuple[str, str], dict[str, list[float]]] = {}
    formulas: dict[str, str] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = (trial.user_attrs["loss"], trial.user_attrs["augmentation"])
        entry = runs.setdefault(key, {"accuracy": [], "robustness": []})
        entry["accuracy"].append(trial.values[0])
        entry["robustness"].append(trial.values[1])
        formulas[trial.user_attrs["loss"]] = trial.user_attrs["formula"]
    table = TransferTable(augmentations=sorted({augmentation for _, augmentation in runs},
                                               key=AUGMENTATIONS.index))
    baseline_first = sorted(runs.items(), key=lambda item: (item[0][0] != BASELINE, item[0]))
    for (label, augmentation), entry in baseline_first:
        baseline = runs.get((BASELINE, augmentation), {"accuracy": [], "robustness": []})
        welch, mann_whitney = _p_values(entry["accuracy"], baseline["accuracy"])
        spread = lambda values: statistics.stdev(values) if len(values) > 1 else 0.0  # noqa: E731
        table.rows.append({
            "loss": label, "augmentation": augmentation, "seeds": len(entry["accuracy"]),
            "test_accuracy": round(statistics.mean(entry["accuracy"]), 4),
            "accuracy_std": round(spread(entry["accuracy"]), 4),
            "robustness": round(statistics.mean(entry["robustness"]), 4),
            "robustness_std": round(spread(entry["robustness"]), 4),
            "p_welch": "" if label == BASELINE or math.isnan(welch) else f"{welch:.3g}",
            "p_mann_whitney": "" if label == BASELINE or math.isnan(mann_whitney) else f"{mann_whitney:.3g}",
            "formula": formulas[label]})
    if source is not None:
        surrogate = {label: accuracy for label, (_, accuracy) in losses_to_transfer(source, top_k).items()}
        pairs = [(surrogate[row["loss"]], row["test_accuracy"]) for row in table.rows
                 if surrogate.get(row["loss"]) is not None]
        if len(pairs) >= 3:
            x, y = zip(*pairs)
            table.fidelity = {"losses": len(pairs), "spearman": float(stats.spearmanr(x, y).statistic),
                              "kendall": float(stats.kendalltau(x, y).statistic)}
    return table
