"""Which part of a found loss does the work (``optiloss ablate``): its variants one change away,
retrained with fresh seeds on the test split.

The variants of a loss (Morgan & Hougen's suggested ablation): every active node bypassed (replaced
by each of its inputs in turn; for a unary operator that is the operator replaced by the identity),
every constant the loss reads set to 0 and to 1. Each variant is screened (:func:`optiloss.genome.screen`,
with the study's options, so it is oriented like a search trial and fingerprinted by what training
sees): a rejected one is listed, not trained; variants that behave alike (the same fingerprint: equal
up to a term without ``p``, and up to a positive scale where the surrogate's optimiser ignores it)
are one row, and one equal to the full loss is merged into it; one equal to a zoo loss is named
("without node 3 it is label_smoothing_0.1").

The full loss, each distinct variant and cross-entropy train with the same ``seeds`` fresh seeds
(those of recheck and evaluate) on the training part under the study's settings (its data
conditions included) and are scored on the test split, which no search selected on. Each variant is
compared with the full loss by Welch's test, Holm-corrected across the variants. With a ledger
(:class:`~optiloss.ledger.RunLedger`, kind ``ablate``) every finished training is kept, so a stopped
ablation trains only what is missing when run again.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from optiloss.devices import resolve_device
from optiloss.errors import OptilossError, UsageError
from optiloss.genome import BASELINE, Genome, Node, screen, zoo
from optiloss.genome.genome import constant_name, node_name
from optiloss.genome.named import named_losses
from optiloss.genome.operators import OPERATORS
from optiloss.ledger import RunLedger, Score, Trainer, ledgered_scores
from optiloss.records import StudyKey, TransferRunRecord, TrialKey
from optiloss.scoring import RECHECK_SEED_STRIDE, DataFor, Evaluation, LossEvaluator, loader
from optiloss.settings import SearchConfig
from optiloss.statistics import ALPHA, holm, sample_std, significant, welch_p_value
from optiloss.storage import open_storage, storage_from
from optiloss.studies import found_and_zoo, get_trial, load_study, trial_genome

LEDGER_KIND = "ablate"
FULL = "full"
CROSS_ENTROPY = BASELINE
IDENTITY = "max"
"""A node that passes ``x`` on as ``max(x, x)``: where the output node itself is bypassed by a leaf."""


@dataclass
class Variant:
    """One row of an ablation: the loss after ``changes`` (all giving the same behaviour), screened.

    ``key`` names its runs in the ledger (stable across reruns: ``full``, ``cross_entropy`` or
    ``v<fingerprint>``); ``named`` is the zoo loss it equals; ``rejected`` the screen's reason."""

    key: str
    genome: Genome
    changes: list[str] = field(default_factory=list)
    named: str = ""
    rejected: str | None = None

    @property
    def trained(self) -> bool:
        return self.rejected is None

    @property
    def label(self) -> str:
        """How the table names the row: full, cross_entropy, or the first change."""
        if self.key in (FULL, CROSS_ENTROPY):
            return self.key
        return self.changes[0] if self.changes else self.key


def _reference_text(genome: Genome, ref: str) -> str:
    """An input as a reader sees it: a leaf or constant as written, a node as ``node k (operator)``."""
    if ref.startswith("n"):
        return f"node {ref[1:]} ({genome.nodes[int(ref[1:])].operator})"
    if ref.startswith("c"):
        return f"{ref} = {genome.constants[int(ref[1:])]:.4g}"
    return ref


def bypassed(genome: Genome, index: int, ref: str) -> Genome:
    """``genome`` (unoriented) with node ``index`` replaced by its input ``ref``: every reader of the node
    reads ``ref`` instead; the output node becomes the node ``ref`` (or passes a leaf on as
    ``max(ref, ref)``)."""
    nodes = list(genome.nodes)
    last = len(nodes) - 1
    if index == last:
        nodes[last] = nodes[int(ref[1:])] if ref.startswith("n") else Node(IDENTITY, (ref, ref))
    else:
        target = node_name(index)
        for later in range(index + 1, len(nodes)):
            inputs = nodes[later].inputs
            nodes[later] = Node(
                nodes[later].operator, (_swap(inputs[0], target, ref), _swap(inputs[1], target, ref))
            )
    return Genome(tuple(nodes), False, genome.constants)


def _swap(value: str, old: str, new: str) -> str:
    return new if value == old else value


def one_change_away(genome: Genome) -> list[tuple[str, Genome]]:
    """(what changed, the unoriented genome) for every variant one change away from ``genome``: each
    active node bypassed by each of its inputs (a unary operator: replaced by the identity), each
    constant it reads set to 0 and to 1."""
    variants = []
    for index in genome.active_nodes:
        node = genome.nodes[index]
        arity = OPERATORS[node.operator].arity
        for ref in dict.fromkeys(node.inputs[:arity]):
            if arity == 1:
                change = f"without {node.operator} (node {index} -> identity)"
            else:
                change = f"node {index} ({node.operator}) -> its input {_reference_text(genome, ref)}"
            variants.append((change, bypassed(genome, index, ref)))
    for k in genome.constants_used:
        for value in (0.0, 1.0):
            if genome.constants[k] == value:
                continue
            constants = tuple(value if j == k else c for j, c in enumerate(genome.constants))
            change = f"{constant_name(k)} {genome.constants[k]:.4g} -> {value:g}"
            variants.append((change, Genome(genome.nodes, False, constants)))
    return variants


def zoo_fingerprints(screen_options: dict[str, bool], n_nodes: int, num_classes: int) -> dict[str, str]:
    """Fingerprint -> name of each zoo loss (the condition losses too), screened with ``screen_options``."""
    known = zoo(max(n_nodes, 6), 2, num_classes, conditions=True)
    names: dict[str, str] = {}
    for name, genome in known.items():
        result = screen(genome, **screen_options)
        if result.fingerprint is not None:
            names.setdefault(result.fingerprint, name)
    return names


def ablation_variants(
    genome: Genome, screen_options: dict[str, bool], num_classes: int = 10
) -> list[Variant]:
    """The rows of an ablation of ``genome``: the full loss first (with the changes that leave it the
    same), each distinct screened variant, cross-entropy (unless a row above is it), then the variants
    the screen rejects. A loss the screen rejects is a :class:`UsageError`."""
    full_result = screen(genome.with_orientation(False), **screen_options)
    if not full_result.accepted or full_result.fingerprint is None:
        raise UsageError(f"the loss {genome.formula} is rejected by the screen: {full_result.reason}")
    names = zoo_fingerprints(screen_options, len(genome.nodes), num_classes)
    full = Variant(FULL, full_result.genome, named=names.get(full_result.fingerprint, ""))
    by_fingerprint: dict[str, Variant] = {full_result.fingerprint: full}
    rejected: dict[str, Variant] = {}
    for change, candidate in one_change_away(genome):
        result = screen(candidate, **screen_options)
        if not result.accepted or result.fingerprint is None:
            row = rejected.setdefault(
                candidate.structure, Variant(f"x{len(rejected)}", candidate, rejected=result.reason)
            )
            row.changes.append(change)
            continue
        row = by_fingerprint.setdefault(
            result.fingerprint,
            Variant(f"v{result.fingerprint[:12]}", result.genome, named=names.get(result.fingerprint, "")),
        )
        row.changes.append(change)
    cross_entropy = screen(zoo(len(genome.nodes))[BASELINE], **screen_options)
    assert cross_entropy.fingerprint is not None
    if cross_entropy.fingerprint not in by_fingerprint:
        by_fingerprint[cross_entropy.fingerprint] = Variant(
            CROSS_ENTROPY, cross_entropy.genome, named=BASELINE
        )
    return [*by_fingerprint.values(), *rejected.values()]


def ablate_seed(config: SearchConfig, index: int) -> int:
    """Run ``index``'s seed: recheck's and evaluate's fresh seeds, never a seed the search trained with."""
    return config.seed + RECHECK_SEED_STRIDE * (index + 1)


@dataclass
class Ablation:
    """An ablation's variants and their scores by seed (``scores[key]``, empty for a rejected one)."""

    title: str
    config: SearchConfig
    variants: list[Variant]
    scores: dict[str, list[Score]]

    def rows(self) -> list[dict[str, Any]]:
        """One row per variant: what changed, its formula, accuracy and robustness mean and sd on the test
        split, the accuracy difference from the full loss in points, Welch's p and Holm's p (across the
        variants compared with the full loss)."""
        full = [score.accuracy for score in self.scores[FULL]]
        rows, p_values = [], []
        for variant in self.variants:
            runs = self.scores.get(variant.key, [])
            accuracy = [score.accuracy for score in runs]
            robustness = [score.robustness for score in runs]
            compared = bool(runs) and variant.key != FULL
            p = welch_p_value(accuracy, full) if compared else math.nan
            changes = "; ".join(variant.changes)
            row: dict[str, Any] = {
                "variant": variant.label,
                "named": variant.named,
                "formula": variant.genome.formula,
                "accuracy": round(statistics.mean(accuracy), 4) if runs else None,
                "accuracy_sd": round(sample_std(accuracy), 4) if runs else None,
                "robustness": round(statistics.mean(robustness), 4) if runs else None,
                "robustness_sd": round(sample_std(robustness), 4) if runs else None,
                "difference_points": round(100 * (statistics.mean(accuracy) - statistics.mean(full)), 2)
                if compared
                else None,
                "p_welch": None if math.isnan(p) else float(f"{p:.3g}"),
                "p_holm": None,
                "changes": f"the same loss after: {changes}" if variant.key == FULL and changes else changes,
                "note": None if runs else f"rejected by the screen: {variant.rejected}",
            }
            p_values.append(p)
            rows.append(row)
        for row, adjusted in zip(rows, holm(p_values)):
            row["p_holm"] = None if math.isnan(adjusted) else float(f"{adjusted:.3g}")
        return rows

    def verdicts(self, alpha: float = ALPHA) -> list[str]:
        """One line per change that matters (Holm's p below ``alpha``: "dropping ln costs 2.1 points,
        p 0.01"), one per variant that is a zoo loss, and a line when no change matters."""
        lines = []
        rows = self.rows()
        for variant, row in zip(self.variants, rows):
            if variant.key in (FULL, CROSS_ENTROPY) or not variant.trained:
                continue
            if variant.named:
                lines.append(f"{variant.label}: it is {variant.named}")
            if row["p_holm"] is not None and significant(row["p_holm"], alpha):
                difference = row["difference_points"]
                effect = (
                    f"costs {-difference:.1f} points" if difference < 0 else f"gains {difference:.1f} points"
                )
                lines.append(f"{variant.label} {effect}, p_holm {row['p_holm']:.2g}")
        compared = [row["p_holm"] for row in rows[1:] if row["p_holm"] is not None]
        if not compared:
            lines.append("no p-values: ablate with --seeds 3 or more (and the runs must spread)")
        elif not any(significant(p, alpha) for p in compared):
            lines.append(
                f"no single change moves accuracy beyond chance at p < {alpha:g} "
                f"(smallest Holm-corrected p {min(compared):.3g}, {self.config.dataset}, test split)"
            )
        baseline = next((row for row in rows if row["variant"] == CROSS_ENTROPY), None)
        if baseline is not None and baseline["p_holm"] is not None:
            side = "better" if baseline["difference_points"] > 0 else "worse"
            lines.append(
                f"cross-entropy is {abs(baseline['difference_points']):.1f} points {side} than the full "
                f"loss, p_holm {baseline['p_holm']:.2g}"
            )
        return lines

    def conditions(self) -> str:
        return self.config.conditions().describe()


def run_ablation(
    title: str,
    genome: Genome,
    config: SearchConfig,
    seeds: int = 3,
    *,
    ledger: RunLedger | None = None,
    source: str = "",
    progress: bool = True,
    data_for: DataFor | None = None,
) -> Ablation:
    """Train the rows of :func:`ablation_variants` with ``seeds`` fresh seeds each on ``config``'s
    surrogate and data (conditions included), scored on the test split; finished runs in ``ledger``
    are read back, not retrained; ``data_for`` where the data come from (default
    :func:`~optiloss.scoring.load_data`)."""
    if seeds < 1:
        raise UsageError("--seeds must be at least 1")
    data = (data_for or loader(progress=False))(config)
    variants = ablation_variants(genome, config.screen_options(), data.num_classes)
    trained = [variant for variant in variants if variant.trained]
    runs = {
        (variant.key, k): TransferRunRecord(
            variant.key, config.augmentation, k, variant.genome.formula, source
        )
        for variant in trained
        for k in range(seeds)
    }

    def trainer() -> Trainer[tuple[str, int]]:
        target = resolve_device(config.device)
        assert config.model_width is not None  # filled from the surrogate's defaults
        evaluator = LossEvaluator(
            data.to(target), target, config, model=config.model, model_width=config.model_width, split="test"
        )
        augmentation = evaluator.augmentation(config.augmentation)
        genomes = {variant.key: variant.genome for variant in trained}

        def train(run: tuple[str, int]) -> Evaluation:
            key, k = run
            return evaluator.evaluate(genomes[key], augmentation, ablate_seed(config, k))

        return train, evaluator.precision

    scores = ledgered_scores(runs, ledger, trainer, description="ablation runs", progress=progress)
    by_variant = {variant.key: [scores[(variant.key, k)] for k in range(seeds)] for variant in trained}
    return Ablation(title, config, variants, by_variant)


def study_config(study: optuna.Study) -> SearchConfig:
    """The stored config of a search study; a study without one is an :class:`OptilossError`."""
    if StudyKey.CONFIG not in study.user_attrs:
        raise OptilossError(
            f"study {study.study_name!r} is not an optiloss search study (no config user attr)"
        )
    return SearchConfig.from_mapping(study.user_attrs[StudyKey.CONFIG], f"study {study.study_name} config")


def ledger_name(study_name: str, trial: int) -> str:
    return f"{study_name}-ablate-trial{trial}"


def ablate_trial(
    study_name: str,
    trial: int,
    storage_url: str | None = None,
    seeds: int = 3,
    *,
    device: str | None = None,
    progress: bool = True,
) -> Ablation:
    """Ablate trial ``trial`` of the search study ``study_name`` under the study's stored settings; each
    finished training is kept in the ledger ``{study}-ablate-trial{n}`` of the same storage."""
    storage = open_storage(storage_url, create=False)
    study = load_study(storage, study_name)
    config = study_config(study)
    if device is not None:
        config = config.replace(device=device)
    genome = trial_genome(study, get_trial(study, trial))
    ledger = RunLedger(storage, ledger_name(study_name, trial), LEDGER_KIND)
    return run_ablation(
        f"{study_name} trial {trial}",
        genome,
        config,
        seeds,
        ledger=ledger,
        source=study_name,
        progress=progress,
    )


def ablate_formula(
    name: str,
    formula: str,
    config: SearchConfig,
    seeds: int = 3,
    *,
    storage_url: str | None = None,
    keep: bool = True,
    progress: bool = True,
) -> Ablation:
    """Ablate the loss ``formula`` under ``config``; with ``keep`` its finished trainings are kept in the
    ledger ``ablate-{name}-{dataset}-{augmentation}`` of ``storage_url`` (default: the default storage)."""
    genome = named_losses({name: formula}, config.nodes, None)[name]
    ledger = None
    if keep:
        ledger_study = f"ablate-{name}-{config.dataset}-{config.augmentation}"
        ledger = RunLedger(open_storage(storage_url), ledger_study, LEDGER_KIND)
    return run_ablation(name, genome, config, seeds, ledger=ledger, progress=progress)


def best_found(study: optuna.Study) -> int | None:
    """The number of the study's most accurate trial holding a loss of its own (no zoo loss), or None."""
    found, _ = found_and_zoo(study)
    return found[0].number if found else None


def ablate_best(
    study_name: str,
    storage_url: str | BaseStorage | None,
    seeds: int,
    *,
    ledger: str,
    device: str | None = None,
    progress: bool = True,
    data_for: DataFor | None = None,
) -> Ablation | None:
    """Ablate the study's most accurate loss of its own (:func:`best_found`) under its stored settings,
    its trainings kept in the ledger ``ledger`` (an experiment's ``[ablation]`` stage); None when the
    study has no such loss. ``storage_url`` may be an open storage (an experiment run's)."""
    storage = storage_from(storage_url)
    study = load_study(storage, study_name)
    number = best_found(study)
    if number is None:
        return None
    config = study_config(study)
    if device is not None:
        config = config.replace(device=device)
    genome = trial_genome(study, get_trial(study, number))
    kept = RunLedger(storage, ledger, LEDGER_KIND)
    title = f"{study_name} trial {number}"
    return run_ablation(
        title, genome, config, seeds, ledger=kept, source=study_name, progress=progress, data_for=data_for
    )


def planned_runs(study: optuna.Study | None, augmentation: str, seeds: int) -> list[str]:
    """The ledger run keys an ``[ablation]`` stage trains for ``study`` (a guess of the full loss, three
    variants and cross-entropy before the study has a loss of its own)."""
    number = best_found(study) if study is not None else None
    if study is None or number is None:
        keys = [FULL, "v0", "v1", "v2", CROSS_ENTROPY]
    else:
        config = study_config(study)
        genome = trial_genome(study, get_trial(study, number))
        variants = ablation_variants(genome, config.screen_options())
        keys = [variant.key for variant in variants if variant.trained]
    return [TransferRunRecord(key, augmentation, k, "").run for key in keys for k in range(seeds)]


def read_ablation(storage: BaseStorage, study_name: str, ledger: str) -> Ablation | None:
    """The ablation of the study's best loss of its own as the ledger ``ledger`` holds it, for a report:
    None unless every run of its first seeds (as many as the full loss has) has finished. Nothing is
    trained or written. Zoo names assume 10 classes (label smoothing's e / C)."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        kept = optuna.load_study(study_name=ledger, storage=storage)
    except KeyError:
        return None
    number = best_found(study)
    if number is None:
        return None
    config = study_config(study)
    runs = {
        trial.user_attrs[TrialKey.RUN]: Score(*trial.values)
        for trial in kept.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }
    variants = ablation_variants(trial_genome(study, get_trial(study, number)), config.screen_options())
    seeds = sum(
        1 for k in range(len(runs)) if TransferRunRecord(FULL, config.augmentation, k, "").run in runs
    )
    scores: dict[str, list[Score]] = {}
    for variant in variants:
        if not variant.trained:
            continue
        keys = [TransferRunRecord(variant.key, config.augmentation, k, "").run for k in range(seeds)]
        if not seeds or any(key not in runs for key in keys):
            return None
        scores[variant.key] = [runs[key] for key in keys]
    return Ablation(f"{study_name} trial {number}", config, variants, scores)
