"""Data conditions: label noise and class imbalance, applied to the training part only.

A study with a condition trains on the data a user really has: labels partly wrong (web-scraped or
crowd-labelled data) or classes long-tailed. Both are applied to the training part of
:class:`~optiloss.data.splits.ImageSplits` after the validation part was carved (so validation stays
balanced, and clean unless ``noisy_validation``); the test split is never touched. Both are seeded by
the run's base seed, so every trial of a study (and its recheck, evaluate or ablate) sees the same labels.

- ``imbalance_ratio`` r >= 1: the training part long-tailed with CIFAR-10-LT's exponential profile
  (Cao et al. 2019): class c keeps ``int(n_max * r ** (-c / (C - 1)))`` images (at least one), drawn
  at random, where n_max is the largest class's count. 1 keeps every image.
- ``label_noise_rate`` in [0, 0.9] with ``label_noise_kind``: ``symmetric`` (each label, with that
  probability, replaced by a uniformly drawn other class) or ``asymmetric`` (the class-pair flips
  of the noisy-label literature, Patrini et al. 2017, with that probability: on CIFAR-10
  truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog, the other five classes kept; on
  every other data set each class to the next, c -> c + 1 mod C, see :func:`asymmetric_map`).

Imbalance comes first, then the noise on the images kept; the measured share of flipped training
labels is in :attr:`ConditionRecord.flipped_share`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from optiloss.data.splits import ImageSplits

NOISE_KINDS = ("symmetric", "asymmetric")
CIFAR10_FLIPS = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}
"""The asymmetric flips on CIFAR-10, by class name (Patrini et al. 2017, used by GCE and SCE)."""
CIFAR10_CLASSES = frozenset(
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
)
_NOISE_STREAM, _IMBALANCE_STREAM, _VALIDATION_STREAM = 1, 2, 3


@dataclass(frozen=True)
class Conditions:
    """A run's data conditions (the settings' keys of the same names). The default is no condition."""

    label_noise_rate: float = 0.0
    label_noise_kind: str = "symmetric"
    noisy_validation: bool = False
    imbalance_ratio: float = 1.0
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.label_noise_rate > 0 or self.imbalance_ratio > 1

    def describe(self) -> str:
        """One line for a report: ``40 % symmetric label noise (training part only), imbalance 100``;
        ``clean, balanced data`` without a condition."""
        parts = []
        if self.label_noise_rate > 0:
            where = "training and validation parts" if self.noisy_validation else "training part only"
            parts.append(f"{100 * self.label_noise_rate:g} % {self.label_noise_kind} label noise ({where})")
        if self.imbalance_ratio > 1:
            parts.append(f"class imbalance ratio {self.imbalance_ratio:g} (training part, long-tailed)")
        return "; ".join(parts) if parts else "clean, balanced data"


@dataclass(frozen=True)
class ConditionRecord:
    """What applying the conditions did: the study records it (``StudyKey.CONDITIONS``)."""

    label_noise_rate: float
    label_noise_kind: str
    noisy_validation: bool
    imbalance_ratio: float
    flipped_share: float
    """The measured share of training labels that differ from the true ones."""
    train_class_counts: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["train_class_counts"] = list(self.train_class_counts)
        record["flipped_share"] = round(self.flipped_share, 5)
        return record


def describe_recorded(record: dict[str, Any]) -> str:
    """One line for a report on what a study recorded (:meth:`ConditionRecord.as_dict`), the measured
    share of flipped training labels included; "clean, balanced data" for an empty record."""
    if not record:
        return Conditions().describe()
    conditions = Conditions(
        float(record.get("label_noise_rate", 0.0)),
        str(record.get("label_noise_kind", "symmetric")),
        bool(record.get("noisy_validation", False)),
        float(record.get("imbalance_ratio", 1.0)),
    )
    text = conditions.describe()
    if conditions.label_noise_rate > 0:
        text += f", {100 * float(record.get('flipped_share', 0.0)):.1f} % of the training labels flipped"
    return text


def asymmetric_map(classes: Sequence[str]) -> list[int]:
    """The class each class is flipped to under asymmetric noise: CIFAR-10's pairs
    (:data:`CIFAR10_FLIPS`) when the classes are CIFAR-10's, else each class to the next (c -> c + 1
    mod C, the usual choice for CIFAR-100 and MNIST-like sets)."""
    names = [str(name).lower() for name in classes]
    if set(names) == CIFAR10_CLASSES:
        index = {name: k for k, name in enumerate(names)}
        return [index[CIFAR10_FLIPS.get(name, name)] for name in names]
    return [(k + 1) % len(names) for k in range(len(names))]


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def noisy_labels(
    labels: torch.Tensor,
    rate: float,
    kind: str,
    classes: Sequence[str],
    seed: int,
    stream: int = _NOISE_STREAM,
) -> torch.Tensor:
    """``labels`` with each one, with probability ``rate``, replaced: ``symmetric`` by a uniformly
    drawn other class, ``asymmetric`` by its class in :func:`asymmetric_map` (unchanged where that is
    itself). Seeded: the same seed gives the same labels."""
    if rate <= 0:
        return labels.clone()
    if kind not in NOISE_KINDS:
        raise ValueError(f"label_noise_kind must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")
    rng = _rng(seed, stream)
    values = labels.cpu().numpy().copy()
    count = len(classes)
    chosen = rng.random(len(values)) < rate
    if kind == "symmetric":
        shift = rng.integers(1, count, size=len(values))  # another class, uniformly
        values[chosen] = (values[chosen] + shift[chosen]) % count
    else:
        target = np.asarray(asymmetric_map(classes))
        values[chosen] = target[values[chosen]]
    return torch.from_numpy(values).to(labels.dtype)


def long_tail_counts(largest: int, ratio: float, num_classes: int) -> list[int]:
    """CIFAR-10-LT's class sizes: class c keeps ``int(largest * ratio ** (-c / (C - 1)))``, at least 1."""
    if num_classes < 2:
        return [largest] * num_classes
    return [max(1, int(largest * ratio ** (-c / (num_classes - 1)))) for c in range(num_classes)]


def long_tail_indices(labels: torch.Tensor, ratio: float, num_classes: int, seed: int) -> torch.Tensor:
    """Sorted indices of the images kept in a long-tailed subset (:func:`long_tail_counts` of the
    largest class's count; a class with fewer images keeps all it has), drawn at random, seeded."""
    values = labels.cpu().numpy()
    sizes = np.bincount(values, minlength=num_classes)
    wanted = long_tail_counts(int(sizes.max()), ratio, num_classes)
    rng = _rng(seed, _IMBALANCE_STREAM)
    kept = [rng.permutation(np.flatnonzero(values == c))[: wanted[c]] for c in range(num_classes)]
    return torch.from_numpy(np.sort(np.concatenate(kept)))


def apply_conditions(data: ImageSplits, conditions: Conditions) -> tuple[ImageSplits, ConditionRecord]:
    """``data`` with its training part long-tailed and its training labels made noisy (and its
    validation labels too with ``noisy_validation``), the test split untouched, and what was done."""
    train_images, train_labels = data.train_images, data.train_labels
    if conditions.imbalance_ratio > 1:
        kept = long_tail_indices(train_labels, conditions.imbalance_ratio, data.num_classes, conditions.seed)
        train_images, train_labels = train_images[kept], train_labels[kept]
    clean = train_labels
    rate, kind = conditions.label_noise_rate, conditions.label_noise_kind
    train_labels = noisy_labels(clean, rate, kind, data.classes, conditions.seed)
    val_labels = data.val_labels
    if conditions.noisy_validation:
        val_labels = noisy_labels(val_labels, rate, kind, data.classes, conditions.seed, _VALIDATION_STREAM)
    flipped = float((train_labels != clean).double().mean()) if len(clean) else 0.0
    counts = tuple(int(n) for n in torch.bincount(clean.cpu(), minlength=data.num_classes))
    record = ConditionRecord(
        rate, kind, conditions.noisy_validation, conditions.imbalance_ratio, flipped, counts
    )
    changed = dataclasses.replace(
        data,
        train_images=train_images,
        train_labels=train_labels,
        val_labels=val_labels,
        conditions=record.as_dict() if conditions.active else {},
    )
    return changed, record
