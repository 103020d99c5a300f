"""Reports of the experiments that retrain losses: transfer tables and plots, the loss x augmentation
heatmap."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from optiloss.matrix import MatrixResult
from optiloss.records import TransferRunRecord
from optiloss.report import figures
from optiloss.report.dashboard import pyplot
from optiloss.report.tables import format_rows
from optiloss.transfer import TransferTable, released_rows


def paper_table(table: TransferTable) -> list[dict[str, str]]:
    """Loss x augmentation, each cell ``mean +- std (p=…)``: the shape of the paper's tables."""
    cells: dict[str, dict[str, str]] = {}
    for row in table.rows:
        p = f" (p={row['p_welch']})" if row["p_welch"] else ""
        cells.setdefault(row["loss"], {"loss": row["loss"]})[row["augmentation"]] = (
            f"{row['test_accuracy']:.4f} +- {row['accuracy_std']:.4f}{p}"
        )
    return [{"loss": loss, **{a: cells[loss].get(a, "") for a in table.augmentations}} for loss in cells]


def save_transfer_report(study: optuna.Study, table: TransferTable, folder: str | Path) -> list[Path]:
    """Markdown and CSV of the table, and a strip plot PNG of test accuracy per loss and seed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = study.study_name.replace("/", "_").replace(":", "_")
    markdown, csv_path, png = folder / f"{stem}.md", folder / f"{stem}.csv", folder / f"{stem}.png"
    lines = [
        f"# {study.study_name}",
        "",
        "Test accuracy, mean +- std over seeds; p: Welch's t-test against cross-entropy.",
        "",
        _markdown(paper_table(table)),
        "",
        "## Per loss",
        "",
        _markdown(table.rows),
    ]
    if table.fidelity:
        lines += [
            "",
            f"Fidelity over {table.fidelity['losses']} losses: Spearman "
            f"{table.fidelity['spearman']:.3f}, Kendall {table.fidelity['kendall']:.3f}",
        ]
    markdown.write_text("\n".join(lines) + "\n")
    csv_path.write_text(format_rows(table.rows, "csv") + "\n")
    released = released_rows(study)
    written = [markdown, csv_path, png]
    if released:  # runs scored on the released CIFAR-C files: every corruption at every severity
        released_csv = folder / f"{stem}-cifar-c.csv"
        released_csv.write_text(format_rows(released, "csv") + "\n")
        written.append(released_csv)
    plt = pyplot()
    labels = list(dict.fromkeys(row["loss"] for row in table.rows))
    figure, axes = plt.subplots(figsize=(1.2 * len(labels) + 2, 3.8))
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [
        [t.values[0] for t in trials if TransferRunRecord.from_trial(t).loss == label] for label in labels
    ]
    axes.boxplot(values, widths=0.5)
    for index, points in enumerate(values, start=1):
        jitter = np.linspace(-0.08, 0.08, len(points))
        axes.scatter(np.full(len(points), index) + jitter, points, s=14, zorder=3)
    axes.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right")
    axes.set_ylabel("test accuracy")
    axes.set_title(study.study_name, fontsize=9)
    figure.tight_layout()
    figure.savefig(png, dpi=110)
    plt.close(figure)
    return written


def _markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no runs)"
    columns = list(rows[0])
    cells = [[str(row[c]).replace("|", "\\|") for c in columns] for row in rows]
    return "\n".join(
        ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        + ["| " + " | ".join(line) + " |" for line in cells]
    )


def save_matrix(result: MatrixResult, folder: str | Path) -> tuple[Path, Path]:
    """Write ``{dataset}-matrix.csv`` and a heatmap ``{dataset}-matrix.png`` into ``folder``."""
    plt = pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = result.dataset.replace("/", "_").replace(":", "_")
    csv_path, png_path = folder / f"{stem}-matrix.csv", folder / f"{stem}-matrix.png"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["loss", "augmentation", "mean_accuracy", "std_accuracy", "seeds", "formula"])
        for (label, augmentation), values in result.accuracies.items():
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            writer.writerow(
                [
                    label,
                    augmentation,
                    f"{statistics.mean(values):.6f}",
                    f"{spread:.6f}",
                    len(values),
                    result.losses[label],
                ]
            )
    figure = figures.heatmap(result, f"{result.dataset}: {result.split_name} accuracy, loss x augmentation")
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return csv_path, png_path
