"""Rows for the read-only commands, and their text, CSV and JSON forms.

Everything here reads plain Optuna studies; the genome is decoded from the
trial's parameters, never from a stored string.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from optiloss.data.conditions import describe_recorded
from optiloss.errors import UsageError
from optiloss.records import SearchTrialRecord, StudyKey, TrialKey
from optiloss.studies import (
    get_trial,
    noise_floor,
    noise_floor_verdict,
    pareto_trials,
    rejections,
    time_breakdown,
    trial_genome,
)


def _metric_names(study: optuna.Study) -> list[str]:
    return study.metric_names or [f"value{k}" for k in range(len(study.directions))]


def pareto_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The Pareto set for display, best accuracy first (:func:`~optiloss.studies.pareto_trials`):
    trial number, objective values rounded to 4 places (robustness beside accuracy in a
    single-objective study), the accuracy's distance from cross-entropy's in its standard deviations
    over seeds (``vs_ce``, when the study has a noise floor), zoo or given name, formula."""
    names = _metric_names(study)
    floor = noise_floor(study)
    rows = []
    for trial in pareto_trials(study):
        row: dict[str, Any] = {"trial": trial.number}
        row.update({name: round(value, 4) for name, value in zip(names, trial.values)})
        record = SearchTrialRecord.from_trial(trial)
        if "robustness" not in row and record.robustness is not None:
            row["robustness"] = round(record.robustness, 4)
        if floor is not None:
            spreads = floor.spreads(trial.values[0])
            row["vs_ce"] = "" if spreads is None else f"{spreads:+.1f} sd"
        row["loss"] = record.shown_name
        row["formula"] = record.formula
        rows.append(row)
    return rows


def pareto_verdict(study: optuna.Study) -> str:
    """One sentence: is any loss of the Pareto set beyond cross-entropy's noise floor?"""
    return noise_floor_verdict(study, pareto_trials(study))


def search_summary(study: optuna.Study) -> str:
    """Two lines about a search's cost: its rejected genomes by reason (stored as PRUNED trials and
    redrawn inside the sampler, :func:`~optiloss.studies.rejections`) and the share of its time
    inside training, inside scoring and outside both (:func:`~optiloss.studies.time_breakdown`)."""
    text = rejections(study).describe() + "\n" + time_breakdown(study).describe()
    if StudyKey.CONDITIONS in study.user_attrs:  # a study trained under a data condition says so
        text += "\ndata: " + describe_recorded(study.user_attrs[StudyKey.CONDITIONS])
    return text


def study_rows(storage: BaseStorage) -> list[dict[str, Any]]:
    """One row per study: trial counts by state and the best value of each objective."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study_id = storage.get_study_id_from_name(summary.study_name)
        trials = storage.get_all_trials(study_id, deepcopy=False)
        row: dict[str, Any] = {
            "study": summary.study_name,
            "dataset": summary.user_attrs.get(StudyKey.DATASET, ""),
            "augmentation": summary.user_attrs.get(StudyKey.AUGMENTATION, ""),
        }
        for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING):
            row[state.name.lower()] = sum(1 for trial in trials if trial.state == state)
        metric_names = optuna.load_study(study_name=summary.study_name, storage=storage).metric_names
        complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
        for index, name in enumerate(metric_names or [f"value{k}" for k in range(len(summary.directions))]):
            row[f"best_{name}"] = round(max(t.values[index] for t in complete), 4) if complete else ""
        rows.append(row)
    return rows


SHOWN_TRIAL_KEYS = (
    TrialKey.ZOO,
    TrialKey.LOSS_NAME,
    TrialKey.ALSO_NAMED,
    TrialKey.ROBUSTNESS,
    TrialKey.PARENT,
    TrialKey.MUTATION,
    TrialKey.SCREENED_OUT,
    TrialKey.REJECTED,
    TrialKey.DIVERGED,
    TrialKey.ORIENTATION,
    TrialKey.FINGERPRINT,
)
"""The trial user attrs ``optiloss show`` prints, in this order, where a trial has them."""


def show_trial(study: optuna.Study, number: int, fmt: str = "text") -> str:
    """The loss of trial ``number`` as a formula (text), LaTeX, a standalone Python function
    (``python``) or a standalone module with an ``nn.Module`` (``module``)."""
    trial = get_trial(study, number)
    genome = trial_genome(study, trial)
    if fmt == "latex":
        return genome.latex
    if fmt == "python":
        return genome.python_source()
    if fmt == "module":
        return genome.python_module_source()
    if fmt != "text":
        raise UsageError(f"unknown format {fmt!r}; use text, latex, python or module")
    lines = [f"trial {number} ({trial.state.name})", f"formula: L = sum_c [{genome.formula}]"]
    if trial.values:
        names = _metric_names(study)
        lines.append(", ".join(f"{name} {value:.4f}" for name, value in zip(names, trial.values)))
        floor = noise_floor(study)
        accuracy = trial.values[0]
        if floor is not None and floor.too_wide:
            lines.append(f"accuracy vs the noise floor: {floor.too_wide_sentence()}")
        elif floor is not None and floor.spreads(accuracy) is not None:
            low, high = floor.prediction_interval()
            where = "outside" if floor.beyond(accuracy) else "inside"
            lines.append(
                f"accuracy vs {floor.describe()}: {accuracy - floor.mean:+.4f}, "
                f"{floor.spreads(accuracy):+.1f} standard deviations ({where} the 95 % prediction interval "
                f"{low:.4f}-{high:.4f} of one cross-entropy run; one seed: optiloss recheck retrains it)"
            )
    predicted = trial.user_attrs.get(TrialKey.PREDICTED)
    if predicted:
        measured = dict(zip(_metric_names(study), trial.values or []))
        lines.append(
            f"predicted by the guided sampler ({trial.user_attrs.get(TrialKey.GUIDED_PICK, 'pick')}): "
            + ", ".join(
                f"{name} {guess['mean']:.4f} +- {guess['sd']:.4f}"
                + (f" (measured {measured[name]:.4f})" if name in measured else "")
                for name, guess in predicted.items()
            )
        )
    for key in SHOWN_TRIAL_KEYS:
        if key in trial.user_attrs:
            lines.append(f"{key}: {trial.user_attrs[key]}")
    return "\n".join(lines)


def format_rows(rows: Sequence[dict[str, Any]], fmt: str = "table") -> str:
    """Rows as an aligned text table, CSV or JSON; None is an empty cell (null in JSON). The columns are
    every key of any row, in the order first seen (a search and a transfer study name their metrics
    differently); a row without one has an empty cell."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if not rows:
        return "" if fmt == "csv" else "(none)"
    columns = list(dict.fromkeys(column for row in rows for column in row))
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue().rstrip("\n")
    if fmt != "table":
        raise UsageError(f"unknown format {fmt!r}; use table, csv or json")
    cells = [["" if row.get(column) is None else str(row[column]) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[k]) for line in cells)) for k, column in enumerate(columns)]
    render = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
    return "\n".join([render(columns), render(["-" * w for w in widths]), *map(render, cells)])
