"""Data sets by name."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from optiloss.data.splits import ImageSplits, stratified_split
from optiloss.errors import UsageError

SPLIT_SEED = 0
"""Data splits use their own fixed seed: the search seed never changes what is validated on."""


def _digits(validation_fraction: float) -> ImageSplits:
    """scikit-learn's 8x8 digits (shipped in its wheel), as 3-channel uint8 images.

    There is no official test part: a fixed, stratified 20 % is held out as test,
    and the validation split is carved from the rest.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.repeat(images[:, None], 3, axis=1)
    labels = bunch.target.astype(np.int64)
    train_part, test_part = stratified_split(labels, 0.2, SPLIT_SEED)
    train_index, val_index = stratified_split(labels[train_part], validation_fraction, SPLIT_SEED)
    train_index, val_index = train_part[train_index], train_part[val_index]
    as_tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array))  # noqa: E731
    return ImageSplits(
        name="digits",
        classes=tuple(str(digit) for digit in range(10)),
        train_images=as_tensor(images[train_index]), train_labels=as_tensor(labels[train_index]),
        val_images=as_tensor(images[val_index]), val_labels=as_tensor(labels[val_index]),
        test_images=as_tensor(images[test_part]), test_labels=as_tensor(labels[test_part]),
    )


DATASETS: dict[str, Callable[..., ImageSplits]] = {"digits": _digits}


def load_dataset(name: str, validation_fraction: float = 0.2) -> ImageSplits:
    """Load a data set by name, with its validation split carved from the training part."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise UsageError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}") from None
    return loader(validation_fraction)
