"""Retraining a search's Pareto set with new seeds (``optiloss recheck``), to see which members were luck."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage

from optiloss.devices import resolve_device
from optiloss.errors import OptilossError
from optiloss.genome import BASELINE, Genome, baseline_genome
from optiloss.genome.genome import DEFAULT_NODES
from optiloss.genome.named import named_losses
from optiloss.ledger import RunLedger, Trainer, ledgered_scores
from optiloss.records import SearchTrialRecord, StudyKey, TransferRunRecord, loss_label
from optiloss.scoring import RECHECK_SEED_STRIDE, DataFor, Evaluation, LossEvaluator, loader
from optiloss.settings import RecheckSettings, SearchConfig
from optiloss.statistics import ALPHA, Comparison, holm, sample_std, significant
from optiloss.storage import storage_from
from optiloss.studies import found_and_zoo, load_study, pareto_trials, trial_genome


@dataclass(frozen=True)
class RecheckedLoss:
    """A loss recheck retrains: its search trial's number and scores (None for a loss that is no trial
    of the study), its name (zoo, given, else empty) and oriented genome."""

    trial: int | None
    name: str
    genome: Genome
    search_accuracy: float | None = None
    search_robustness: float | None = None

    @property
    def label(self) -> str:
        """How a ledger and a report name it: its name, else ``trial_<number>``."""
        return loss_label(self.trial, self.name)


def search_config(study: optuna.Study) -> SearchConfig:
    """The stored config of a search study; a study without one is an :class:`OptilossError`."""
    if StudyKey.CONFIG not in study.user_attrs:
        raise OptilossError(
            f"study {study.study_name!r} is not an optiloss search study (no config user attr)"
        )
    return SearchConfig.from_mapping(study.user_attrs[StudyKey.CONFIG], f"study {study.study_name} config")


def rechecked_losses(study: optuna.Study, given: dict[str, Genome]) -> list[RecheckedLoss]:
    """What :func:`recheck` retrains: the Pareto set, the ``given`` losses, cross-entropy, and the two
    losses a claim compares, which the Pareto set may leave out (a zoo loss can dominate them): the
    search's most accurate loss of its own and the most accurate zoo loss besides cross-entropy (the
    best known loss of this setting); each structure once."""
    found, best_zoo = found_and_zoo(study)
    chosen = []
    for trial in pareto_trials(study) + found[:1] + best_zoo[:1]:
        record = SearchTrialRecord.from_trial(trial)
        genome = trial_genome(study, trial)
        chosen.append(
            RecheckedLoss(trial.number, record.shown_name, genome, trial.values[0], record.robustness)
        )
    chosen += [RecheckedLoss(None, name, genome) for name, genome in given.items()]
    cross_entropy = baseline_genome(study.user_attrs.get(StudyKey.NODES) or DEFAULT_NODES)
    chosen.append(RecheckedLoss(None, BASELINE, cross_entropy))
    unique: dict[str, RecheckedLoss] = {}
    for loss in chosen:
        unique.setdefault(loss.genome.structure_hash, loss)
    return list(unique.values())


def recheck_seed(config: SearchConfig, index: int) -> int:
    """The seed of recheck's run ``index`` (0, 1, ...): neither the search's nor the noise floor's."""
    return config.seed + RECHECK_SEED_STRIDE * (index + 1)


def recheck(
    study_name: str,
    storage_url: str | BaseStorage | None = None,
    seeds: int = RecheckSettings.seeds,
    *,
    device: str = "auto",
    losses: Mapping[str, str] | Mapping[str, Genome] | None = None,
    progress: bool = True,
    ledger: str | None = None,
    data_for: DataFor | None = None,
) -> list[dict[str, Any]]:
    """One row per loss of :func:`rechecked_losses` (the Pareto set, ``losses`` given as name ->
    formula, cross-entropy, the best loss of the search's own and the best zoo loss; ``trial`` None
    where the loss is no trial of the study; ``loss``: its name): the search's scores (None where it
    has none) next to the mean and spread of ``seeds`` retrainings with the study's stored settings,
    and each loss's accuracy against cross-entropy's retrained with the same seeds (``vs_ce``: the
    difference in its standard deviations; ``p_welch``, and ``p_holm`` corrected for the number of
    losses compared).

    Without ``ledger`` it writes nothing to the storage. With it, each finished training is kept in the
    :class:`~optiloss.ledger.RunLedger` study of that name, so a rerun after a stop trains only the
    runs that did not finish.
    ``storage_url`` may be a storage already open, ``losses`` genomes already parsed
    (:func:`~optiloss.genome.named.named_losses`), and ``data_for`` where the data come from (default
    :func:`~optiloss.scoring.load_data`): an experiment run hands down what it holds.
    """
    storage = storage_from(storage_url)
    study = load_study(storage, study_name)
    config = search_config(study)
    given = named_losses(losses or {}, config.nodes)
    entries = rechecked_losses(study, given)
    kept = RunLedger(storage, ledger, "recheck") if ledger else None
    runs = {
        (entry.label, k): TransferRunRecord(
            entry.label, config.augmentation, k, entry.genome.formula, study_name
        )
        for entry in entries
        for k in range(seeds)
    }

    def trainer() -> Trainer[tuple[str, int]]:
        target = resolve_device(device)
        evaluator = LossEvaluator.for_search(
            config, (data_for or loader(progress))(config).to(target), target
        )
        augmentation = evaluator.augmentation(config.augmentation)
        genomes = {entry.label: entry.genome for entry in entries}

        def train(key: tuple[str, int]) -> Evaluation:
            label, k = key
            return evaluator.evaluate(genomes[label], augmentation, recheck_seed(config, k))

        return train, evaluator.precision

    scores = ledgered_scores(runs, kept, trainer, description="rechecking the Pareto set", progress=progress)
    reference = baseline_genome(config.nodes).structure_hash
    baseline_label = next(entry.label for entry in entries if entry.genome.structure_hash == reference)
    baseline = [scores[(baseline_label, k)].accuracy for k in range(seeds)]
    rows = []
    p_values = []
    spread = sample_std(baseline)
    for entry in entries:
        accuracies = [scores[(entry.label, k)].accuracy for k in range(seeds)]
        robustness = [scores[(entry.label, k)].robustness for k in range(seeds)]
        is_baseline = entry.label == baseline_label
        p = math.nan if is_baseline else Comparison.of(accuracies, baseline, entry.label, BASELINE).p
        p_values.append(p)
        rows.append(
            {
                "trial": entry.trial,
                "loss": entry.name,
                "search_accuracy": None if entry.search_accuracy is None else round(entry.search_accuracy, 4),
                "recheck_accuracy": round(statistics.mean(accuracies), 4),
                "recheck_std": round(sample_std(accuracies), 4),
                "vs_ce": f"{(statistics.mean(accuracies) - statistics.mean(baseline)) / spread:+.1f} sd"
                if spread > 0
                else None,
                "p_welch": None if math.isnan(p) else float(f"{p:.3g}"),
                "p_holm": None,
                "search_robustness": None
                if entry.search_robustness is None
                else round(entry.search_robustness, 4),
                "recheck_robustness": round(statistics.mean(robustness), 4),
                "formula": entry.genome.formula,
            }
        )
    for row, adjusted in zip(rows, holm(p_values)):
        row["p_holm"] = None if math.isnan(adjusted) else float(f"{adjusted:.3g}")
    return rows


def recheck_verdict(rows: list[dict[str, Any]], alpha: float = ALPHA) -> str:
    """One line on the rechecked losses against cross-entropy, after Holm's correction for comparing
    several losses at once (``p_holm``); only a loss below ``alpha`` there differs beyond chance."""
    compared = [row for row in rows if row["p_holm"] is not None]
    if not compared:
        return "no p-values: recheck with --seeds 3 or more (and cross-entropy's runs must spread)"
    baseline = next((row for row in rows if row["loss"] == BASELINE), None)
    mean = baseline["recheck_accuracy"] if baseline else None
    differing = [row for row in compared if significant(row["p_holm"], alpha)]
    count = f"{len(compared)} loss(es) compared with cross-entropy, Holm's correction"
    if not differing:
        smallest = min(row["p_holm"] for row in compared)
        return (
            f"{count}: none differs at p < {alpha:g} (smallest corrected p {smallest:.3g}): "
            "not better than cross-entropy here"
        )
    described = []
    for row in differing:
        name = row["loss"] or f"trial {row['trial']}"
        side = "better" if mean is not None and row["recheck_accuracy"] > mean else "worse"
        described.append(f"{name} {side} (p_holm {row['p_holm']:.3g})")
    return f"{count}: " + "; ".join(described) + " than cross-entropy"
