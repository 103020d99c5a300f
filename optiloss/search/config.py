"""Search configuration: one TOML file per study, validated before anything is written."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from optiloss.augment import ALL_AUGMENTATIONS, AUGMENTATIONS, AugmentSettings
from optiloss.data import DATASETS, is_dataset_name
from optiloss.errors import UsageError


@dataclass(frozen=True)
class SearchConfig:
    """Every knob of a search. ``study_name`` defaults to ``{dataset}-{augmentation}``."""

    dataset: str = "digits"
    data_root: str | None = None
    image_size: int | None = None
    subset: int | None = None
    download: bool = False
    augmentation: str = "base"
    study_name: str | None = None
    n_trials: int = 30
    population_size: int = 10
    nodes: int = 5
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 5e-4
    model_width: int = 32
    validation_fraction: float = 0.2
    corruption_severity: int = 3
    # the pipelines' parameters, flat in the TOML; defaults are AugmentSettings' own
    hflip: bool = AugmentSettings.hflip
    crop_padding: int | None = AugmentSettings.crop_padding
    cutout_size: int | None = AugmentSettings.cutout_size
    mixup_alpha: float = AugmentSettings.mixup_alpha
    randaug_n: int = AugmentSettings.randaug_n
    randaug_m: int = AugmentSettings.randaug_m
    seed: int = 0
    device: str = "auto"
    max_consecutive_rejections: int = 2000
    workers: int = 1
    heartbeat_interval: int = 10
    grace_period: int = 60
    max_retry: int = 3
    checkpoint_dir: str = "storage/checkpoints"
    artifacts: bool = True
    artifact_dir: str = "storage/artifacts"
    compile: bool = False
    mixed_precision: bool = True
    deterministic: bool = False

    @property
    def resolved_study_name(self) -> str:
        """``study_name``, else ``{dataset}-{augmentation}`` (``folder-{folder name}-…`` for folder sets)."""
        if self.study_name:
            return self.study_name
        dataset = self.dataset
        if dataset.startswith("folder:"):
            dataset = "folder-" + (Path(dataset[len("folder:"):]).expanduser().resolve().name or "root")
        return f"{dataset}-{self.augmentation}"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def augment_settings(self) -> AugmentSettings:
        return AugmentSettings(**{field.name: getattr(self, field.name) for field in fields(AugmentSettings)})

    def per_augmentation(self) -> list["SearchConfig"]:
        """One config per study: itself, or for ``all5`` one per augmentation, named ``{name}-{augmentation}``."""
        if self.augmentation != ALL_AUGMENTATIONS:
            return [self]
        return [dataclasses.replace(self, augmentation=augmentation,
                                    study_name=f"{self.study_name}-{augmentation}" if self.study_name else None)
                for augmentation in AUGMENTATIONS]


# key -> (minimum, maximum) for numbers, or the allowed values for strings
_LIMITS: dict[str, tuple[float, float | None] | tuple[str, ...]] = {
    "image_size": (8, 512),
    "subset": (20, None),
    "augmentation": (*AUGMENTATIONS, ALL_AUGMENTATIONS),
    "crop_padding": (0, 256),
    "cutout_size": (1, 512),
    "mixup_alpha": (1e-3, 100.0),
    "randaug_n": (1, 14),
    "randaug_m": (1, 29),
    "n_trials": (1, None),
    "population_size": (2, None),
    "nodes": (4, 32),
    "epochs": (1, None),
    "batch_size": (2, None),
    "learning_rate": (1e-8, 10.0),
    "weight_decay": (0.0, 1.0),
    "model_width": (1, 1024),
    "validation_fraction": (0.01, 0.9),
    "corruption_severity": (1, 5),
    "seed": (0, 2**31 - 1),
    "device": ("auto", "cpu", "cuda"),
    "max_consecutive_rejections": (1, None),
    "workers": (1, 64),
    "heartbeat_interval": (1, 3600),
    "grace_period": (2, 86400),
    "max_retry": (0, 100),
}
_TYPES = {field.name: field.type for field in fields(SearchConfig)}
_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
               "str | None": "a string", "int | None": "an integer"}


def _check(source: str, key: str, value: Any) -> Any:
    kind = _TYPES[key]
    where = f"{source}: {key}"
    if value is None and kind.endswith("| None"):
        return value
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool),
          "int | None": isinstance(value, int) and not isinstance(value, bool),
          "str": isinstance(value, str), "str | None": isinstance(value, str)}[kind]
    if not ok:
        raise UsageError(f"{where} must be {_TYPE_WORDS[kind]}, got {value!r}")
    if kind == "float":
        value = float(value)
    if key == "dataset" and not is_dataset_name(value):
        raise UsageError(f"{where} must be one of {', '.join(DATASETS)}, got {value!r}")
    limits = _LIMITS.get(key)
    if isinstance(limits, tuple) and limits and isinstance(limits[0], str):
        if value not in limits:
            raise UsageError(f"{where} must be one of {', '.join(limits)}, got {value!r}")
    elif limits is not None:
        low, high = limits
        if value < low or (high is not None and value > high):
            allowed = f">= {low}" if high is None else f"between {low} and {high}"
            raise UsageError(f"{where} must be {allowed}, got {value!r}")
    return value


def make_config(values: Mapping[str, Any], source: str = "config") -> SearchConfig:
    """Validate ``values`` (unknown keys, types, ranges) and build a config.

    Raises :class:`UsageError` with one line naming the key and what is allowed.
    """
    unknown = sorted(set(values) - set(_TYPES))
    if unknown:
        raise UsageError(f"{source}: unknown key {unknown[0]!r}; allowed keys: {', '.join(_TYPES)}")
    checked = {key: _check(source, key, value) for key, value in values.items()}
    config = SearchConfig(**checked)
    if config.grace_period <= config.heartbeat_interval:
        raise UsageError(f"{source}: grace_period must be longer than heartbeat_interval "
                         f"({config.grace_period} <= {config.heartbeat_interval})")
    return config


def read_toml(path: str | Path | None) -> dict[str, Any]:
    """The table of a TOML file ({} for None); a missing or malformed file is a :class:`UsageError`."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML ({error})") from None


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """Read a study TOML (or the defaults when ``path`` is None) and apply ``overrides``.

    Overrides whose value is None are ignored, so CLI options can be passed through as they are.
    """
    values = read_toml(path)
    source = str(path) if path is not None else "defaults"
    make_config(values, source)  # the file alone must be valid, so errors name the file
    merged = {**values, **{key: value for key, value in (overrides or {}).items() if value is not None}}
    return make_config(merged, source if not overrides else f"{source} with options")
