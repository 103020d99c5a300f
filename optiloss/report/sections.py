"""The experiment page's sections, each read from the studies: an augmentation's search with its
recheck and transfers (:func:`augmentation_section`, the summary's prose), the matrix
(:func:`matrix_section`) and a transfer stage (:func:`transfer_section`). The statistics come from
:mod:`optiloss.statistics`, the runs from :func:`optiloss.ledger.runs_by_loss` and the figures from
:mod:`optiloss.report.figures`; :mod:`optiloss.report.page` gathers the sections into the page."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from scipy import stats

from optiloss.experiment import Experiment, TransferRun
from optiloss.genome import BASELINE, display_name
from optiloss.ledger import runs_by_loss
from optiloss.matrix import MatrixResult, read_matrix
from optiloss.records import SearchTrialRecord, TrialKey, pooled_label
from optiloss.report import figures
from optiloss.report.experiments import paper_table
from optiloss.report.tables import search_summary
from optiloss.statistics import Comparison, sample_std
from optiloss.studies import found_and_zoo, noise_floor, noise_floor_verdict, pareto_trials
from optiloss.transfer import TransferTable, transfer_labels, transfer_table


@dataclass
class AugmentationSection:
    """What the page says about one augmentation's search."""

    augmentation: str
    study_name: str
    exists: bool = False
    complete: int = 0
    best_label: str | None = None
    best_formula: str = ""
    best_accuracy: float | None = None
    best_zoo: str | None = None
    recheck_vs_ce: Comparison | None = None
    recheck_vs_zoo: Comparison | None = None
    recheck_rows: list[dict[str, Any]] = field(default_factory=list)
    transfers: list[tuple[str, Comparison | None, Comparison | None]] = field(default_factory=list)
    """(stage, test accuracy against cross-entropy, accuracy on the released CIFAR-C files against it)."""
    front_svg: str = ""
    shapes_svg: str = ""
    noise_floor: str = ""
    too_wide: str = ""
    """The sentence saying cross-entropy's runs spread too widely to tell losses apart, when they do."""
    summary: str = ""
    search_cost: list[str] = field(default_factory=list)
    """The search's rejected genomes by reason and where its time went (:func:`search_summary`)."""


@dataclass
class TransferSection:
    """What the page says about one transfer stage."""

    name: str
    studies: list[str]
    table: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    augmentations: list[str]
    seeds_svg: str = ""
    fidelity_svg: str = ""
    spearman: float | None = None
    spearman_by_augmentation: dict[str, float] = field(default_factory=dict)
    fidelity_pairs: int = 0


def _compare(runs: dict[str, list[float]], name: str, reference: str) -> Comparison | None:
    """``name``'s runs against ``reference``'s (``runs``: loss -> accuracies), None unless both have
    runs; prose names the reference by its display name."""
    if name not in runs or reference not in runs:
        return None
    return Comparison.of(runs[name], runs[reference], name, display_name(reference))


def _load(storage: BaseStorage, name: str) -> optuna.Study | None:
    """The study ``name``, None where it does not exist (yet)."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def _recheck_rows(runs: dict[str, list[float]]) -> list[dict[str, Any]]:
    """The recheck table: cross-entropy first, then the losses by mean accuracy, each compared with
    cross-entropy where it has runs."""
    rows = []
    for label, values in sorted(
        runs.items(), key=lambda item: (item[0] != BASELINE, -statistics.mean(item[1]))
    ):
        compared = _compare(runs, label, BASELINE) if label != BASELINE else None
        mean, std = (
            (compared.mean, compared.std) if compared else (statistics.mean(values), sample_std(values))
        )
        rows.append(
            {
                "loss": label,
                "seeds": len(values),
                "accuracy": f"{mean:.4f} ± {std:.4f}",
                "vs cross-entropy": "" if compared is None else f"{compared.difference:+.4f}",
                "p (Welch)": "" if compared is None or math.isnan(compared.p) else f"{compared.p:.3g}",
            }
        )
    return rows


def augmentation_section(
    storage: BaseStorage,
    experiment: Experiment,
    augmentation: str,
    transfers: list[tuple[str, list[TransferRun]]],
) -> AugmentationSection:
    """What the page says of ``augmentation``'s search: its study, the recheck of its best loss of its
    own (against cross-entropy and the best zoo loss) and how that loss fared in each transfer of
    ``transfers`` (stage name, its runs) trained under ``augmentation``."""
    name = experiment.study_name(augmentation)
    section = AugmentationSection(augmentation, name)
    study = _load(storage, name)
    if study is None:
        section.summary = f"{augmentation}: not searched yet (study {name})."
        return section
    section.exists = True
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    section.complete = len(complete)
    section.search_cost = [line[0].upper() + line[1:] + "." for line in search_summary(study).splitlines()]
    if not complete:
        section.summary = f"{augmentation}: the search has no trained loss yet (study {name})."
        return section
    section.front_svg = figures.svg(figures.search_front(study))
    section.noise_floor = noise_floor_verdict(study, pareto_trials(study)).removeprefix("noise floor: ")
    floor = noise_floor(study)
    if floor is not None and floor.too_wide:
        section.too_wide = f"In the search, {floor.too_wide_sentence()}."
    found, zoo_losses = found_and_zoo(study)
    section.shapes_svg = figures.svg(figures.loss_shapes(study, found[:3]))
    best = found[0] if found else None
    best_zoo = zoo_losses[0] if zoo_losses else None
    runs = runs_by_loss(storage, experiment.recheck_ledger(augmentation))
    section.recheck_rows = _recheck_rows(runs)
    if best_zoo is not None:
        section.best_zoo = best_zoo.user_attrs[TrialKey.ZOO]
    if best is None:
        section.summary = " ".join(
            part
            for part in (
                f"{augmentation}: the search found no loss of its own that trained ({len(complete)} trials).",
                section.too_wide,
            )
            if part
        )
        return section
    record = SearchTrialRecord.from_trial(best)
    label = record.label()
    section.best_label, section.best_formula, section.best_accuracy = label, record.formula, best.values[0]
    section.recheck_vs_ce = _compare(runs, label, BASELINE)
    if section.best_zoo:
        section.recheck_vs_zoo = _compare(runs, label, section.best_zoo)
    section.transfers = _transferred(storage, record, name, augmentation, transfers)
    section.summary = _summary(section)
    return section


def _transferred(
    storage: BaseStorage,
    best: SearchTrialRecord,
    study_name: str,
    augmentation: str,
    transfers: list[tuple[str, list[TransferRun]]],
) -> list[tuple[str, Comparison | None, Comparison | None]]:
    """How the search's best loss ``best`` of ``study_name`` fared against cross-entropy in each
    transfer run under ``augmentation``: (stage, test accuracy, accuracy on the released CIFAR-C files)."""
    fared = []
    for stage_name, stage_runs in transfers:
        for run in stage_runs:
            if run.augmentation != augmentation:
                continue
            label = best.label(pooled_from=study_name if len(run.sources) > 1 else None)
            accuracies = runs_by_loss(storage, run.study_name, augmentation=augmentation)
            released = runs_by_loss(
                storage, run.study_name, augmentation=augmentation, metric=TrialKey.CIFAR_C
            )
            fared.append(
                (
                    f"{stage_name} ({run.config.model} on {run.config.dataset})",
                    _compare(accuracies, label, BASELINE),
                    _compare(released, label, BASELINE),
                )
            )
    return fared


def _summary(section: AugmentationSection) -> str:
    """The sentences on top of the page for one augmentation."""
    parts = [
        f"Under {section.augmentation}, the best loss the search found is {section.best_label} "
        f"(validation accuracy {section.best_accuracy:.4f} in the search, {section.complete} trained losses)."
    ]
    if section.too_wide:
        parts.append(section.too_wide)
    if section.recheck_vs_ce is None:
        parts.append("It has not been rechecked with fresh seeds yet.")
    else:
        parts.append(
            f"Rechecked with fresh seeds it scored {section.recheck_vs_ce.describe()}: "
            f"{section.recheck_vs_ce.verdict()}."
        )
        if section.recheck_vs_zoo is not None:
            parts.append(
                f"Against the best zoo loss, {section.best_zoo}: {section.recheck_vs_zoo.describe()}, "
                f"{section.recheck_vs_zoo.verdict()}."
            )
    for stage, comparison, released in section.transfers:
        if comparison is None:
            parts.append(f"In the transfer {stage} it has no runs yet.")
            continue
        kept = (
            "the transfer kept it better than cross-entropy"
            if comparison.better
            else "ahead of cross-entropy but not beyond chance"
            if comparison.difference > 0
            else "the transfer did not keep it"
        )
        parts.append(f"In the transfer {stage} it scored {comparison.describe()}: {kept}.")
        if released is not None:
            parts.append(
                f"On the released CIFAR-C files (15 corruptions x 5 severities): {released.describe()}, "
                f"{released.verdict()}."
            )
    return " ".join(parts)


def matrix_section(storage: BaseStorage, experiment: Experiment) -> tuple[MatrixResult | None, str]:
    """The matrix as its ledger holds it and its heatmap (inline SVG); (None, "") before it has a run."""
    result = read_matrix(
        storage,
        experiment.matrix_ledger,
        experiment.search.dataset,
        experiment.matrix.split,
        tuple(experiment.study_names().values()),
    )
    if result is None:
        return None, ""
    figure = figures.heatmap(
        result,
        f"{result.split_name} accuracy: loss x augmentation",
        xlabel="trained under",
        cell=(1.5, 0.55),
        margin=(3, 1.6),
        fontsize=8,
    )
    return result, figures.svg(figure)


def _transfer_tables(
    storage: BaseStorage, study_names: list[str]
) -> tuple[TransferTable, dict[tuple[str, str], list[float]]]:
    """The transfer table of the studies ``study_names`` together, and each (loss, augmentation)'s
    test accuracies over seeds; a found loss is named with its study (``study:trial_N``, as a pooled
    transfer names it already), so the same trial number of two studies stays apart."""
    table = TransferTable()
    seeds: dict[tuple[str, str], list[float]] = {}
    for name in study_names:
        study = _load(storage, name)
        if study is None:
            continue
        part = transfer_table(study)
        labels = {row["loss"]: pooled_label(row["loss"], row["source"]) for row in part.rows}
        for row in part.rows:
            row["loss"] = labels[row["loss"]]
        table.rows += part.rows
        table.augmentations += [a for a in part.augmentations if a not in table.augmentations]
        for augmentation in part.augmentations:
            for loss, accuracies in runs_by_loss(storage, name, augmentation=augmentation).items():
                seeds.setdefault((labels[loss], augmentation), []).extend(accuracies)
    return table, seeds


def _fidelity_pairs(
    storage: BaseStorage, runs: list[TransferRun], searches: dict[str, str], rows: list[dict[str, Any]]
) -> dict[str, list[tuple[float, float, str]]]:
    """Augmentation -> (the search's accuracy, the transfer's test accuracy, loss) of each loss of
    ``rows`` the search under that augmentation (``searches``: augmentation -> study name) trained."""
    pairs: dict[str, list[tuple[float, float, str]]] = {}
    for run in runs:
        own = _load(storage, searches[run.augmentation])
        if own is None:
            continue
        source_accuracy = {
            pooled_label(label, own.study_name): accuracy
            for label, accuracy in transfer_labels(own, None, run.config.select).items()
        }
        for row in rows:
            accuracy = source_accuracy.get(row["loss"])
            if row["augmentation"] == run.augmentation and accuracy is not None:
                pairs.setdefault(run.augmentation, []).append((accuracy, row["test_accuracy"], row["loss"]))
    return pairs


def transfer_section(
    storage: BaseStorage, stage_name: str, runs: list[TransferRun], searches: dict[str, str]
) -> TransferSection:
    """The transfer stage ``stage_name`` (its ``runs``): its studies' tables, each seed's run, and the
    fidelity of each search (``searches``: augmentation -> study name) to the transfer within an
    augmentation (Spearman's rho of the search's accuracy and the transfer's)."""
    study_names = list(dict.fromkeys(run.study_name for run in runs))
    table, seeds = _transfer_tables(storage, study_names)
    pairs = _fidelity_pairs(storage, runs, searches, table.rows)
    section = TransferSection(stage_name, study_names, paper_table(table), table.rows, table.augmentations)
    if not seeds:
        return section
    labels = list(dict.fromkeys(row["loss"] for row in table.rows))
    figure = figures.seed_runs(labels, table.augmentations, seeds, stage_name)
    section.seeds_svg = figures.svg(figure)
    rhos = {
        augmentation: float(stats.spearmanr([x for x, _, _ in points], [y for _, y, _ in points]).statistic)
        for augmentation, points in pairs.items()
        if len(points) >= 3
    }
    rhos = {augmentation: rho for augmentation, rho in rhos.items() if not math.isnan(rho)}
    if rhos:
        section.spearman = statistics.mean(rhos.values())
        section.spearman_by_augmentation = rhos
        section.fidelity_pairs = sum(len(pairs[augmentation]) for augmentation in rhos)
        figure = figures.fidelity(table.augmentations, pairs, rhos, section.spearman)
        section.fidelity_svg = figures.svg(figure)
    return section
