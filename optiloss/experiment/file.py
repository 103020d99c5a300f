"""The experiment file: its tables as :class:`~optiloss.settings.Settings` classes, checked once
(:func:`load_experiment`); every mistake is one :class:`UsageError` naming the key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optiloss.augment import AUGMENTATIONS
from optiloss.errors import UsageError
from optiloss.genome.named import named_losses
from optiloss.settings import (
    MatrixSettings,
    RecheckSettings,
    SearchConfig,
    Settings,
    TransferConfig,
    check_losses,
    read_toml,
    refuse_unknown,
    setting,
)
from optiloss.transfer import transfer_study_name

SEARCH = "search"
RECHECK = "recheck"
MATRIX = "matrix"
ABLATION = "ablation"
"""The stages the file names by its tables; a ``[[transfer]]`` stage is named by its ``name``."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TOP_KEYS = ("name", "search", "recheck", "transfer", "matrix", "losses", "ablation")


@dataclass(frozen=True)
class AblationSettings(Settings):
    """The ``[ablation]`` table."""

    seeds: int = setting(
        0,
        limits=(0, 100),
        help="fresh seeds per variant of each study's best found loss (0: no ablation stage)",
    )


@dataclass(frozen=True)
class TransferSpec:
    """One ``[[transfer]]`` table: its stage name, the transfer keys (a transfer TOML's, ``file``, and
    the table's own), the augmentations it trains under, and whether the studies' losses are pooled."""

    name: str
    values: Mapping[str, Any]
    augmentations: tuple[str, ...]
    pooled: bool
    source: str

    def config(self, augmentation: str) -> TransferConfig:
        """The transfer settings under ``augmentation`` (built from the keys, so that the keys the file
        sets, and only those, override the source study's augmentation settings)."""
        return TransferConfig.from_mapping({**self.values, "augmentation": augmentation}, self.source)


@dataclass(frozen=True)
class TransferRun:
    """One call of :func:`~optiloss.transfer.run_transfer` in a transfer stage."""

    augmentation: str
    sources: tuple[str, ...]
    config: TransferConfig

    @property
    def study_name(self) -> str:
        return transfer_study_name(
            list(self.sources) if len(self.sources) > 1 else self.sources[0], self.config
        )


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file (:func:`load_experiment`)."""

    name: str
    path: Path
    text: str
    search: SearchConfig
    augmentations: tuple[str, ...]
    recheck: RecheckSettings
    transfers: tuple[TransferSpec, ...]
    matrix: MatrixSettings
    losses: dict[str, str] = field(default_factory=dict)
    ablation: AblationSettings = field(default_factory=AblationSettings)

    def stages(self) -> list[str]:
        """The stage names in the order they run (:func:`optiloss.experiment.stages.stages_of`)."""
        from optiloss.experiment.stages import stages_of

        return [stage.name for stage in stages_of(self)]

    def study_name(self, augmentation: str) -> str:
        """``{prefix}-{augmentation}``, the prefix being ``[search] study_name`` or the experiment's name."""
        return f"{self.search.study_name or self.name}-{augmentation}"

    def study_names(self) -> dict[str, str]:
        return {augmentation: self.study_name(augmentation) for augmentation in self.augmentations}

    def search_config(self, augmentation: str) -> SearchConfig:
        return self.search.replace(augmentation=augmentation, study_name=self.study_name(augmentation))

    def recheck_ledger(self, augmentation: str) -> str:
        return f"{self.study_name(augmentation)}-recheck"

    def ablation_ledger(self, augmentation: str) -> str:
        return f"{self.study_name(augmentation)}-ablation"

    @property
    def matrix_ledger(self) -> str:
        """``{name}-matrix-{split}``: a matrix scored on another split (or by an older version, which
        scored on validation with the searches' own seed) is kept apart, never mixed in."""
        return f"{self.name}-matrix-{self.matrix.split}"

    def all_study_names(self) -> list[str]:
        """Every study the experiment writes: searches, recheck ledgers, transfer studies, ablation
        ledgers, the matrix's."""
        names = list(self.study_names().values())
        names += [self.recheck_ledger(augmentation) for augmentation in self.augmentations]
        names += [run.study_name for stage in self.transfers for run in self.transfer_runs(stage)]
        names += [self.ablation_ledger(augmentation) for augmentation in self.augmentations]
        return [*names, self.matrix_ledger]

    def transfer_runs(self, stage: TransferSpec) -> list[TransferRun]:
        """The transfer studies of ``stage``: per augmentation, that augmentation's study (or, pooled,
        every study) as the source."""
        studies = self.study_names()
        runs = []
        for augmentation in stage.augmentations:
            sources = tuple(studies.values()) if stage.pooled else (studies[augmentation],)
            runs.append(TransferRun(augmentation, sources, stage.config(augmentation)))
        return runs


def load_experiment(path: str | Path) -> Experiment:
    """Read and check an experiment file; every mistake is one :class:`UsageError` naming the key.

    ``file`` keys are read relative to the experiment file's folder.
    """
    path = Path(path)
    values = read_toml(path, "experiment file")
    where = str(path)
    refuse_unknown(where, values, _TOP_KEYS)
    name = values.get("name", path.stem)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(f"{where}: name must be letters, digits, '.', '_' or '-', got {name!r}")
    losses = check_losses(f"{where}: losses", values.get("losses", {}))
    search_table = dict(_table(where, values, "search"))
    if "augmentation" in search_table:
        raise UsageError(
            f'{where}: [search] augmentation: an experiment lists its searches, augmentations = ["base", ...]'
        )
    augmentations = _augmentations(
        f"{where}: [search] augmentations", search_table.pop("augmentations", None)
    )
    search_values = _with_file(where, "search", search_table, path.parent)
    search_values.pop("augmentation", None)  # a study file's own; the experiment lists its augmentations
    search_values["losses"] = {**search_values.get("losses", {}), **losses}
    search = SearchConfig.from_mapping(
        {**search_values, "augmentation": augmentations[0]}, f"{where} [search]"
    )
    named_losses(search.losses, search.nodes)  # a bad formula is refused now, not after the search
    recheck = RecheckSettings.from_mapping(_table(where, values, "recheck"), f"{where} [recheck]")
    matrix = MatrixSettings.from_mapping(_table(where, values, "matrix"), f"{where} [matrix]")
    transfers = _transfer_stages(where, values.get("transfer", []), augmentations, losses, path.parent)
    ablation = AblationSettings.from_mapping(_table(where, values, "ablation"), f"{where} [ablation]")
    return Experiment(
        name,
        path,
        path.read_text(),
        search,
        augmentations,
        recheck,
        transfers,
        matrix,
        losses,
        ablation,
    )


def _table(where: str, values: Mapping[str, Any], key: str) -> dict[str, Any]:
    table = values.get(key, {})
    if not isinstance(table, Mapping):
        raise UsageError(f"{where}: {key} must be a table ([{key}]), got {table!r}")
    return dict(table)


def _augmentations(where: str, value: Any, default: tuple[str, ...] = AUGMENTATIONS) -> tuple[str, ...]:
    if value is None:
        return default
    if (
        not isinstance(value, list)
        or not value
        or any(item not in AUGMENTATIONS for item in value)
        or len(set(value)) != len(value)
    ):
        raise UsageError(
            f"{where} must be a list of distinct augmentations among "
            f"{', '.join(AUGMENTATIONS)}, got {value!r}"
        )
    return tuple(value)


def _with_file(where: str, table_name: str, table: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The table's keys over those of the TOML its ``file`` key names (relative to ``folder``)."""
    file = table.pop("file", None)
    if file is None:
        return table
    if not isinstance(file, str):
        raise UsageError(f"{where}: [{table_name}] file must be a path string, got {file!r}")
    target = folder / file
    if target.is_dir():
        raise UsageError(f"{where}: [{table_name}] file {str(target)!r} is a folder, not a TOML file")
    if not target.is_file():
        raise UsageError(f"{where}: [{table_name}] file {str(target)!r} does not exist")
    return {**read_toml(target), **table}


def _transfer_stages(
    where: str, tables: Any, augmentations: tuple[str, ...], losses: dict[str, str], folder: Path
) -> tuple[TransferSpec, ...]:
    if not isinstance(tables, list) or not all(isinstance(table, Mapping) for table in tables):
        raise UsageError(f"{where}: transfer must be tables ([[transfer]]), got {tables!r}")
    stages: list[TransferSpec] = []
    trained: dict[tuple[str, str], str] = {}
    for index, table in enumerate(tables, start=1):
        table = dict(table)
        name = table.pop("name", None)
        label = f"[[transfer]] {index}"
        if (
            not isinstance(name, str)
            or not _NAME.fullmatch(name)
            or name in (SEARCH, RECHECK, MATRIX, ABLATION)
        ):
            raise UsageError(
                f"{where}: {label} needs a name (letters, digits, '.', '_', '-'; not search, recheck, "
                f"matrix or ablation), got {name!r}"
            )
        if name in [stage.name for stage in stages]:
            raise UsageError(f"{where}: two [[transfer]] stages are named {name!r}")
        source = f"{where} [transfer {name}]"
        if "augmentation" in table:
            raise UsageError(f'{source}: augmentation: a stage lists its own, augmentations = ["base", ...]')
        stage_augmentations = _augmentations(
            f"{source} augmentations", table.pop("augmentations", None), augmentations
        )
        missing = [item for item in stage_augmentations if item not in augmentations]
        if missing:
            raise UsageError(
                f"{source} augmentations: {missing[0]!r} has no search in [search] augmentations"
            )
        pooled = table.pop("pooled", False)
        if not isinstance(pooled, bool):
            raise UsageError(f"{source} pooled must be true or false, got {pooled!r}")
        values = _with_file(where, f"transfer {name}", table, folder)
        values.pop("augmentation", None)
        values["losses"] = {**values.get("losses", {}), **losses}
        stage = TransferSpec(name, values, stage_augmentations, pooled, source)
        config = stage.config(stage_augmentations[0])  # every key checked once, naming the stage
        other = trained.get((config.model, config.dataset))
        if other:
            raise UsageError(
                f"{source}: stage {other!r} trains {config.model} on {config.dataset} too, and the two would "
                "share their transfer studies: give one of them another model or data set"
            )
        trained[(config.model, config.dataset)] = name
        stages.append(stage)
    return tuple(stages)
