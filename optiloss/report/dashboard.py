"""What optuna-dashboard shows for a loss search: notes, hypervolume, per-trial plots.

Everything is written with optuna-dashboard's and Optuna's public APIs into the
study's own storage (notes, plotly figures) and an artifact store (PNGs, CSVs),
so the dashboard shows it without optiloss installed.
"""

from __future__ import annotations

import csv
import functools
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import FrozenTrial, TrialState

from optiloss.genome import BASELINE_DISPLAY, Genome, baseline_genome
from optiloss.records import SearchTrialRecord, StudyKey
from optiloss.report.tables import search_summary
from optiloss.search.hooks import SearchHooks
from optiloss.settings import SearchConfig
from optiloss.statistics import hypervolume
from optiloss.storage import ARTIFACTS_DIR
from optiloss.studies import noise_floor, noise_floor_verdict, pareto_trials, trial_robustness

DEFAULT_ARTIFACT_DIR = ARTIFACTS_DIR
HYPERVOLUME_FIGURE_ID = "hypervolume-history"


def artifact_store(path: str | Path = DEFAULT_ARTIFACT_DIR) -> FileSystemArtifactStore:
    Path(path).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_shape(genome: Genome, points: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p_t, loss, dloss/dp_t) of a two-class sample as its true-class probability sweeps (0, 1)."""
    p_true = torch.linspace(1e-3, 1 - 1e-3, points, dtype=torch.float64, requires_grad=True)
    p = torch.stack([p_true, 1 - p_true], dim=1)
    y = torch.zeros_like(p)
    y[:, 0] = 1
    values = genome.per_sample(y, p)
    (gradient,) = torch.autograd.grad(values.sum(), p_true)
    return p_true.detach().numpy(), values.detach().numpy(), gradient.numpy()


def plot_loss_shape(genome: Genome, path: Path, title: str) -> None:
    """PNG of the loss and its gradient against the true-class probability, next to cross-entropy."""
    plt = pyplot()
    reference = baseline_genome()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for shown, label, style in ((reference, BASELINE_DISPLAY, "--"), (genome, "this loss", "-")):
        p_true, values, gradient = loss_shape(shown)
        left.plot(p_true, values, style, label=label)
        right.plot(p_true, gradient, style, label=label)
    left.set(xlabel="true-class probability p_t", ylabel="loss", title="loss")
    right.set(xlabel="true-class probability p_t", ylabel="d loss / d p_t", title="gradient", yscale="symlog")
    left.legend()
    figure.suptitle(title[:110], fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write_training_curve(history: Sequence[dict], png: Path, csv_path: Path) -> None:
    """The per-epoch history as CSV and as a PNG of loss and training accuracy."""
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    figure, left = plt.subplots(figsize=(5, 3.4))
    left.plot(epochs, [row["loss"] for row in history], "o-", color="tab:blue")
    left.set(xlabel="epoch", ylabel="training loss")
    right = left.twinx()
    right.plot(epochs, [row["train_accuracy"] for row in history], "s-", color="tab:orange")
    right.set_ylabel("training accuracy")
    figure.tight_layout()
    figure.savefig(png, dpi=90)
    plt.close(figure)


def upload_trial_artifacts(
    trial: optuna.Trial, genome: Genome, history: Sequence[dict], store: FileSystemArtifactStore
) -> None:
    """Loss-shape PNG, training-curve PNG and CSV, attached to ``trial``."""
    with tempfile.TemporaryDirectory() as folder:
        shape = Path(folder) / f"loss-shape-trial-{trial.number}.png"
        plot_loss_shape(genome, shape, f"trial {trial.number}: L = sum_c [{genome.formula}]")
        curve_png = Path(folder) / f"training-curve-trial-{trial.number}.png"
        curve_csv = Path(folder) / f"training-curve-trial-{trial.number}.csv"
        write_training_curve(history, curve_png, curve_csv)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for path in (shape, curve_png, curve_csv):
                upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)


def study_note(study: optuna.Study) -> str:
    """Markdown: what the study searches, its configuration and its current Pareto set."""
    attrs = study.user_attrs
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    redrawn = sum(sum(SearchTrialRecord.from_trial(trial).screened_out.values()) for trial in complete)
    lines = [
        f"# {study.study_name}",
        f"Loss-function search on **{attrs.get(StudyKey.DATASET)}** with the "
        f"**{attrs.get(StudyKey.AUGMENTATION)}** "
        f"augmentation: {len(complete)} trained losses, {len(pruned) + redrawn} genomes rejected "
        f"before training or early in it"
        + (f" ({redrawn} of them redrawn inside the sampler)." if redrawn else "."),
        "",
        _objectives_line(study),
        "",
        *(line[0].upper() + line[1:] + "." for line in search_summary(study).splitlines()),
        "",
        "## Pareto set" if len(study.directions) > 1 else "## Best",
        "",
        "| trial | accuracy | vs cross-entropy | robustness | loss |",
        "|---|---|---|---|---|",
    ]
    floor = noise_floor(study)
    front = pareto_trials(study) if complete else []
    for trial in front:
        record = SearchTrialRecord.from_trial(trial)
        formula, name, robustness = record.formula.replace("|", "\\|"), record.name, record.robustness
        spreads = floor.spreads(trial.values[0]) if floor is not None else None
        lines.append(
            f"| {trial.number} | {trial.values[0]:.4f} | "
            f"{'' if spreads is None else f'{spreads:+.1f} sd'} | "
            f"{'' if robustness is None else f'{robustness:.4f}'} | "
            f"{name + ': ' if name else ''}`{formula}` |"
        )
    lines += ["", "## Noise floor", "", noise_floor_verdict(study, front).capitalize() + "."]
    lines += ["", "## Configuration", "", "| key | value |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in sorted((attrs.get(StudyKey.CONFIG) or {}).items())]
    return "\n".join(lines) + "\n"


def _objectives_line(study: optuna.Study) -> str:
    if len(study.directions) > 1:
        return (
            "Objectives (both maximised): validation **accuracy** and **robustness** "
            "(mean accuracy over the corruption suite)."
        )
    return (
        "Objective (maximised): validation **accuracy**, as in the paper; robustness (mean accuracy "
        "over the corruption suite) is recorded beside it."
    )


def hypervolume_history(trials: Sequence[FrozenTrial]) -> tuple[list[int], list[float]]:
    """Trial numbers of the COMPLETE two-objective ``trials`` and the hypervolume of all of them
    up to each, in number order. Only the running Pareto front is kept, so the cost grows with
    the number of trials times the front's size (what Optuna's plot would deep-copy every trial for)."""
    numbers: list[int] = []
    volumes: list[float] = []
    front: list[tuple[float, float]] = []
    for trial in sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.number):
        point = (trial.values[0], trial_robustness(trial) or 0.0)
        if not any(other[0] >= point[0] and other[1] >= point[1] for other in front):
            dominated = [other for other in front if point[0] >= other[0] and point[1] >= other[1]]
            front = [other for other in front if other not in dominated] + [point]
        numbers.append(trial.number)
        volumes.append(hypervolume(front))
    return numbers, volumes


def refresh_study_report(study: optuna.Study) -> None:
    """Rewrite the study note and the hypervolume-history figure (called after trained trials)."""
    import optuna_dashboard
    import plotly.graph_objects as go

    optuna_dashboard.save_note(study, study_note(study))
    numbers, volumes = hypervolume_history(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if numbers:
        figure = go.Figure(go.Scatter(x=numbers, y=volumes, mode="lines+markers", name="hypervolume"))
        figure.update_layout(
            title=f"Hypervolume history of {study.study_name} (reference point (0, 0))",
            xaxis_title="Trial",
            yaxis_title="Hypervolume",
        )
        optuna_dashboard.save_plotly_graph_object(study, figure, graph_object_id=HYPERVOLUME_FIGURE_ID)


def dashboard_hooks(config: SearchConfig) -> SearchHooks:
    """What a search hands optuna-dashboard: the study note and hypervolume figure, and, with
    ``config.artifacts``, each trained trial's plots in ``config.artifact_dir``."""
    trial_trained = None
    if config.artifacts:
        trial_trained = functools.partial(upload_trial_artifacts, store=artifact_store(config.artifact_dir))
    return SearchHooks(study_report=refresh_study_report, trial_trained=trial_trained)
