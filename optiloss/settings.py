"""Settings of searches and transfer runs: one validated base, read from TOML files and options.

Every field of a settings class is a key of its TOML file. Values are checked
against the field's annotation (``int``, ``float``, ``bool``, ``str``, each
optionally ``| None``) and against the limits declared with it (:func:`setting`,
kept by a subclass that changes only the default, :func:`redefault`), so a key
means the same thing and is refused the same way (one line naming the key,
:class:`~optiloss.errors.UsageError`, exit code 2) wherever it appears. A key's
help is declared there too; the CLI builds its options from the fields
(:func:`optiloss.cli.add_setting_options`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Self

from optiloss.augment import (
    ALL_AUGMENTATIONS,
    AUGMENTATIONS,
    FLIP_MODES,
    PADDING_MODES,
    SOFT_TARGET_AUGMENTATIONS,
    SUITES,
    AugmentSettings,
    legacy_flip_mode,
)
from optiloss.data import DATASETS, is_dataset_name, resolved_image_size
from optiloss.data.conditions import NOISE_KINDS, Conditions
from optiloss.errors import UsageError
from optiloss.models import SURROGATES, surrogate_named
from optiloss.storage import ARTIFACTS_DIR
from optiloss.train import Recipe, TrainSettings, recipe_named

DEVICES = ("auto", "cpu", "cuda")
_GPU_INDEX = re.compile(r"cuda:\d+")

Limits = tuple[float, float | None] | tuple[str, ...]
"""(minimum, maximum or None) for a number, or the allowed values of a string (or of each list item)."""
SAMPLER_HELP = {
    "nsga2": "NSGA-II",
    "evolution": "the paper's regularized evolution",
    "random": "random search",
    "tpe": "multivariate TPE",
    "guided": "a predictor of the objectives from what each trained loss does picks the next",
}
"""The samplers by name, with the help each option and docs page shows (``make_sampler`` builds them)."""
SAMPLERS = tuple(SAMPLER_HELP)
SELECTIONS = ("accuracy", "pareto")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    limits: Limits | None = None,
    help: str = "",
    metavar: str | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A settings field: its default, its limits (checked wherever the key appears, TOML or option)
    and its help (the CLI option's, the docs'), declared once beside the field."""
    metadata = {"limits": limits, "help": help, "metavar": metavar}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=metadata, hash=False)
    return field(default=default, metadata=metadata)


def redefault(owner: type, name: str, default: Any) -> Any:
    """Field ``name`` of the settings class ``owner`` with another default (a subclass's), its limits
    and help kept."""
    base = next(item for item in fields(owner) if item.name == name)
    return field(default=default, metadata=base.metadata)


def field_limits(item: dataclasses.Field) -> Limits | None:
    limits: Limits | None = item.metadata.get("limits")
    return limits


@dataclass(frozen=True)
class KeyInfo:
    """What a settings key is, for a command-line option or documentation: its value type (``int``,
    ``float``, ``str``, ``bool``, ``tuple`` or ``dict``, None allowed or not), limits, help, metavar."""

    name: str
    kind: type
    limits: Limits | None
    help: str
    metavar: str | None


def key_info(owner: type, name: str) -> KeyInfo:
    """The :class:`KeyInfo` of key ``name`` of the settings class ``owner``."""
    item = next(entry for entry in fields(owner) if entry.name == name)
    annotation = _type_hints(owner)[name]
    if isinstance(annotation, types.UnionType):
        annotation = next(arg for arg in annotation.__args__ if arg is not type(None))
    kind = typing.get_origin(annotation) or annotation
    return KeyInfo(
        name, kind, field_limits(item), item.metadata.get("help", ""), item.metadata.get("metavar")
    )


UNSET_MEANS = {
    "data_root": "$OPTILOSS_DATA or ~/.cache/optiloss/data",
    "image_size": "native (digits 8, CIFAR 32); other sets 64, a folder of square images up to 64 px its own",
    "subset": "all training images",
    "crop_padding": "4 px at 32 px, scaled with the image",
    "cutout_size": "16 px at 32 px, scaled with the image",
    "corruption_severities": "[corruption_severity]",
    "study_name": "{dataset}-{augmentation}",
    "tournament_size": "a fifth of population_size, at least 2",
}
"""What a key left unset (None) means, where its help does not say it."""


def default_text(owner: type, name: str) -> str:
    """Key ``name``'s default in the settings class ``owner``, as a TOML user writes it (``true``,
    ``["accuracy", "robustness"]``); an unset key says what it means (the surrogate's value, the native
    size), so a CLI option's help and the configuration page show the same default."""
    item = next(entry for entry in fields(owner) if entry.name == name)
    if item.default_factory is not dataclasses.MISSING:
        value = item.default_factory()
    else:
        value = item.default
    if value is None:
        if name in SURROGATE_DEFAULTS.get("cnn", {}):
            return "the surrogate's: " + ", ".join(
                f"{model} {values[name]:g}" for model, values in SURROGATE_DEFAULTS.items()
            )
        return UNSET_MEANS.get(name, "none")
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "none" if not value else str(value)
    if isinstance(value, float):
        return f"{value:.1f}" if value.is_integer() else f"{value:g}"
    return str(value)


_DEFAULT_NOTE = re.compile(r"\s*\((?:the )?default:? [^()]*(?:\([^()]*\)[^()]*)*\)|\s*\(default\)")


def help_without_default(text: str) -> str:
    """A key's help without the "(default: ...)" note some helps carry: the option's help and the
    configuration page give the default from :func:`default_text`."""
    return _DEFAULT_NOTE.sub("", text)


_TYPE_WORDS = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    tuple: "a list of strings",
    dict: "a table of strings",
}
LOSS_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def refuse_unknown(source: str, values: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    """A :class:`UsageError` naming ``source`` and the first key of ``values`` not ``allowed``."""
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise UsageError(f"{source}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")


@dataclass(frozen=True)
class Settings:
    """A validated, immutable set of keys. Subclasses add fields; :meth:`check` adds rules between keys."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(field.name for field in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "config", rules: bool = True) -> Self:
        """Validate ``values`` (unknown keys, types, ranges, and with ``rules`` the rules between keys)
        and build the settings.

        Raises :class:`UsageError` with one line naming ``source``, the key and what is allowed.
        """
        refuse_unknown(source, values, cls.keys())
        values = {key: _legacy_value(key, value) for key, value in values.items()}
        owner: type = cls  # functools.cache wants a Hashable, which mypy does not see type[Self] as
        hints = _type_hints(owner)
        declared = {item.name: item for item in fields(cls)}
        checked = {
            key: _check_value(source, key, value, hints[key], field_limits(declared[key]))
            for key, value in values.items()
        }
        settings = cls(**checked)
        if rules:
            settings.check(source)
        object.__setattr__(settings, "_given_keys", frozenset(values))
        return settings

    def given_keys(self) -> frozenset[str]:
        """The keys its file and options set (all of them for settings not built by :meth:`from_mapping`)."""
        return getattr(self, "_given_keys", frozenset(self.keys()))

    @classmethod
    def load(cls, path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> Self:
        """Read a TOML file (the defaults when ``path`` is None) and apply ``overrides``.

        Overrides whose value is None are ignored, so CLI options can be passed
        through as they are; a table (``losses``) is extended, not replaced. The file
        alone must be valid, so its errors name the file; rules between keys are checked
        on the file with the options (a fine-tuning file may leave ``weights`` to ``--weights``).
        """
        values = read_toml(path)
        source = str(path) if path is not None else "defaults"
        given = {key: value for key, value in (overrides or {}).items() if value is not None}
        cls.from_mapping(values, source, rules=not given)  # rules between keys may need an option's value
        for key, value in given.items():  # tables (the [losses]) gain the options' entries
            if isinstance(value, Mapping) and isinstance(values.get(key), Mapping):
                given[key] = {**values[key], **value}
        return cls.from_mapping({**values, **given}, f"{source} with options" if given else source)

    def check(self, source: str) -> None:
        """Rules between keys; raise :class:`UsageError` naming ``source``. The base has none."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``; its :meth:`given_keys` are this one's and the changed keys."""
        replaced = dataclasses.replace(self, **changes)
        object.__setattr__(replaced, "_given_keys", self.given_keys() | frozenset(changes))
        return replaced


@dataclass(frozen=True)
class RunSettings(Settings):
    """What every run that trains networks shares: data, augmentation, optimisation, device, checkpoints."""

    dataset: str = setting("digits", help=", ".join(DATASETS[:-1]) + " or " + DATASETS[-1])
    data_root: str | None = setting(
        None,
        metavar="DIR",
        help="where named data sets live (default: $OPTILOSS_DATA or ~/.cache/optiloss/data)",
    )
    image_size: int | None = setting(None, limits=(8, 512), metavar="PX", help="resize images to PX x PX")
    subset: int | None = setting(
        None, limits=(20, None), metavar="N", help="use a stratified subset of N training images"
    )
    download: bool = setting(
        False, help="fetch the data set with torchvision's downloader if missing (needs the network)"
    )
    augmentation: str = setting(
        "base",
        limits=(*AUGMENTATIONS, ALL_AUGMENTATIONS),
        help=", ".join(AUGMENTATIONS) + f", or {ALL_AUGMENTATIONS} for one study each",
    )
    validation_fraction: float = setting(
        0.2, limits=(0.01, 0.9), help="share of the training part held out for validation"
    )
    epochs: int = setting(10, limits=(1, None), metavar="E", help="training epochs")
    # optional here so that SearchConfig may leave them unset (None: the surrogate's value);
    # TransferConfig narrows them back, and validation reads each class's own annotation
    batch_size: int | None = setting(
        TrainSettings.batch_size, limits=(2, None), metavar="B", help="batch size"
    )
    learning_rate: float | None = setting(
        TrainSettings.learning_rate, limits=(1e-8, 100.0), metavar="LR", help="peak learning rate"
    )
    weight_decay: float | None = setting(TrainSettings.weight_decay, limits=(0.0, 1.0), help="weight decay")
    warmup_fraction: float = setting(
        TrainSettings.warmup_fraction,
        limits=(0.0, 0.9),
        help="share of the steps the AdamW recipe warms the learning rate up over",
    )
    corruption_severity: int = setting(3, limits=(1, 5), help="severity 1-5 of the robustness corruptions")
    corruption_suite: str = setting(
        "ten",
        limits=tuple(SUITES),
        help="ten (default: the corruptions every study had) or fifteen (all of CIFAR-10-C's: adds glass "
        "blur, zoom blur, elastic transform, snow and frost)",
    )
    corruption_severities: tuple[int, ...] | None = setting(
        None,
        limits=(1, 5),
        help="severities 1-5 the robustness averages over, e.g. [1, 2, 3, 4, 5] for CIFAR-10-C's full "
        "protocol (default: [corruption_severity])",
    )
    # the pipelines' parameters, flat in the TOML; defaults are AugmentSettings' own
    hflip: str = setting(AugmentSettings.hflip, limits=FLIP_MODES, help="random, alternate or none")
    crop_padding: int | None = setting(
        AugmentSettings.crop_padding, limits=(0, 256), help="translation in pixels (4 at 32 px)"
    )
    crop_padding_mode: str = setting(
        AugmentSettings.crop_padding_mode, limits=PADDING_MODES, help="constant (zeros) or reflect"
    )
    cutout_size: int | None = setting(
        AugmentSettings.cutout_size, limits=(1, 512), help="side of the erased square (16 at 32 px)"
    )
    mixup_alpha: float = setting(
        AugmentSettings.mixup_alpha, limits=(1e-3, 100.0), help="mixup's lambda ~ Beta(alpha, alpha)"
    )
    randaug_n: int = setting(AugmentSettings.randaug_n, limits=(1, 14), help="RandAugment's operations")
    randaug_m: int = setting(AugmentSettings.randaug_m, limits=(1, 29), help="RandAugment's magnitude")
    seed: int = setting(0, limits=(0, 2**31 - 1), metavar="S", help="base seed")
    device: str = setting(
        "auto", help="auto, cpu, cuda (with several workers, spread over every GPU) or cuda:N (default: auto)"
    )
    checkpoint_dir: str = setting("storage/checkpoints", help="where running trainings keep checkpoints")
    compile: bool = setting(False, help="torch.compile the model and the loss")
    mixed_precision: bool = setting(True, help="bf16 autocast and channels-last where they pay")
    deterministic: bool = setting(False, help="deterministic kernels")
    losses: dict[str, str] = setting(
        default_factory=dict, help='a table name = "formula" of losses written by hand'
    )
    # data conditions (optiloss.data.conditions): the training part only, seeded by `seed`
    label_noise_rate: float = setting(
        0.0, limits=(0.0, 0.9), help="share of training labels made wrong, 0 to 0.9 (default 0)"
    )
    label_noise_kind: str = setting(
        "symmetric",
        limits=NOISE_KINDS,
        help="symmetric (another class drawn uniformly) or asymmetric (CIFAR-10's class pairs; "
        "elsewhere each class to the next)",
    )
    noisy_validation: bool = setting(
        False, help="make the validation labels noisy too (for data without any clean labels)"
    )
    imbalance_ratio: float = setting(
        1.0,
        limits=(1.0, 1000.0),
        help="largest / smallest class of the training part, CIFAR-10-LT's exponential profile (1: balanced)",
    )

    def conditions(self) -> Conditions:
        """The data conditions of these settings, seeded by the base seed (the same for every trial)."""
        return Conditions(
            self.label_noise_rate,
            self.label_noise_kind,
            self.noisy_validation,
            self.imbalance_ratio,
            self.seed,
        )

    def severities(self) -> tuple[int, ...]:
        """The corruption severities robustness is the mean over: ``corruption_severities``, else
        ``corruption_severity`` alone (the behaviour of every study made before the list)."""
        return tuple(dict.fromkeys(self.corruption_severities or (self.corruption_severity,)))

    def augment_settings(self) -> AugmentSettings:
        return AugmentSettings(**{field.name: getattr(self, field.name) for field in fields(AugmentSettings)})

    def train_settings(self) -> TrainSettings:
        """The optimisation settings of :func:`optiloss.train.train` (the one place they are built):
        a surrogate's own recipe (:data:`optiloss.models.SURROGATES`), AdamW for every other model."""
        spec = surrogate_named(getattr(self, "model", ""))
        recipe = spec.recipe.name if spec is not None else Recipe.name
        shared = {
            field.name: getattr(self, field.name)
            for field in fields(TrainSettings)
            if hasattr(self, field.name)
        }
        return TrainSettings(recipe=recipe, **shared)


SURROGATE_DEFAULTS: dict[str, dict[str, Any]] = {
    name: dict(spec.defaults) for name, spec in SURROGATES.items()
}
"""Per surrogate, the values of the keys a search leaves unset (None)."""


@dataclass(frozen=True)
class SearchConfig(RunSettings):
    """Every knob of a search. ``study_name`` defaults to ``{dataset}-{augmentation}``.

    ``early_rejection_at`` (a share of the epochs; 0 turns it off) and ``early_rejection_ratio``:
    after that share of training, a genome whose training accuracy is below the ratio times the
    study's cross-entropy trial's at the same epoch stops and is rejected (a slow learner).

    ``screen_in_sampler`` (default true): rejected genomes are redrawn inside the sampler instead of
    being stored as PRUNED trials (:mod:`optiloss.search.sampler`). A study keeps the setting it was
    made with (false for studies made before it became the default) unless a file or an option sets
    it (:func:`optiloss.search.study.settle_config`).

    ``objectives``: ``["accuracy", "robustness"]`` (two maximised objectives) or ``["accuracy"]``
    (the paper's single objective; robustness is then a user attr). ``sampler``: ``nsga2``,
    ``evolution`` (regularized evolution, :mod:`optiloss.search.evolution`, tournaments of
    ``tournament_size``, by default a fifth of the population as the paper's 20 of 100),
    ``random`` or ``tpe``. ``losses``: name -> formula, trained in the first generation
    beside the zoo.

    ``baseline_seeds``: cross-entropy's extra seeds before the search, the study's noise floor
    (:mod:`optiloss.search.noise_floor`; 0 trains none).

    ``checkpoint_interval``: a trial saves a checkpoint after an epoch once this many seconds have
    passed since its last one (0: after every epoch), so trials shorter than it write none and a
    killed trial loses at most about this much training.

    ``model`` is the surrogate (:data:`optiloss.models.SURROGATES`); ``batch_size``,
    ``learning_rate``, ``weight_decay`` and ``model_width`` left unset take its
    values from :data:`SURROGATE_DEFAULTS`, so the stored config holds what ran.
    """

    model: str = setting("cnn", help="the surrogate: " + ", ".join(SURROGATES))
    study_name: str | None = setting(None, metavar="NAME", help="the study's name")
    n_trials: int = setting(
        30, limits=(1, None), metavar="N", help="total COMPLETE trials the study should hold"
    )
    population_size: int = setting(10, limits=(2, None), help="NSGA-II generation size")
    nodes: int = setting(5, limits=(4, 32), help="genome nodes")
    constants: int = setting(
        2,
        limits=(0, 8),
        help="real-valued constants c0, c1 ... a genome may read (float genes in -5..5; 0: none, as "
        "studies made before constants)",
    )
    batch_size: int | None = redefault(RunSettings, "batch_size", None)
    learning_rate: float | None = redefault(RunSettings, "learning_rate", None)
    weight_decay: float | None = redefault(RunSettings, "weight_decay", None)
    model_width: int | None = setting(None, limits=(1, 1024), help="channels of the surrogate's first stage")
    max_consecutive_rejections: int = setting(
        2000, limits=(1, None), help="stop when this many genomes in a row are rejected"
    )
    early_rejection_at: float = setting(
        0.2, limits=(0.0, 0.9), help="share of the epochs after which slow learners are stopped (0: never)"
    )
    early_rejection_ratio: float = setting(
        0.5, limits=(0.0, 1.0), help="a slow learner trains below this times cross-entropy's accuracy"
    )
    screen_in_sampler: bool = setting(
        True, help="redraw rejected genomes inside the sampler (a study made before keeps its own setting)"
    )
    objectives: tuple[str, ...] = setting(
        ("accuracy", "robustness"), limits=("accuracy", "robustness"), help="the maximised objectives"
    )
    sampler: str = setting(
        "nsga2",
        limits=SAMPLERS,
        help="; ".join(f"{name}: {meaning}" for name, meaning in SAMPLER_HELP.items()),
    )
    tournament_size: int | None = setting(
        None, limits=(2, None), help="the evolution sampler's tournament (default: a fifth of the population)"
    )
    baseline_seeds: int = setting(3, limits=(0, 100), help="cross-entropy's extra seeds, the noise floor")
    workers: int = setting(1, limits=(1, 64), metavar="N", help="processes sharing the study (default 1)")
    heartbeat_interval: int = setting(10, limits=(1, 3600), help="seconds between a trial's heartbeats")
    db_outage_s: int = setting(
        120, limits=(0, 86400), help="seconds a search waits for a database server that went away"
    )
    grace_period: int = setting(60, limits=(2, 86400), help="silence after which a trial is failed")
    max_retry: int = setting(3, limits=(0, 100), help="retries of a trial whose worker died")
    artifacts: bool = setting(True, help="per-trial plots for the dashboard")
    artifacts_front_only: bool = setting(
        True, help="per-trial plots only for trials on the Pareto front when they finish (false: every one)"
    )
    artifact_dir: str = setting(ARTIFACTS_DIR, help="where the dashboard's artifacts go")
    checkpoint_interval: float = setting(
        30.0, limits=(0.0, None), help="seconds between a trial's checkpoints (0: after every epoch)"
    )

    def __post_init__(self) -> None:
        for key, value in SURROGATE_DEFAULTS.get(self.model, SURROGATE_DEFAULTS["cnn"]).items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        if self.tournament_size is None:  # the paper's 20 of 100
            object.__setattr__(self, "tournament_size", max(2, self.population_size // 5))

    def check(self, source: str) -> None:
        if self.model not in SURROGATES:
            raise UsageError(f"{source}: model must be one of {', '.join(SURROGATES)}, got {self.model!r}")
        if (
            not self.objectives
            or self.objectives[0] != "accuracy"
            or len(set(self.objectives)) != len(self.objectives)
        ):
            raise UsageError(
                f'{source}: objectives must be ["accuracy"] or ["accuracy", "robustness"], '
                f"got {list(self.objectives)}"
            )
        assert self.tournament_size is not None  # __post_init__ fills it
        if self.sampler == "evolution" and self.tournament_size > self.population_size:
            raise UsageError(
                f"{source}: tournament_size ({self.tournament_size}) must not exceed "
                f"population_size ({self.population_size})"
            )
        if self.grace_period <= self.heartbeat_interval:
            raise UsageError(
                f"{source}: grace_period must be longer than heartbeat_interval "
                f"({self.grace_period} <= {self.heartbeat_interval})"
            )

    def screen_options(self) -> dict[str, bool]:
        """How this study's screen fingerprints a genome (:func:`optiloss.genome.screen`): on the
        targets its augmentation trains with, and ignoring a positive scale when the surrogate's
        optimiser does (:attr:`optiloss.train.Recipe.scale_free`: AdamW does, airbench's SGD does not:
        docs/benchmarks.md, loss scale)."""
        return {
            "soft_targets": self.augmentation in SOFT_TARGET_AUGMENTATIONS,
            "scale_free": recipe_named(self.train_settings().recipe).scale_free,
        }

    @property
    def resolved_study_name(self) -> str:
        """``study_name``, else ``{dataset}-{augmentation}`` (``folder-{folder name}-…`` for folder sets)."""
        if self.study_name:
            return self.study_name
        dataset = self.dataset
        if dataset.startswith("folder:"):
            dataset = "folder-" + (Path(dataset[len("folder:") :]).expanduser().resolve().name or "root")
        return f"{dataset}-{self.augmentation}"

    def per_augmentation(self) -> list[SearchConfig]:
        """One config per study: itself, or for ``all5`` one per augmentation, named
        ``{name}-{augmentation}``."""
        if self.augmentation != ALL_AUGMENTATIONS:
            return [self]
        return [
            self.replace(
                augmentation=augmentation,
                study_name=f"{self.study_name}-{augmentation}" if self.study_name else None,
            )
            for augmentation in AUGMENTATIONS
        ]


TRAINING_KEYS = (
    "image_size",
    "subset",
    "validation_fraction",
    "epochs",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "warmup_fraction",
    "model_width",
    "seed",
    "hflip",
    "crop_padding",
    "crop_padding_mode",
    "cutout_size",
    "mixup_alpha",
    "randaug_n",
    "randaug_m",
    "corruption_severity",
    "corruption_severities",
    "corruption_suite",
    "label_noise_rate",
    "label_noise_kind",
    "noisy_validation",
    "imbalance_ratio",
)
"""Config keys that change what a trial's accuracy and robustness measure: a continuing search must
match the study's stored config (``StudyKey.CONFIG``) in each, or its trials, and the noise floor
measured at the first settings, would not be comparable. Every other key may differ: the budget and the
search's strategy (``n_trials``, ``sampler``, ``population_size``, ``tournament_size``, the screen
and early rejection, which decide which genomes train, not what a trained one scores), where things
live and how they run (``data_root``, ``download``, ``device``, ``workers``, checkpoints, heartbeats,
artifacts), the given ``losses``, ``baseline_seeds`` (more seeds of the same noise floor), and the
numerics ``mixed_precision``, ``compile`` and ``deterministic`` (each trial records its ``precision``).
A key the stored config lacks (a study made before the key existed) is not compared."""


def _comparable(key: str, value: Any, model: str) -> Any:
    """A config value as today's config holds it: a list for a tuple (a stored config is JSON),
    a flip mode for an old ``hflip = true/false``, the surrogate's value for an unset one."""
    if isinstance(value, tuple):
        return list(value)
    if key == "hflip" and isinstance(value, bool):
        return legacy_flip_mode(value)
    if value is None:
        return SURROGATE_DEFAULTS.get(model, {}).get(key)
    return value


def training_differences(stored: Mapping[str, Any], config: SearchConfig) -> list[tuple[str, Any, Any]]:
    """``(key, stored value, config's value)`` for each of :data:`TRAINING_KEYS` in which ``config``
    differs from a study's stored config (a mapping, as JSON keeps it); the image size compared as
    trained (a default resolved). Keys ``stored`` lacks are not compared."""
    different = []
    for key in TRAINING_KEYS:
        if key not in stored:
            continue
        before, now = (_comparable(key, value, config.model) for value in (stored[key], getattr(config, key)))
        if key == "image_size":
            before, now = (
                resolved_image_size(config.dataset, before),
                resolved_image_size(config.dataset, now),
            )
        if before != now:
            different.append((key, before, now))
    return different


@dataclass(frozen=True)
class TransferConfig(RunSettings):
    """Settings of a transfer run; ``studies/transfer-*.toml`` hold the paper's.

    Transfer trains on the whole training part (``validation_fraction`` only
    shapes a stratified ``subset``) and scores the test part.
    """

    model: str = setting(
        "wrn-28-10", help="wrn-DEPTH-WIDTH (e.g. wrn-28-10) or a timm name (tf_efficientnetv2_s.in1k)"
    )
    dataset: str = redefault(RunSettings, "dataset", "cifar10")
    top_k: int = setting(3, limits=(1, None), metavar="K", help="evolved losses taken from each source study")
    seeds: int = setting(3, limits=(1, None), metavar="S", help="training seeds per loss")
    epochs: int = redefault(RunSettings, "epochs", 200)
    batch_size: int = redefault(RunSettings, "batch_size", TrainSettings.batch_size)  # never None here
    learning_rate: float = redefault(RunSettings, "learning_rate", 1e-3)
    weight_decay: float = redefault(RunSettings, "weight_decay", TrainSettings.weight_decay)
    validation_fraction: float = redefault(RunSettings, "validation_fraction", 0.1)
    weights: str | None = setting(None, metavar="FILE", help="local pretrained weights for a timm model")
    pretrained: bool = setting(False, help="the model is fine-tuned from weights (needs weights)")
    select: str = setting(
        "accuracy",
        limits=SELECTIONS,
        help="accuracy (default): top-k by accuracy over all trained losses, one per behaviour; "
        "pareto: top-k of the Pareto set",
    )
    corruptions: str | None = setting(
        None,
        metavar="DIR",
        help="the released CIFAR-10-C / CIFAR-100-C files of the test split (<corruption>.npy and "
        "labels.npy): each run is also scored on them, 15 corruptions x 5 severities",
    )

    def check(self, source: str) -> None:
        if self.pretrained and not self.weights:
            raise UsageError(
                f"{source}: model {self.model!r} is fine-tuned (pretrained = true) and needs "
                'its weights file: pass --weights FILE or set weights = "FILE" (docs/transfer.md, '
                '"Fine-tuning", and the study file\'s comments say how to download it)'
            )
        if surrogate_named(self.model) is not None:  # its aliases too: create_model accepts them
            raise UsageError(
                f"{source}: model {self.model!r} is a search surrogate; transfer to "
                "wrn-DEPTH-WIDTH (e.g. wrn-28-10) or a timm model name"
            )
        if self.augmentation not in AUGMENTATIONS:
            raise UsageError(
                f"{source}: augmentation must be one of {', '.join(AUGMENTATIONS)} "
                f"(a transfer trains one), got {self.augmentation!r}"
            )


def read_toml(path: str | Path | None, what: str = "config file") -> dict[str, Any]:
    """The table of a TOML file ({} for None); a missing or malformed file, or a folder, is a
    :class:`UsageError` calling it ``what``."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except IsADirectoryError:
        raise UsageError(_folder_message(Path(path), what)) from None
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML ({error})") from None


def _folder_message(folder: Path, what: str) -> str:
    """What to say when a folder is given where a TOML file belongs, naming a few files it holds."""
    inside = sorted(str(item) for item in folder.glob("*.toml"))[:3]
    hint = f" (it holds {', '.join(inside)})" if inside else " (it holds no .toml file)"
    return f"{what} {folder} is a folder, not a file: name a TOML file{hint}"


def _legacy_value(key: str, value: Any) -> Any:
    """A value as older versions wrote it, read as today's: ``hflip = true/false``."""
    if key == "hflip" and isinstance(value, bool):
        return legacy_flip_mode(value)
    return value


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_value(source: str, key: str, value: Any, annotation: Any, limits: Limits | None) -> Any:
    """``value`` if it has the annotation's type and is within ``limits`` (ints pass as floats)."""
    where = f"{source}: {key}"
    optional = isinstance(annotation, types.UnionType) and type(None) in annotation.__args__
    kind = next(arg for arg in annotation.__args__ if arg is not type(None)) if optional else annotation
    if value is None and optional:
        return value
    kind = typing.get_origin(kind) or kind
    if kind is tuple:
        items = typing.get_args(annotation if not optional else kind_annotation(annotation))
        if items and items[0] is int:
            return _check_int_list(where, value, limits)
        return _check_list(where, value, limits)
    if kind is dict:
        return check_losses(where, value)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    ok = {
        int: is_int,
        float: is_int or isinstance(value, float),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
    }[kind]
    if not ok:
        raise UsageError(f"{where} must be {_TYPE_WORDS[kind]}, got {value!r}")
    if kind is float:
        value = float(value)
    if key == "dataset" and not is_dataset_name(value):
        raise UsageError(f"{where} must be one of {', '.join(DATASETS)}, got {value!r}")
    if key == "device":
        if not (value in DEVICES or _GPU_INDEX.fullmatch(value)):
            raise UsageError(f"{where} must be one of auto, cpu, cuda, cuda:N (a GPU index), got {value!r}")
        return value
    if limits and isinstance(limits[0], str):
        if value not in limits:
            raise UsageError(f"{where} must be one of {', '.join(limits)}, got {value!r}")
    elif limits is not None:
        low, high = limits
        if value < low or (high is not None and value > high):
            allowed = f">= {low}" if high is None else f"between {low} and {high}"
            raise UsageError(f"{where} must be {allowed}, got {value!r}")
    return value


def kind_annotation(annotation: Any) -> Any:
    """The annotation of an optional key without its ``| None``."""
    return next(arg for arg in annotation.__args__ if arg is not type(None))


def _check_int_list(where: str, value: Any, limits: Limits | None) -> tuple[int, ...]:
    """A non-empty list of integers, each within ``limits`` (minimum, maximum), as a tuple."""
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(item, int) and not isinstance(item, bool) for item in value)
    ):
        raise UsageError(f"{where} must be a non-empty list of integers, got {value!r}")
    if limits is not None and not isinstance(limits[0], str):
        low, high = limits
        for item in value:
            if item < low or (high is not None and item > high):
                raise UsageError(f"{where}: {item} is not between {low:g} and {high:g}")
    return tuple(value)


def _check_list(where: str, value: Any, limits: Limits | None) -> tuple[str, ...]:
    """A list of strings, each among ``limits`` (when given), as a tuple."""
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise UsageError(f"{where} must be {_TYPE_WORDS[tuple]}, got {value!r}")
    allowed = limits or ()
    for item in value:
        if allowed and item not in allowed:
            raise UsageError(f"{where}: {item!r} is not one of {', '.join(map(str, allowed))}")
    return tuple(value)


def check_losses(where: str, value: Any) -> dict[str, str]:
    """A table ``name = "formula"`` with identifier names (formulas are parsed where they are used)."""
    if not isinstance(value, Mapping) or not all(isinstance(item, str) for item in value.values()):
        raise UsageError(f'{where} must be {_TYPE_WORDS[dict]} (name = "formula"), got {value!r}')
    for name in value:
        if not LOSS_NAME.fullmatch(name):
            raise UsageError(f"{where}: loss name {name!r} must be letters, digits and _ (not first a digit)")
    return dict(value)


@dataclass(frozen=True)
class RecheckSettings(Settings):
    """What ``optiloss recheck`` and an experiment's ``[recheck]`` table set."""

    seeds: int = setting(3, limits=(0, 100), help="fresh seeds per rechecked loss (0: no recheck stage)")


MATRIX_SPLITS = ("test", "val")
"""Where the matrix scores: the test split (default), or the validation split the searches selected on."""


@dataclass(frozen=True)
class MatrixSettings(Settings):
    """What ``optiloss matrix`` and an experiment's ``[matrix]`` table set."""

    seeds: int = setting(2, limits=(0, 100), help="seeds per loss and augmentation (0: no matrix stage)")
    top_k: int = setting(1, limits=(1, None), help="best losses taken from each augmentation study")
    select: str = setting("accuracy", limits=SELECTIONS, help="accuracy or pareto, as for transfer")
    split: str = setting(
        "test",
        limits=MATRIX_SPLITS,
        help="where the cells are scored: test (default; no search selected on it) or val (the searches' "
        "own validation split, which flatters the losses they chose there)",
    )
