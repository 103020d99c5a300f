"""What the stages of one experiment run share, built once and handed down."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from optuna.storages import BaseStorage

from optiloss.data import ImageSplits
from optiloss.devices import resolve_device
from optiloss.experiment.file import Experiment
from optiloss.genome import Genome
from optiloss.genome.named import named_losses
from optiloss.scoring import DataFor, conditioned, load_splits
from optiloss.settings import RunSettings
from optiloss.storage import open_storage, resolve_storage_url


def data_key(settings: RunSettings) -> tuple[Any, ...]:
    """What :func:`~optiloss.scoring.load_data` reads of ``settings``: two settings with the same key
    load the same data."""
    return (
        settings.dataset,
        settings.validation_fraction,
        settings.data_root,
        settings.image_size,
        settings.subset,
    )


@dataclass
class RunContext:
    """One experiment run's shared state (:meth:`open`): the storage, opened (tables made) once; the
    losses given by hand, parsed and screened once (those a stage's table adds: once each, by
    :meth:`parsed_losses`); devices resolved once; and each data set loaded
    once, its conditions applied once per conditions, and copied to each device once (:meth:`data_on`),
    whichever stages read it."""

    experiment: Experiment
    storage_url: str
    storage: BaseStorage
    given: dict[str, Genome]
    progress: bool = True
    log: Callable[[str], None] = print
    search_hooks: Any = None
    _devices: dict[str, torch.device] = field(default_factory=dict, repr=False)
    _data: dict[tuple[Any, ...], ImageSplits] = field(default_factory=dict, repr=False)
    _parsed: dict[tuple[str, str], Genome] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name, genome in self.given.items():
            self._parsed[(name, self.experiment.losses[name])] = genome

    @classmethod
    def open(
        cls,
        experiment: Experiment,
        storage_url: str | None = None,
        *,
        progress: bool = True,
        log: Callable[[str], None] = print,
        search_hooks: Any = None,
    ) -> RunContext:
        """The context of a run of ``experiment`` on the storage at ``storage_url`` (created if new)."""
        url = resolve_storage_url(storage_url)
        given = named_losses(experiment.losses, experiment.search.nodes)
        return cls(experiment, url, open_storage(url, create=True), given, progress, log, search_hooks)

    def parsed_losses(self, formulas: Mapping[str, str]) -> dict[str, Genome]:
        """``formulas`` (name -> formula, e.g. a ``[[transfer]]`` table's ``losses``: its own and the
        experiment's) parsed and screened in the search's nodes (:func:`named_losses`), in their order:
        an experiment's loss is taken from :attr:`given`, any other parsed the first time a stage asks."""
        for name, formula in formulas.items():
            if (name, formula) not in self._parsed:
                parsed = named_losses({name: formula}, self.experiment.search.nodes)
                self._parsed[(name, formula)] = parsed[name]
        return {name: self._parsed[(name, formula)] for name, formula in formulas.items()}

    def device(self, setting: str) -> torch.device:
        """The device a ``device`` setting names on this machine, resolved once per setting."""
        if setting not in self._devices:
            self._devices[setting] = resolve_device(setting)
        return self._devices[setting]

    def data_on(self, device: str) -> DataFor:
        """Where a stage gets its data on the device ``device`` names: each data set (:func:`data_key`)
        loaded the first time any stage asks for it, copied to that device once."""
        target = self.device(device)

        def data_for(settings: RunSettings, *, merge_validation: bool = False) -> ImageSplits:
            loaded = (*data_key(settings), "loaded")
            if loaded not in self._data:
                self._data[loaded] = load_splits(settings, self.progress)
            prepared = (*loaded, settings.conditions(), merge_validation)
            if prepared not in self._data:
                self._data[prepared] = conditioned(
                    self._data[loaded], settings, merge_validation=merge_validation
                )
            key = (*prepared, str(target))
            if key not in self._data:
                self._data[key] = self._data[prepared].to(target)
            return self._data[key]

        return data_for
