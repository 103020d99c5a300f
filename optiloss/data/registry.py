"""Data sets by name, decoded once and cached as uint8 tensors."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from optiloss.data import sources
from optiloss.data.cache import cached, source_signature
from optiloss.data.splits import ImageSplits, stratified_split
from optiloss.errors import UsageError

DATA_ENVIRONMENT_VARIABLE = "OPTILOSS_DATA"
FOLDER_PREFIX = "folder:"

READERS: dict[str, Callable[..., dict[str, Any]]] = {
    "digits": sources.read_digits,
    "cifar10": sources.read_cifar10,
    "cifar100": sources.read_cifar100,
    "flowers102": sources.read_flowers102,
    "stanford_cars": sources.read_stanford_cars,
    "caltech101": sources.read_caltech101,
}
DATASETS: tuple[str, ...] = (*READERS, f"{FOLDER_PREFIX}PATH")
NATIVE_SIZE = {"digits": 8, "cifar10": 32, "cifar100": 32}
SOURCE_FOLDER = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "flowers102": "flowers-102",
    "stanford_cars": "stanford_cars",
    "caltech101": "caltech101",
}


def default_data_root() -> Path:
    """``$OPTILOSS_DATA``, else ``~/.cache/optiloss/data``."""
    return Path(os.environ.get(DATA_ENVIRONMENT_VARIABLE) or Path.home() / ".cache" / "optiloss" / "data")


def is_dataset_name(name: str) -> bool:
    return name in READERS or (name.startswith(FOLDER_PREFIX) and len(name) > len(FOLDER_PREFIX))


def folder_image_size(root: Path) -> int:
    """Native side of a folder set whose first training image is square and at most 64 px, else 64."""
    from PIL import Image

    try:
        first_class = min(path for path in (root / "train").iterdir() if path.is_dir())
        first_image = min(path for path in first_class.iterdir() if path.is_file())
        with Image.open(first_image) as image:
            width, height = image.size
    except (OSError, ValueError):  # missing or unreadable: the reader reports it properly
        return sources.DEFAULT_IMAGE_SIZE
    return width if width == height <= sources.DEFAULT_IMAGE_SIZE else sources.DEFAULT_IMAGE_SIZE


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images (N, C, H, W) resized to ``size`` x ``size`` as every data set is (antialiased
    bilinear); unchanged when they have that size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return resized.round().clamp(0, 255).to(torch.uint8)


def _read(name: str, data_root: Path, image_size: int, download: bool, progress: bool) -> dict[str, Any]:
    folder = name.startswith(FOLDER_PREFIX)
    reader: Callable[..., dict[str, Any]] = sources.read_folder if folder else READERS[name]
    source: Path | None
    if folder:
        root = Path(name[len(FOLDER_PREFIX) :]).expanduser()
        source = root
    else:
        root = data_root
        source = root / SOURCE_FOLDER[name] if name in SOURCE_FOLDER else None
        if download and name != "digits":
            sources.download(name, root)
    if source is None:  # digits: in the scikit-learn wheel, nothing to cache
        return reader()
    if not source.exists():
        return reader(root=root, image_size=image_size, progress=progress)  # raises what is missing where
    native = name in NATIVE_SIZE
    key = {
        "reader": reader.__name__,
        "source": source_signature(source),
        "image_size": None if native else image_size,
    }
    return cached(
        key, lambda: reader(root=root, image_size=None if native else image_size, progress=progress)
    )


def resolved_image_size(name: str, image_size: int | None = None) -> int:
    """The side the images of ``name`` are trained at: ``image_size`` if given, else the native size
    (digits 8, CIFAR 32; a ``folder:`` set as :func:`folder_image_size` says; 64 for the others)."""
    if image_size:
        return image_size
    if name.startswith(FOLDER_PREFIX):
        return folder_image_size(Path(name[len(FOLDER_PREFIX) :]).expanduser())
    return NATIVE_SIZE.get(name, sources.DEFAULT_IMAGE_SIZE)


def load_dataset(
    name: str,
    validation_fraction: float = 0.2,
    *,
    data_root: str | Path | None = None,
    image_size: int | None = None,
    subset: int | None = None,
    download: bool = False,
    progress: bool = True,
) -> ImageSplits:
    """Load a data set by name as uint8 splits.

    ``name`` is one of :data:`DATASETS` (``folder:PATH`` for an image folder).
    Images keep their native size (digits 8, CIFAR 32) or are resized to
    ``image_size`` (default 64 for the folder-based sets; a ``folder:`` set whose
    first image is square and at most 64 px keeps that size, so CIFAR-10 as
    JPEG folders stays 32 px). ``subset`` keeps a
    stratified subset of that many training images (more than there are is a
    :class:`UsageError`, not a silent "all of them") before the validation
    split, a stratified ``validation_fraction`` of the training part, is
    carved. The test part is never touched by either. The decoded images are
    cached on disk (see :mod:`optiloss.data.cache`).
    """
    if not is_dataset_name(name):
        raise UsageError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    root = Path(data_root).expanduser() if data_root else default_data_root()
    size = resolved_image_size(name, image_size)
    raw = _read(name, root, size, download, progress)
    train_images, train_labels = resize_images(raw["train_images"], size), raw["train_labels"]
    test_images, test_labels = resize_images(raw["test_images"], size), raw["test_labels"]
    labels = train_labels.numpy()
    if subset is not None and subset > len(labels):
        raise UsageError(
            f"subset {subset} is larger than {name}'s {len(labels)} training images: "
            f"leave subset out to use all of them, or give at most {len(labels)}"
        )
    try:
        if subset is not None and subset < len(labels):
            chosen, _ = train_test_split(
                np.arange(len(labels)), train_size=subset, random_state=sources.SPLIT_SEED, stratify=labels
            )
            chosen = np.sort(chosen)
            train_images, train_labels, labels = train_images[chosen], train_labels[chosen], labels[chosen]
        kept, held_out = stratified_split(labels, validation_fraction, sources.SPLIT_SEED)
    except ValueError as error:
        raise UsageError(
            f"{name}: cannot split {len(labels)} training images stratified "
            f"({error}); use a larger subset or validation fraction"
        ) from None
    kept_rows, held_out_rows = torch.from_numpy(kept), torch.from_numpy(held_out)
    return ImageSplits(
        name=name,
        classes=tuple(raw["classes"]),
        train_images=train_images[kept_rows],
        train_labels=train_labels[kept_rows],
        val_images=train_images[held_out_rows],
        val_labels=train_labels[held_out_rows],
        test_images=test_images,
        test_labels=test_labels,
    )
