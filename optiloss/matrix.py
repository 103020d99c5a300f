"""The loss x augmentation matrix: does the best loss depend on the augmentation?

Takes the best losses of each augmentation study of a data set (plus
cross-entropy), retrains every one of them under every augmentation with
several seeds, and tabulates validation accuracy (mean and standard deviation).
This measures the paper's central claim with the tool itself.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from tqdm.auto import tqdm

from optiloss.augment import AUGMENTATIONS
from optiloss.errors import OptilossError
from optiloss.genome import Genome, screen, zoo
from optiloss.report.tables import pareto_rows, trial_genome
from optiloss.search.config import make_config
from optiloss.search.objective import LossEvaluator
from optiloss.search.run import load_search_data, resolve_device
from optiloss.search.storage import open_storage


@dataclass
class MatrixResult:
    """Accuracies per (loss label, augmentation), one value per seed."""

    dataset: str
    losses: dict[str, str]  # label -> formula
    augmentations: tuple[str, ...]
    accuracies: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def cell(self, loss: str, augmentation: str) -> str:
        values = self.accuracies[(loss, augmentation)]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.4f} +- {spread:.4f}"

    def rows(self) -> list[dict[str, str]]:
        return [{"loss": label, **{augmentation: self.cell(label, augmentation)
                                   for augmentation in self.augmentations}, "formula": formula}
                for label, formula in self.losses.items()]


def augmentation_studies(storage, dataset: str) -> dict[str, optuna.Study]:
    """The search study of each augmentation for ``dataset`` (``{dataset}-{augmentation}`` preferred)."""
    found: dict[str, optuna.Study] = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = summary.user_attrs
        augmentation = attrs.get("augmentation")
        if attrs.get("dataset") != dataset or augmentation not in AUGMENTATIONS:
            continue
        if augmentation not in found or summary.study_name == f"{dataset}-{augmentation}":
            found[augmentation] = optuna.load_study(study_name=summary.study_name, storage=storage)
    return found


def _losses(studies: dict[str, optuna.Study], top_k: int) -> dict[str, Genome]:
    """Top-k of each study by accuracy (its Pareto set first), plus cross-entropy; duplicates dropped."""
    chosen: dict[str, Genome] = {"cross_entropy": screen(zoo()["cross_entropy"]).genome}
    seen = {chosen["cross_entropy"].structure_hash}
    for augmentation, study in studies.items():
        taken = 0
        for row in pareto_rows(study):
            trial = study.trials[row["trial"]]
            genome = trial_genome(study, trial)
            if genome.structure_hash in seen:
                continue
            seen.add(genome.structure_hash)
            chosen[trial.user_attrs.get("zoo") or f"{augmentation}#{trial.number}"] = genome
            taken += 1
            if taken == top_k:
                break
    return chosen


def loss_augmentation_matrix(dataset: str, storage_url: str | None = None, *, top_k: int = 1, seeds: int = 2,
                             device: str = "auto", progress: bool = True) -> MatrixResult:
    """Retrain the best losses of ``dataset``'s augmentation studies under every augmentation.

    Training settings come from the studies' stored config. Raises
    :class:`OptilossError` when the storage holds no study for ``dataset``.
    """
    storage = open_storage(storage_url, create=False)
    studies = augmentation_studies(storage, dataset)
    if not studies:
        raise OptilossError(f"no search study for dataset {dataset!r} in this storage; "
                            f"run `optiloss search --dataset {dataset} --augmentation all5` first")
    first = next(iter(studies.values()))
    config = make_config(first.user_attrs["config"], f"study {first.study_name} config")
    target = resolve_device(device)
    evaluator = LossEvaluator.for_search(config, load_search_data(config, progress).to(target), target)
    losses = _losses(studies, top_k)
    result = MatrixResult(dataset, {label: genome.formula for label, genome in losses.items()}, AUGMENTATIONS)
    runs = [(label, augmentation, seed) for label in losses for augmentation in AUGMENTATIONS
            for seed in range(seeds)]
    pipelines = {augmentation: evaluator.augmentation(augmentation) for augmentation in AUGMENTATIONS}
    for label, augmentation, seed in tqdm(runs, desc="matrix runs", unit="run", disable=not progress):
        evaluation = evaluator.evaluate(losses[label], pipelines[augmentation], config.seed + 1000 * seed)
        result.accuracies.setdefault((label, augmentation), []).append(evaluation.accuracy)
    return result


def save_matrix(result: MatrixResult, folder: str | Path) -> tuple[Path, Path]:
    """Write ``{dataset}-matrix.csv`` and a heatmap ``{dataset}-matrix.png`` into ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = result.dataset.replace("/", "_").replace(":", "_")
    csv_path, png_path = folder / f"{stem}-matrix.csv", folder / f"{stem}-matrix.png"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["loss", "augmentation", "mean_accuracy", "std_accuracy", "seeds", "formula"])
        for (label, augmentation), values in result.accuracies.items():
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            writer.writerow([label, augmentation, f"{statistics.mean(values):.6f}", f"{spread:.6f}",
                             len(values), result.losses[label]])
    labels = list(result.losses)
    means = torch.tensor([[statistics.mean(result.accuracies[(label, augmentation)])
                           for augmentation in result.augmentations] for label in labels])
    figure, axes = plt.subplots(figsize=(1.6 * len(result.augmentations) + 3, 0.6 * len(labels) + 1.5))
    image = axes.imshow(means.numpy(), cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(result.augmentations)), result.augmentations)
    axes.set_yticks(range(len(labels)), labels)
    for row in range(len(labels)):
        for column in range(len(result.augmentations)):
            bright = means[row, column] > (means.max() + means.min()) / 2
            axes.text(column, row, f"{means[row, column]:.3f}", ha="center", va="center",
                      color="black" if bright else "white")
    axes.set_title(f"{result.dataset}: validation accuracy, loss x augmentation")
    figure.colorbar(image, ax=axes, label="accuracy")
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return csv_path, png_path
