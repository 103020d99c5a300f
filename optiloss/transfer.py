"""Transfer studies: the best losses of a search retrained on larger models, against cross-entropy.

Each (augmentation, loss, seed) run is one trial of the Optuna study
``{source}-transfer-{model}-{dataset}`` (sources joined by ``+`` when several
are pooled) with user attrs ``run``, ``loss``, ``source_study``,
``augmentation``, ``seed``, ``formula`` and the metrics; values are test
accuracy and robustness (the corruption suite on the test split). A restart
skips finished runs and resumes an interrupted one from its last epoch.

The augmentation settings (crop padding, cutout size, mixup alpha,
RandAugment's N and M, flips) are the first source study's, pixel sizes scaled
to the transfer's image size, except where the transfer config sets a key to
something other than its default; the study records what ran in the user attr
``augment_settings``.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import statistics
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from scipy import stats
from tqdm.auto import tqdm

from optiloss.augment import AUGMENTATIONS, AugmentSettings
from optiloss.data import resolved_image_size
from optiloss.data.released import SEVERITIES, ReleasedCorruptions, split_released_key
from optiloss.devices import resolve_device
from optiloss.errors import UsageError
from optiloss.genome import BASELINE, Genome, screen, zoo
from optiloss.genome.genome import DEFAULT_NODES
from optiloss.genome.named import named_losses
from optiloss.liveness import fail_dead_trials, worker_record
from optiloss.models import create_model
from optiloss.records import SearchTrialRecord, StudyKey, TransferRunRecord, TrialKey, run_key
from optiloss.scoring import DataFor, LossEvaluator, loader
from optiloss.settings import SearchConfig, TransferConfig
from optiloss.statistics import welch_p_value
from optiloss.storage import storage_from
from optiloss.studies import load_study, select_trials, trial_genome
from optiloss.train import Checkpointing

INTERRUPTED = "interrupted"


def transfer_study_name(source: str | list[str], config: TransferConfig) -> str:
    """``{source}-transfer-{model}-{dataset}``; pooled sources are joined by ``+``."""
    joined = source if isinstance(source, str) else "+".join(source)
    return f"{joined}-transfer-{config.model}-{config.dataset}"


@dataclass(frozen=True)
class LossToTransfer:
    """A loss a transfer trains: its oriented genome, the study it came from (None for the zoo and
    losses given by formula) and its accuracy there (None where it has none)."""

    genome: Genome
    source_study: str | None = None
    source_accuracy: float | None = None


def losses_to_transfer(
    sources: optuna.Study | list[optuna.Study],
    top_k: int | None,
    select: str = "accuracy",
    given: dict[str, Genome] | None = None,
    *,
    num_classes: int,
) -> dict[str, LossToTransfer]:
    """Label -> loss: the ``top_k`` evolved losses of each source study
    (:func:`~optiloss.studies.select_trials`: by accuracy, one per behaviour, or from the Pareto
    set; zoo losses do not take a slot), the losses ``given`` by formula, then
    cross-entropy and the other zoo losses; one entry per active structure, cross-entropy first.

    With one source an evolved loss is labelled ``trial_<number>``; pooled, ``<study>:trial_<number>``.
    ``num_classes`` is the transfer data set's class count: label smoothing's e / C.
    """
    return _choose(sources, top_k, select, given, num_classes)


_ANY_CLASS_COUNT = 10
"""The class count :func:`transfer_labels` builds the zoo with: it sets label smoothing's constants,
never a structure, so no label depends on it, and those genomes are never returned."""


def transfer_labels(
    sources: optuna.Study | list[optuna.Study],
    top_k: int | None,
    select: str = "accuracy",
    given: dict[str, Genome] | None = None,
) -> dict[str, float | None]:
    """Label -> source accuracy of the losses :func:`losses_to_transfer` would choose, in its order,
    for readers that train nothing (the page, the dry run, the fidelity column)."""
    chosen = _choose(sources, top_k, select, given, _ANY_CLASS_COUNT)
    return {label: loss.source_accuracy for label, loss in chosen.items()}


def _choose(
    sources: optuna.Study | list[optuna.Study],
    top_k: int | None,
    select: str,
    given: dict[str, Genome] | None,
    num_classes: int,
) -> dict[str, LossToTransfer]:
    sources = [sources] if isinstance(sources, optuna.Study) else sources
    by_structure: dict[str, tuple[str, LossToTransfer]] = {}
    zoo_accuracy: dict[str, float] = {}
    for source in sources:
        # the zoo is transferred anyway: the top-k slots go to evolved losses
        ranked = select_trials(source, None, select)
        for trial in [trial for trial in ranked if TrialKey.ZOO not in trial.user_attrs][:top_k]:
            pooled_from = source.study_name if len(sources) > 1 else None
            label = SearchTrialRecord.from_trial(trial).label(pooled_from=pooled_from)
            loss = LossToTransfer(trial_genome(source, trial), source.study_name, trial.values[0])
            by_structure.setdefault(loss.genome.structure_hash, (label, loss))
        for trial in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            name = trial.user_attrs.get(TrialKey.ZOO)
            if name is not None and name not in zoo_accuracy:
                zoo_accuracy[name] = trial.values[0]
    for name, genome in (given or {}).items():
        by_structure.setdefault(genome.structure_hash, (name, LossToTransfer(genome)))
    nodes = sources[0].user_attrs.get(StudyKey.NODES, DEFAULT_NODES)
    constants = sources[0].user_attrs.get(StudyKey.CONSTANTS, 0)
    # the zoo as the source study has it, label smoothing's e / C for the transfer's C classes
    conditions = StudyKey.CONDITIONS in sources[0].user_attrs
    for name, genome in zoo(nodes, constants, num_classes, conditions).items():
        oriented = screen(genome).genome
        by_structure.setdefault(
            oriented.structure_hash, (name, LossToTransfer(oriented, None, zoo_accuracy.get(name)))
        )
    ordered = sorted(by_structure.values(), key=lambda item: item[0] != BASELINE)
    return dict(ordered)


PIXEL_KEYS = ("crop_padding", "cutout_size")
"""Augmentation settings measured in pixels: scaled from the source's image size to the transfer's."""


def source_augment_settings(source: optuna.Study, config: TransferConfig, image_size: int) -> AugmentSettings:
    """The augmentation settings a transfer of ``source`` trains with at ``image_size`` pixels.

    Each key the transfer config's file and options do not set comes from the source study's stored
    config, pixel sizes (:data:`PIXEL_KEYS`) scaled by ``image_size`` / the source's image size (its
    ``image_size`` user attr, else worked out from its config); a key the transfer config sets wins.
    A source without a stored config leaves the transfer's own.
    """
    stored = source.user_attrs.get(StudyKey.CONFIG)
    own = config.augment_settings()
    if not stored:
        return own
    searched = SearchConfig.from_mapping(stored, f"study {source.study_name} config")
    source_size = source.user_attrs.get(StudyKey.IMAGE_SIZE) or resolved_image_size(
        searched.dataset, searched.image_size
    )
    chosen = {}
    for field_ in dataclasses.fields(AugmentSettings):
        key = field_.name
        value = getattr(own, key)
        if key not in config.given_keys():
            value = getattr(searched, key)
            if key in PIXEL_KEYS and value is not None:
                value = max(1, round(value * image_size / source_size))
        chosen[key] = value
    return AugmentSettings(**chosen)


def run_transfer(
    source_name: str | list[str],
    config: TransferConfig,
    storage_url: str | BaseStorage | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    data_for: DataFor | None = None,
    losses: Mapping[str, Genome] | None = None,
) -> optuna.Study:
    """Train every (loss, seed) of ``config`` not yet COMPLETE in the transfer study; returns the study.

    ``source_name`` is one search study or several whose losses are pooled (the paper's WRN stage);
    ``config.select`` chooses each one's ``top_k``, and ``config.losses`` adds losses by formula.

    Runs left RUNNING by a dead process of this machine are failed and redone
    (from their last checkpoint); Ctrl-C fails the running one with
    ``fail_reason = "interrupted"`` and raises :class:`KeyboardInterrupt`, so
    running the same command again continues where it stopped. ``storage_url`` may be a storage
    already open, ``losses`` the losses of ``config.losses`` parsed already
    (:func:`~optiloss.genome.named.named_losses`; None: parsed here), and ``data_for`` where the data
    come from (default :func:`~optiloss.scoring.load_data`): an experiment run hands down what it holds.
    """
    source_names = [source_name] if isinstance(source_name, str) else list(dict.fromkeys(source_name))
    storage = storage_from(storage_url)
    sources = [load_study(storage, one) for one in source_names]
    nodes = sources[0].user_attrs.get(StudyKey.NODES, DEFAULT_NODES)
    # a bad formula stops before the data are loaded
    given = named_losses(config.losses if losses is None else losses, nodes)
    device = resolve_device(config.device)
    # transfer trains on the whole training part (no model selection happens here) and scores the test part
    data = (data_for or loader(progress))(config, merge_validation=True).to(device)
    released = (
        ReleasedCorruptions.open(config.corruptions, data.test_labels.numpy()) if config.corruptions else None
    )
    chosen = losses_to_transfer(sources, config.top_k, config.select, given, num_classes=data.num_classes)
    # the model's name, weights file and its fit are checked before anything is written
    create_model(config.model, data.num_classes, data.channels, weights=config.weights)
    augment = source_augment_settings(sources[0], config, data.train_images.shape[-1])
    config = config.replace(**dataclasses.asdict(augment))
    evaluator = LossEvaluator.for_transfer(config, data, device, progress=progress, released=released)
    name = transfer_study_name(source_names, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            study_name=name, storage=storage, load_if_exists=True, directions=["maximize", "maximize"]
        )
        study.set_metric_names(["test_accuracy", "test_robustness"])
    # how losses were chosen and trained is fixed when the study is created: a resume must match it
    recorded = {StudyKey.SELECT: config.select, StudyKey.AUGMENT_SETTINGS: dataclasses.asdict(augment)}
    different = [
        f"{key} {study.user_attrs[key]!r} (this run: {value!r})"
        for key, value in recorded.items()
        if key in study.user_attrs and study.user_attrs[key] != value
    ]
    if different:
        raise UsageError(
            f"transfer study {name!r} was run with "
            + "; ".join(different)
            + ": continue it with the same settings, or use another --storage"
        )
    study.set_user_attr(StudyKey.SOURCE_STUDY, source_names[0] if len(source_names) == 1 else source_names)
    study.set_user_attr(StudyKey.MODEL, config.model)
    study.set_user_attr(StudyKey.DATASET, config.dataset)
    for key, value in recorded.items():
        study.set_user_attr(key, value)
    fail_dead_trials(storage, study)
    done = {
        t.user_attrs[TrialKey.RUN] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }
    runs = [
        (label, seed)
        for label in chosen
        for seed in range(config.seeds)
        if run_key(config.augmentation, label, seed) not in done
    ]
    log(
        f"{name}: {len(chosen)} losses x {config.seeds} seeds under {config.augmentation}; "
        f"{len(chosen) * config.seeds - len(runs)} done, running {len(runs)}"
    )
    augmentation = evaluator.augmentation(config.augmentation)
    for label, seed in tqdm(runs, desc="transfer runs", unit="run", disable=not progress):
        genome = chosen[label].genome
        record = TransferRunRecord(
            label, config.augmentation, seed, genome.formula, chosen[label].source_study or ""
        )
        trial = study.ask()
        trial.set_user_attr(TrialKey.WORKER, worker_record(trial.number))
        for key, value in record.to_user_attrs().items():
            trial.set_user_attr(key, value)
        checkpoint = Path(config.checkpoint_dir) / name / record.run.replace("/", "-") / "checkpoint.pt"
        checkpointing = Checkpointing(save_to=checkpoint, resume_from=checkpoint)
        try:
            result = evaluator.evaluate(
                genome,
                augmentation,
                config.seed + 1000 * seed,
                description=f"{label} seed {seed}",
                checkpointing=checkpointing,
            )
        except KeyboardInterrupt:
            trial.set_user_attr(TrialKey.FAIL_REASON, INTERRUPTED)  # its checkpoint stays for the resume
            study.tell(trial, state=TrialState.FAIL)
            raise
        shutil.rmtree(checkpoint.parent, ignore_errors=True)
        training = result.record(evaluator.precision)
        for key, value in training.to_user_attrs().items():
            trial.set_user_attr(key, value)
        study.tell(trial, [result.accuracy, result.robustness])
    return study


@dataclass
class TransferTable:
    """Per (loss, augmentation): test accuracies and robustness over seeds, tests against cross-entropy."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    fidelity: dict[str, float] = field(default_factory=dict)
    augmentations: list[str] = field(default_factory=list)


def _p_values(values: list[float], baseline: list[float]) -> tuple[float, float]:
    welch = welch_p_value(values, baseline)
    if math.isnan(welch):
        return welch, welch
    return welch, float(stats.mannwhitneyu(values, baseline, alternative="two-sided").pvalue)


def _released_columns(
    label: str, entry: dict[str, list[float]], baseline: dict[str, list[float]]
) -> dict[str, Any]:
    """The CIFAR-C columns of a row, for runs scored on the released files: the headline mean over
    15 corruptions x 5 severities with its spread and Welch's p against cross-entropy, and the mean
    per severity ({} for runs without them)."""
    values = entry.get(TrialKey.CIFAR_C)
    if not values:
        return {}
    welch = welch_p_value(values, baseline.get(TrialKey.CIFAR_C, []))
    columns: dict[str, Any] = {
        "cifar_c": round(statistics.mean(values), 4),
        "cifar_c_std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "p_cifar_c": "" if label == BASELINE or math.isnan(welch) else f"{welch:.3g}",
    }
    for severity in SEVERITIES:
        key = f"{TrialKey.CIFAR_C}_s{severity}"
        columns[key] = round(statistics.mean(entry[key]), 4)
    return columns


def released_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Per (loss, augmentation, corruption, severity) of the runs scored on the released files: mean
    and spread of the accuracy over seeds (the per-corruption CSV of a transfer report)."""
    cells: dict[tuple[str, str, str], list[float]] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run = TransferRunRecord.from_trial(trial)
        for key, value in (run.training.released_by_corruption if run.training else {}).items():
            cells.setdefault((run.loss, run.augmentation, key), []).append(value)
    rows = []
    for (loss, augmentation, key), values in cells.items():
        corruption, severity = split_released_key(key)
        rows.append(
            {
                "loss": loss,
                "augmentation": augmentation,
                "corruption": corruption,
                "severity": severity,
                "seeds": len(values),
                "accuracy": round(statistics.mean(values), 4),
                "accuracy_std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            }
        )
    return rows


def transfer_table(
    study: optuna.Study, source: optuna.Study | None = None, top_k: int = 3, select: str = "accuracy"
) -> TransferTable:
    """Statistics of a transfer study: mean +- std, Welch's t and Mann-Whitney U p-values against
    cross-entropy, the source study of each loss, and, given the (single) ``source`` and how its
    losses were chosen, the fidelity (Spearman, Kendall) of its surrogate accuracy."""
    runs: dict[tuple[str, str], dict[str, list[float]]] = {}
    formulas: dict[str, str] = {}
    origins: dict[str, str] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run = TransferRunRecord.from_trial(trial)
        entry = runs.setdefault((run.loss, run.augmentation), {"accuracy": [], "robustness": []})
        entry["accuracy"].append(trial.values[0])
        entry["robustness"].append(trial.values[1])
        if TrialKey.CIFAR_C in trial.user_attrs:
            entry.setdefault(TrialKey.CIFAR_C, []).append(trial.user_attrs[TrialKey.CIFAR_C])
            released = run.training.released_by_corruption if run.training else {}
            for severity in SEVERITIES:
                level = [value for key, value in released.items() if split_released_key(key)[1] == severity]
                entry.setdefault(f"{TrialKey.CIFAR_C}_s{severity}", []).append(sum(level) / len(level))
        formulas[run.loss] = run.formula
        origins[run.loss] = run.source_study
    table = TransferTable(
        augmentations=sorted({augmentation for _, augmentation in runs}, key=AUGMENTATIONS.index)
    )
    baseline_first = sorted(runs.items(), key=lambda item: (item[0][0] != BASELINE, item[0]))
    for (label, augmentation), entry in baseline_first:
        baseline = runs.get((BASELINE, augmentation), {"accuracy": [], "robustness": []})
        welch, mann_whitney = _p_values(entry["accuracy"], baseline["accuracy"])
        spread = lambda values: statistics.stdev(values) if len(values) > 1 else 0.0  # noqa: E731
        table.rows.append(
            {
                "loss": label,
                "augmentation": augmentation,
                "seeds": len(entry["accuracy"]),
                "test_accuracy": round(statistics.mean(entry["accuracy"]), 4),
                "accuracy_std": round(spread(entry["accuracy"]), 4),
                "robustness": round(statistics.mean(entry["robustness"]), 4),
                "robustness_std": round(spread(entry["robustness"]), 4),
                "p_welch": "" if label == BASELINE or math.isnan(welch) else f"{welch:.3g}",
                "p_mann_whitney": ""
                if label == BASELINE or math.isnan(mann_whitney)
                else f"{mann_whitney:.3g}",
                **_released_columns(label, entry, baseline),
                "source": origins[label],
                "formula": formulas[label],
            }
        )
    if source is not None:
        surrogate = transfer_labels(source, top_k, select)
        pairs = [
            (surrogate[row["loss"]], row["test_accuracy"])
            for row in table.rows
            if surrogate.get(row["loss"]) is not None
        ]
        if len(pairs) >= 3:
            x, y = zip(*pairs)
            table.fidelity = {
                "losses": len(pairs),
                "spearman": float(stats.spearmanr(x, y).statistic),
                "kendall": float(stats.kendalltau(x, y).statistic),
            }
    return table
