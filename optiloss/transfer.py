"""Transfer studies: the best losses of a search retrained on larger models, against cross-entropy.

Each (augmentation, loss, seed) run is one trial of the Optuna study
``{source}-transfer-{model}-{dataset}`` with user attrs ``run``, ``loss``,
``augmentation``, ``seed``, ``formula`` and the metrics; values are test
accuracy and robustness (the corruption suite on the test split). A restart
skips finished runs and resumes an interrupted one from its last epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from tqdm.auto import tqdm

from optiloss.augment import AUGMENTATIONS, AugmentSettings
from optiloss.data import load_dataset
from optiloss.errors import OptilossError, UsageError
from optiloss.genome import Genome, screen, zoo
from optiloss.report.tables import load_study, pareto_rows, trial_genome
from optiloss.search.config import read_toml
from optiloss.search.objective import LossEvaluator
from optiloss.search.recovery import process_alive, worker_record
from optiloss.search.run import resolve_device
from optiloss.search.storage import open_storage
from optiloss.train import Checkpointing, TrainSettings, precision

BASELINE = "cross_entropy"


@dataclass(frozen=True)
class TransferConfig:
    """Settings of a transfer run; ``studies/transfer-*.toml`` hold the paper's."""

    model: str = "wrn-28-10"
    dataset: str = "cifar10"
    augmentation: str = "base"
    top_k: int = 3
    seeds: int = 3
    epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 5e-4
    image_size: int | None = None
    subset: int | None = None
    data_root: str | None = None
    validation_fraction: float = 0.1  # only splits a subset stratified; transfer trains on train + val
    weights: str | None = None
    corruption_severity: int = 3
    seed: int = 0
    device: str = "auto"
    checkpoint_dir: str = "storage/checkpoints"
    mixed_precision: bool = True  # as in the search config: bf16 and channels-last where they pay


def load_transfer_config(path: str | Path | None, overrides: dict[str, Any]) -> TransferConfig:
    """A :class:`TransferConfig` from a TOML file and CLI overrides (None values ignored)."""
    values = read_toml(path)
    allowed = {f.name: f for f in dataclasses.fields(TransferConfig)}
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")
    values.update({key: value for key, value in overrides.items() if value is not None})
    for key in ("top_k", "seeds", "epochs", "batch_size"):
        if not isinstance(values.get(key, 1), int) or values.get(key, 1) < 1:
            raise UsageError(f"{path or 'options'}: {key} must be a positive integer, got {values[key]!r}")
    if not isinstance(values.get("mixed_precision", True), bool):
        raise UsageError(f"{path or 'options'}: mixed_precision must be true or false, "
                         f"got {values['mixed_precision']!r}")
    if values.get("augmentation", "base") not in AUGMENTATIONS:
        raise UsageError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {values['augmentation']!r}")
    return TransferConfig(**values)


def transfer_study_name(source: str, config: TransferConfig) -> str:
    return f"{source}-transfer-{config.model}-{config.dataset}"


def losses_to_transfer(source: optuna.Study, top_k: int) -> dict[str, tuple[Genome, float | None]]:
    """Label -> (oriented genome, source surrogate accuracy): the top-k of the Pareto set by accuracy,
    then cross-entropy and the other zoo losses; one entry per active structure."""
    nodes = source.user_attrs.get("nodes", 5)
    by_structure: dict[str, tuple[str, Genome, float | None]] = {}
    completed = {t.number: t for t in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    for row in pareto_rows(source)[:top_k]:
        trial = completed[row["trial"]]
        genome = trial_genome(source, trial)
        label = trial.user_attrs.get("zoo") or f"trial_{trial.number}"
        by_structure.setdefault(genome.structure_hash, (label, genome, trial.values[0]))
    zoo_accuracy = {t.user_attrs["zoo"]: t.values[0] for t in completed.values() if "zoo" in t.user_attrs}
    for name, genome in zoo(nodes).items():
        oriented = screen(genome).genome
        by_structure.setdefault(oriented.structure_hash, (name, oriented, zoo_accuracy.get(name)))
    ordered = sorted(by_structure.values(), key=lambda item: item[0] != BASELINE)
    return {label: (genome, accuracy) for label, genome, accuracy in ordered}


def _fail_dead_runs(study: optuna.Study) -> None:
    """Runs left RUNNING by a process that died (on this machine) end FAIL; their run is redone."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        record = trial.user_attrs.get("worker", {})
        if not record or not process_alive(int(record.get("pid", -1))):
            study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "transfer process died")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def run_transfer(source_name: str, config: TransferConfig, storage_url: str | None = None, *,
                 progress: bool = True, log=print) -> optuna.Study:
    """Train every (loss, seed) of ``config`` not yet COMPLETE in the transfer study; returns the study."""
    storage = open_storage(storage_url, create=False)
    source = load_study(storage, source_name)
    losses = losses_to_transfer(source, config.top_k)
    device = resolve_device(config.device)
    data = load_dataset(config.dataset, config.validation_fraction, data_root=config.data_root,
                        image_size=config.image_size, subset=config.subset, progress=progress)
    # transfer trains on the whole training part (no model selection happens here) and scores the test part
    data = dataclasses.replace(data, train_images=torch.cat([data.train_images, data.val_images]),
                               train_labels=torch.cat([data.train_labels, data.val_labels])).to(device)
    settings = TrainSettings(epochs=config.epochs, batch_size=config.batch_size,
                             learning_rate=config.learning_rate, weight_decay=config.weight_decay,
                             fast=config.mixed_precision)
    evaluator = LossEvaluator(data, device, settings, model=config.model, weights=config.weights,
                              augment=AugmentSettings(), corruption_severity=config.corruption_severity,
                              corruption_seed=config.seed, split="test", progress=progress)
    name = transfer_study_name(source_name, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                                    directions=["maximize", "maximize"])
        study.set_metric_names(["test_accuracy", "test_robustness"])
    study.set_user_attr("source_study", source_name)
    study.set_user_attr("model", config.model)
    study.set_user_attr("dataset", config.dataset)
    _fail_dead_runs(study)
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
        result = evaluator.evaluate(genome, augmentation, config.seed + 1000 * seed,
                                    description=f"{label} seed {seed}",
                                    checkpointing=Checkpointing(save_to=checkpoint, resume_from=checkpoint))
        shutil.rmtree(checkpoint.parent, ignore_errors=True)
        trial.set_user_attr("training_seconds", round(result.training_seconds, 2))
        trial.set_user_attr("precision", precision(settings, device))
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
    from scipy import stats

    if len(values) < 2 or len(baseline) < 2 or (np.std(values) == 0 and np.std(baseline) == 0):
        return float("nan"), float("nan")
    welch = stats.ttest_ind(values, baseline, equal_var=False).pvalue
    mann_whitney = stats.mannwhitneyu(values, baseline, alternative="two-sided").pvalue
    return float(welch), float(mann_whitney)


def transfer_table(study: optuna.Study, source: optuna.Study | None = None, top_k: int = 3) -> TransferTable:
    """Statistics of a transfer study: mean +- std, Welch's t and Mann-Whitney U p-values against
    cross-entropy, and the fidelity (Spearman, Kendall) of the source's surrogate accuracy."""
    from scipy import stats

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
    for (label, augmentation), entry in sorted(runs.items(), key=lambda item: (item[0][0] != BASELINE, item[0])):
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


def paper_table(table: TransferTable) -> list[dict[str, str]]:
    """Loss x augmentation, each cell ``mean +- std (p=…)``: the shape of the paper's tables."""
    cells: dict[str, dict[str, str]] = {}
    for row in table.rows:
        p = f" (p={row['p_welch']})" if row["p_welch"] else ""
        cells.setdefault(row["loss"], {"loss": row["loss"]})[row["augmentation"]] = (
            f"{row['test_accuracy']:.4f} +- {row['accuracy_std']:.4f}{p}")
    return [{"loss": loss, **{a: cells[loss].get(a, "") for a in table.augmentations}} for loss in cells]


def save_transfer_report(study: optuna.Study, table: TransferTable, folder: str | Path) -> list[Path]:
    """Markdown and CSV of the table, and a strip plot PNG of test accuracy per loss and seed."""
    from optiloss.report import format_rows

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = study.study_name.replace("/", "_").replace(":", "_")
    markdown, csv_path, png = folder / f"{stem}.md", folder / f"{stem}.csv", folder / f"{stem}.png"
    lines = [f"# {study.study_name}", "", "Test accuracy, mean +- std over seeds; p: Welch's t-test "
             "against cross-entropy.", "", _markdown(paper_table(table)), "", "## Per loss", "",
             _markdown(table.rows)]
    if table.fidelity:
        lines += ["", f"Fidelity over {table.fidelity['losses']} losses: Spearman "
                      f"{table.fidelity['spearman']:.3f}, Kendall {table.fidelity['kendall']:.3f}"]
    markdown.write_text("\n".join(lines) + "\n")
    csv_path.write_text(format_rows(table.rows, "csv") + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(row["loss"] for row in table.rows))
    figure, axes = plt.subplots(figsize=(1.2 * len(labels) + 2, 3.8))
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [[t.values[0] for t in trials if t.user_attrs["loss"] == label] for label in labels]
    axes.boxplot(values, widths=0.5)
    for index, points in enumerate(values, start=1):
        axes.scatter(np.full(len(points), index) + np.linspace(-0.08, 0.08, len(points)), points, s=14, zorder=3)
    axes.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")
    axes.set_ylabel("test accuracy")
    axes.set_title(study.study_name, fontsize=9)
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    plt.close(figure)
    return [markdown, csv_path, png]


def _markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no runs)"
    columns = list(rows[0])
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                     + ["| " + " | ".join(str(row[c]).replace("|", "\\|") for c in columns) + " |" for row in rows])


def recheck(study_name: str, storage_url: str | None = None, seeds: int = 3, *, device: str = "auto",
            progress: bool = True) -> list[dict[str, Any]]:
    """Re-train the Pareto set on the surrogate with ``seeds`` new seeds: which front members were luck?"""
    from optiloss.search.config import make_config
    from optiloss.search.run import load_search_data

    storage = open_storage(storage_url, create=False)
    study = load_study(storage, study_name)
    if "config" not in study.user_attrs:
        raise OptilossError(f"study {study_name!r} is not an optiloss search study (no config user attr)")
    config = make_config(study.user_attrs["config"], f"study {study_name} config")
    target = resolve_device(device)
    evaluator = LossEvaluator.for_search(config, load_search_data(config, progress).to(target), target)
    augmentation = evaluator.augmentation(config.augmentation)
    rows = []
    front = pareto_rows(study)
    for row in tqdm(front, desc="rechecking the Pareto set", unit="loss", disable=not progress):
        trial = study.trials[row["trial"]]
        genome = trial_genome(study, trial)
        scores = [evaluator.evaluate(genome, augmentation, config.seed + 7919 * (k + 1)) for k in range(seeds)]
        accuracies = [score.accuracy for score in scores]
        rows.append({"trial": trial.number, "search_accuracy": round(trial.values[0], 4),
                     "recheck_accuracy": round(statistics.mean(accuracies), 4),
                     "recheck_std": round(statistics.stdev(accuracies), 4) if seeds > 1 else 0.0,
                     "search_robustness": round(trial.values[1], 4),
                     "recheck_robustness": round(statistics.mean(s.robustness for s in scores), 4),
                     "formula": trial.user_attrs.get("formula", "")})
    return rows
