"""The experiment's report page: ``storage/reports/<experiment>/index.html``, one self-contained file.

Everything on it is read from the studies (the search studies, the recheck and matrix ledgers, the
transfer studies), so the page of a partial run shows what exists and says what is missing. The
figures are inline SVG drawn by matplotlib with real text (searchable, no fonts fetched); the page
loads no script, style sheet or font from anywhere, so it opens from the file system offline. The
HTML comes from the Jinja2 template ``templates/experiment.html`` (autoescaped).
"""

from __future__ import annotations

import math
import platform
import statistics
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import jinja2
import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from scipy import stats

from optiloss.errors import OptilossError
from optiloss.experiment import Experiment, StagePlan, plan, reading_storage
from optiloss.genome import BASELINE, display_name
from optiloss.ledger import runs_by_loss
from optiloss.matrix import MatrixResult, read_matrix
from optiloss.records import SearchTrialRecord, TransferRunRecord, TrialKey, pooled_label
from optiloss.report import figures
from optiloss.report.experiments import paper_table
from optiloss.report.tables import search_summary
from optiloss.statistics import Comparison, sample_std
from optiloss.storage import REPORTS_DIR, mask_url, resolve_storage_url
from optiloss.studies import found_and_zoo, noise_floor, noise_floor_verdict, pareto_trials
from optiloss.transfer import TransferTable, transfer_labels, transfer_table

PAGE = "index.html"
_PACKAGES = ("optiloss", "torch", "torchvision", "optuna", "kornia", "timm", "numpy", "scipy")


def _compare(runs: dict[str, list[float]], name: str, reference: str) -> Comparison | None:
    if name not in runs or reference not in runs:
        return None
    return Comparison.of(runs[name], runs[reference], name, display_name(reference))


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


def _load(storage: BaseStorage, name: str) -> optuna.Study | None:
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


def _transfer_label(label: str, pooled_source: str | None) -> str:
    return f"{pooled_source}:{label}" if pooled_source else label


def _augmentation_section(
    storage: BaseStorage, experiment: Experiment, augmentation: str, transfers: list[tuple[str, list[Any]]]
) -> AugmentationSection:
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
    label = SearchTrialRecord.from_trial(best).label()
    section.best_label, section.best_formula, section.best_accuracy = (
        label,
        best.user_attrs.get(TrialKey.FORMULA, ""),
        best.values[0],
    )
    section.recheck_vs_ce = _compare(runs, label, BASELINE)
    if section.best_zoo:
        section.recheck_vs_zoo = _compare(runs, label, section.best_zoo)
    for stage_name, stage_runs in transfers:
        for run in stage_runs:
            if run.augmentation != augmentation:
                continue
            pooled = name if len(run.sources) > 1 else None
            transferred = _transfer_label(label, pooled)
            section.transfers.append(
                (
                    f"{stage_name} ({run.config.model} on {run.config.dataset})",
                    _compare(
                        runs_by_loss(storage, run.study_name, augmentation=augmentation),
                        transferred,
                        BASELINE,
                    ),
                    _compare(
                        runs_by_loss(
                            storage, run.study_name, augmentation=augmentation, metric=TrialKey.CIFAR_C
                        ),
                        transferred,
                        BASELINE,
                    ),
                )
            )
    section.summary = _summary(section)
    return section


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


def _matrix(storage: BaseStorage, experiment: Experiment) -> tuple[MatrixResult | None, str]:
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


def _evolved_label(loss: str, source_study: str) -> str:
    """A transfer row's loss as the page names it: an evolved loss with its study (``study:trial_N``,
    as a pooled transfer names it already), so the same trial number of two studies stays apart."""
    return pooled_label(loss, source_study)


def _transfer_section(
    storage: BaseStorage, stage_name: str, runs: list[Any], searches: dict[str, str]
) -> TransferSection:
    table = TransferTable()
    seeds: dict[tuple[str, str], list[float]] = {}
    study_names = list(dict.fromkeys(run.study_name for run in runs))
    for name in study_names:
        study = _load(storage, name)
        if study is None:
            continue
        part = transfer_table(study)
        for row in part.rows:
            row["loss"] = _evolved_label(row["loss"], row["source"])
        table.rows += part.rows
        table.augmentations += [a for a in part.augmentations if a not in table.augmentations]
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            record = TransferRunRecord.from_trial(trial)
            label = _evolved_label(record.loss, record.source_study)
            seeds.setdefault((label, record.augmentation), []).append(trial.values[0])
    # fidelity within each augmentation: the search's accuracy under it against the transfer's under it
    pairs: dict[str, list[tuple[float, float, str]]] = {}
    for run in runs:
        own = _load(storage, searches[run.augmentation])
        if own is None:
            continue
        source_accuracy = {
            _evolved_label(label, own.study_name): accuracy
            for label, accuracy in transfer_labels(own, None, run.config.select).items()
        }
        for row in table.rows:
            accuracy = source_accuracy.get(row["loss"])
            if row["augmentation"] == run.augmentation and accuracy is not None:
                pairs.setdefault(run.augmentation, []).append((accuracy, row["test_accuracy"], row["loss"]))
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


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _device(experiment: Experiment) -> str:
    import torch

    from optiloss.devices import resolve_device

    try:
        device = resolve_device(experiment.search.device)
    except OptilossError:
        return f"{experiment.search.device} (not available on the machine that wrote this page)"
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({model or platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_experiment_page(
    experiment: Experiment,
    storage_url: str | None = None,
    output: str | Path = REPORTS_DIR,
    plans: list[StagePlan] | None = None,
) -> Path:
    """Write ``{output}/{experiment.name}/index.html`` from what the storage holds; returns its path."""
    storage = reading_storage(experiment, storage_url)
    plans = plans if plans is not None else plan(experiment, storage=storage)
    transfers = [(stage.name, experiment.transfer_runs(stage)) for stage in experiment.transfers]
    sections = [
        _augmentation_section(storage, experiment, augmentation, transfers)
        for augmentation in experiment.augmentations
    ]
    matrix, matrix_svg = _matrix(storage, experiment)
    from optiloss.ablate import read_ablation  # the [ablation] stage's section (issue 35)

    ablations = [
        read_ablation(storage, name, experiment.ablation_ledger(augmentation))
        for augmentation, name in experiment.study_names().items()
    ]
    url = mask_url(resolve_storage_url(storage_url))
    template = jinja2.Environment(
        loader=jinja2.PackageLoader("optiloss.report", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    ).get_template("experiment.html")
    html = template.render(
        experiment=experiment,
        plans=plans,
        sections=sections,
        matrix=matrix,
        matrix_rows=matrix.rows() if matrix else [],
        matrix_svg=matrix_svg,
        ablations=[ablation for ablation in ablations if ablation is not None],
        transfers=[
            _transfer_section(storage, name, runs, experiment.study_names()) for name, runs in transfers
        ],
        versions=_versions(),
        device=_device(experiment),
        storage=url,
        dashboard=f"optiloss dashboard --storage {url}",
        optuna_dashboard=f"optuna-dashboard {url}",
    )
    folder = Path(output) / experiment.name
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / PAGE
    page.write_text(html)
    return page
