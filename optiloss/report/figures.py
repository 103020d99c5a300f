"""Every matplotlib figure of the reports: the experiment page's (inline SVG, :func:`svg`) and the
matrix's PNG. Each function takes what it draws and returns the figure; nothing here reads a study
but through the values it is given (or, for a search's front and loss shapes, the study itself)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from optiloss.genome import BASELINE, BASELINE_DISPLAY, baseline_genome
from optiloss.matrix import MatrixResult
from optiloss.records import SearchTrialRecord
from optiloss.report.dashboard import loss_shape, pyplot
from optiloss.studies import noise_floor, pareto_trials, trial_genome


def svg(figure: Any) -> str:
    """The figure as an inline ``<svg>`` element (no XML prologue), text kept as text; closes it."""
    plt = pyplot()
    buffer = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def heatmap(
    result: MatrixResult,
    title: str,
    *,
    xlabel: str | None = None,
    cell: tuple[float, float] = (1.6, 0.6),
    margin: tuple[float, float] = (3.0, 1.5),
    fontsize: float | None = None,
) -> Any:
    """The loss x augmentation heatmap of the matrix (the page's and the PNG's): each cell's mean
    accuracy (:meth:`MatrixResult.means`) written in, dark text on bright cells, a cell without runs
    left blank; ``cell`` and ``margin`` size the figure in inches."""
    means = result.means()
    rows, columns = list(result.losses), result.augmentations
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(cell[0] * len(columns) + margin[0], cell[1] * len(rows) + margin[1]))
    image = axes.imshow(np.ma.masked_invalid(means), cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(columns)), columns)
    axes.set_yticks(range(len(rows)), rows)
    middle = (np.nanmax(means) + np.nanmin(means)) / 2
    text = {} if fontsize is None else {"fontsize": fontsize}
    for row in range(len(rows)):
        for column in range(len(columns)):
            value = means[row, column]
            if not np.isnan(value):
                colour = "black" if value > middle else "white"
                axes.text(column, row, f"{value:.3f}", ha="center", va="center", color=colour, **text)
    if xlabel is None:
        axes.set_title(title)
    else:
        axes.set(xlabel=xlabel, title=title)
    figure.colorbar(image, ax=axes, label="accuracy")
    return figure


def search_front(study: optuna.Study) -> Any:
    """A search's trained losses by validation accuracy and robustness (evolved, zoo, given), its
    Pareto front, and cross-entropy's 95 % prediction interval where the study has a noise floor."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5.6, 4.0))
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {trial.number for trial in pareto_trials(study)}
    groups: dict[str, list[tuple[float, float]]] = {"evolved": [], "zoo": [], "given": []}
    for trial in complete:
        record = SearchTrialRecord.from_trial(trial)
        if record.robustness is None or record.diverged:
            continue
        kind = "zoo" if record.zoo else "given" if record.loss_name else "evolved"
        groups[kind].append((trial.values[0], record.robustness))
        if record.zoo == BASELINE:
            axes.annotate(BASELINE_DISPLAY, (trial.values[0], record.robustness), fontsize=7)
    styles = {"evolved": ("o", "#4c72b0"), "zoo": ("s", "#dd8452"), "given": ("^", "#55a868")}
    for kind, points in groups.items():
        if points:
            x, y = zip(*points)
            marker, colour = styles[kind]
            axes.scatter(x, y, marker=marker, color=colour, s=22, alpha=0.75, label=kind)
    members = sorted(
        (trial.values[0], SearchTrialRecord.from_trial(trial).robustness)
        for trial in complete
        if trial.number in front and SearchTrialRecord.from_trial(trial).robustness is not None
    )
    if members:
        x, y = zip(*members)
        axes.plot(x, y, "-", color="#c44e52", lw=1.2, label="Pareto front")
        axes.scatter(x, y, facecolors="none", edgecolors="#c44e52", s=70, lw=1.2)
    floor = noise_floor(study)
    if floor is not None and floor.std > 0:
        low, high = floor.prediction_interval()
        axes.axvspan(low, high, color="grey", alpha=0.15, label="cross-entropy 95 % PI")
    axes.set(xlabel="validation accuracy", ylabel="robustness (accuracy under corruptions)")
    axes.set_title(f"{study.study_name}: {len(complete)} trained losses", fontsize=9)
    axes.legend(fontsize=7, loc="best")
    return figure


def loss_shapes(study: optuna.Study, trials: list[FrozenTrial]) -> Any:
    """The shapes (two classes, over the true-class probability) of ``trials``' losses and cross-entropy."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5.6, 4.0))
    p_true, values, _ = loss_shape(baseline_genome())
    axes.plot(p_true, values, "--", color="black", label=BASELINE_DISPLAY)
    for trial in trials:
        p_true, values, _ = loss_shape(trial_genome(study, trial))
        if np.all(np.isfinite(values)):
            axes.plot(p_true, values, label=SearchTrialRecord.from_trial(trial).label())
    axes.set(xlabel="true-class probability p_t", ylabel="loss", yscale="symlog")
    axes.set_title("shapes of the best losses (two classes)", fontsize=9)
    axes.legend(fontsize=7)
    return figure


def seed_runs(
    labels: Sequence[str],
    augmentations: Sequence[str],
    seeds: dict[tuple[str, str], list[float]],
    stage_name: str,
) -> Any:
    """Each seed's test accuracy of each loss (``seeds``: (loss, augmentation) -> accuracies), one
    colour per augmentation."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(max(5.0, 0.5 * len(labels) + 2), 3.8))
    for offset, augmentation in enumerate(augmentations):
        shift = (offset - (len(augmentations) - 1) / 2) * 0.12
        for index, label in enumerate(labels):
            values = seeds.get((label, augmentation), [])
            axes.scatter(
                [index + shift] * len(values),
                values,
                s=16,
                color=f"C{offset}",
                label=augmentation if index == 0 else None,
            )
    axes.set_xticks(range(len(labels)), labels, rotation=35, ha="right", fontsize=7)
    axes.set(ylabel="test accuracy", title=f"{stage_name}: each seed's run")
    axes.legend(fontsize=7, title="augmentation", title_fontsize=7)
    return figure


def fidelity(
    augmentations: Sequence[str],
    pairs: dict[str, list[tuple[float, float, str]]],
    rhos: dict[str, float],
    spearman: float,
) -> Any:
    """Surrogate (search) accuracy against transfer test accuracy (``pairs``: augmentation ->
    (search, transfer, loss)), with each augmentation's Spearman's rho."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5.0, 3.8))
    for offset, augmentation in enumerate(augmentations):
        points = pairs.get(augmentation, [])
        if points:
            axes.scatter(
                [x for x, _, _ in points],
                [y for _, y, _ in points],
                s=18,
                color=f"C{offset}",
                label=f"{augmentation} (rho {rhos.get(augmentation, math.nan):.2f})",
            )
    axes.set(
        xlabel="surrogate (search) accuracy",
        ylabel="transfer test accuracy",
        title=f"fidelity: mean Spearman's rho within an augmentation {spearman:.2f}",
    )
    axes.legend(fontsize=7)
    return figure
