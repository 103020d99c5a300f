"""The loss x augmentation matrix: does the best loss depend on the augmentation?

Takes the best losses of each augmentation study of a data set (plus
cross-entropy), retrains every one of them under every augmentation with
several seeds, and tabulates validation accuracy (mean and standard deviation).
This measures the paper's central claim with the tool itself.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import optuna
from optuna.storages import BaseStorage
from tqdm.auto import tqdm

from optiloss.augment import AUGMENTATIONS
from optiloss.devices import resolve_device
from optiloss.errors import OptilossError
from optiloss.genome import Genome, screen, zoo
from optiloss.genome.named import named_losses
from optiloss.ledger import RunLedger, score_unrecorded
from optiloss.records import SearchTrialRecord, StudyKey, TransferRunRecord
from optiloss.scoring import Evaluation, LossEvaluator, load_data
from optiloss.settings import SearchConfig
from optiloss.storage import open_storage
from optiloss.studies import load_study, select_trials, trial_genome


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
        return [
            {
                "loss": label,
                **{augmentation: self.cell(label, augmentation) for augmentation in self.augmentations},
                "formula": formula,
            }
            for label, formula in self.losses.items()
        ]


def augmentation_studies(storage: BaseStorage, dataset: str) -> dict[str, optuna.Study]:
    """The search study of each augmentation for ``dataset`` (``{dataset}-{augmentation}`` preferred)."""
    found: dict[str, optuna.Study] = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = summary.user_attrs
        augmentation = attrs.get(StudyKey.AUGMENTATION)
        if attrs.get(StudyKey.DATASET) != dataset or augmentation not in AUGMENTATIONS:
            continue
        if augmentation not in found or summary.study_name == f"{dataset}-{augmentation}":
            found[augmentation] = optuna.load_study(study_name=summary.study_name, storage=storage)
    return found


def matrix_losses(
    studies: dict[str, optuna.Study], top_k: int, select: str, given: dict[str, Genome]
) -> dict[str, Genome]:
    """Cross-entropy, the top-k of each study (:func:`~optiloss.studies.select_trials`) and the
    ``given`` losses; a loss whose structure is already chosen is dropped."""
    chosen: dict[str, Genome] = {"cross_entropy": screen(zoo()["cross_entropy"]).genome}
    seen = {chosen["cross_entropy"].structure_hash}
    for augmentation, study in studies.items():
        taken = 0
        for trial in select_trials(study, top_k + len(seen), select):  # enough to skip the seen ones
            genome = trial_genome(study, trial)
            if genome.structure_hash in seen:
                continue
            seen.add(genome.structure_hash)
            chosen[SearchTrialRecord.from_trial(trial).zoo or f"{augmentation}#{trial.number}"] = genome
            taken += 1
            if taken == top_k:
                break
    for name, genome in given.items():
        if genome.structure_hash not in seen:
            seen.add(genome.structure_hash)
            chosen[name] = genome
    return chosen


def loss_augmentation_matrix(
    dataset: str,
    storage_url: str | None = None,
    *,
    top_k: int = 1,
    seeds: int = 2,
    device: str = "auto",
    select: str = "accuracy",
    losses: dict[str, str] | None = None,
    progress: bool = True,
    study_names: dict[str, str] | None = None,
    ledger: str | None = None,
) -> MatrixResult:
    """Retrain the best losses of ``dataset``'s augmentation studies, and ``losses`` (name ->
    formula), under every augmentation.

    The studies are found by their dataset (:func:`augmentation_studies`) unless ``study_names``
    (augmentation -> study) names them. Training settings come from the studies' stored config.
    With ``ledger``, each finished training is kept in the :class:`~optiloss.ledger.RunLedger` study
    of that name and a rerun trains only the runs that did not finish; without it nothing is written.
    Raises :class:`OptilossError` when the storage holds no study for ``dataset``.
    """
    storage = open_storage(storage_url, create=False)
    if study_names:
        studies = {augmentation: load_study(storage, name) for augmentation, name in study_names.items()}
    else:
        studies = augmentation_studies(storage, dataset)
    if not studies:
        raise OptilossError(
            f"no search study for dataset {dataset!r} in this storage; "
            f"run `optiloss search --dataset {dataset} --augmentation all5` first"
        )
    first = next(iter(studies.values()))
    config = SearchConfig.from_mapping(first.user_attrs[StudyKey.CONFIG], f"study {first.study_name} config")
    chosen = matrix_losses(studies, top_k, select, named_losses(losses or {}, config.nodes))
    result = MatrixResult(dataset, {label: genome.formula for label, genome in chosen.items()}, AUGMENTATIONS)
    runs = {
        (label, augmentation, seed): TransferRunRecord(label, augmentation, seed, chosen[label].formula)
        for label in chosen
        for augmentation in AUGMENTATIONS
        for seed in range(seeds)
    }
    kept = RunLedger(storage, ledger, "matrix") if ledger else None
    scores = {
        key: kept.finished[record.run] for key, record in runs.items() if kept and record.run in kept.finished
    }
    missing = [key for key in runs if key not in scores]
    if missing:
        target = resolve_device(device)
        evaluator = LossEvaluator.for_search(config, load_data(config, progress).to(target), target)
        pipelines = {augmentation: evaluator.augmentation(augmentation) for augmentation in AUGMENTATIONS}
        for label, augmentation, seed in tqdm(missing, desc="matrix runs", unit="run", disable=not progress):

            def train(label: str = label, augmentation: str = augmentation, seed: int = seed) -> Evaluation:
                return evaluator.evaluate(chosen[label], pipelines[augmentation], config.seed + 1000 * seed)

            record = runs[(label, augmentation, seed)]
            scores[(label, augmentation, seed)] = (
                kept.score(record, train, evaluator.precision) if kept else score_unrecorded(train)
            )
    for label, augmentation, seed in runs:
        result.accuracies.setdefault((label, augmentation), []).append(
            scores[(label, augmentation, seed)].accuracy
        )
    return result
