"""Readers for each data set layout. Each returns the decoded train and test parts.

A reader returns ``{"classes": [...], "train_images", "train_labels",
"test_images", "test_labels"}`` with uint8 (N, 3, H, W) images and int64
labels. Missing files raise :class:`UsageError` naming what was expected where.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optiloss.data.decode import decode_images
from optiloss.data.splits import stratified_split
from optiloss.errors import UsageError

SPLIT_SEED = 0
"""Fixed seed of every split a data set lacks (digits and Caltech101 test parts, validation)."""
DEFAULT_IMAGE_SIZE = 64
"""Side length that folder-based data sets are resized to unless image_size is set."""


def _require(path: Path, what: str, how: str) -> None:
    if not path.exists():
        raise UsageError(f"{what} not found: expected {path}; {how}")


def _result(
    classes: Iterable[object],
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
) -> dict[str, Any]:
    as_tensor = lambda array: torch.from_numpy(np.ascontiguousarray(array))  # noqa: E731
    return {
        "classes": [str(name) for name in classes],
        "train_images": as_tensor(train_images),
        "train_labels": as_tensor(np.asarray(train_labels, np.int64)),
        "test_images": as_tensor(test_images),
        "test_labels": as_tensor(np.asarray(test_labels, np.int64)),
    }


def _check_labels(name: str, labels: np.ndarray, num_classes: int) -> None:
    if labels.size == 0:
        raise UsageError(f"{name}: a split holds no images")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise UsageError(f"{name}: labels outside 0..{num_classes - 1}")
    present = len(np.unique(labels))
    if present != num_classes:
        raise UsageError(f"{name}: {present} classes present, expected {num_classes}")


# ----------------------------------------------------------------------------- digits
def read_digits(**_: Any) -> dict[str, Any]:
    """scikit-learn's 8x8 digits (in its wheel), 3-channel; a fixed stratified 20 % is the test part."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.repeat(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None], 3, axis=1)
    labels = bunch.target.astype(np.int64)
    train, test = stratified_split(labels, 0.2, SPLIT_SEED)
    return _result(range(10), images[train], labels[train], images[test], labels[test])


# ------------------------------------------------------------------------------ CIFAR
def _unpickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        entry = pickle.load(handle, encoding="latin1")
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in entry.items()}


def _cifar(
    root: Path,
    folder: str,
    train_files: list[str],
    test_file: str,
    meta_file: str,
    label_key: str,
    names_key: str,
    num_classes: int,
    title: str,
) -> dict[str, Any]:
    base = root / folder
    how = (
        f"get it with --download, or torchvision.datasets.{title.replace('-', '')}"
        f"('{root}', download=True), or put torchvision's python-pickle layout there"
    )
    for name in [*train_files, test_file, meta_file]:
        _require(base / name, f"{title} file {name}", how)

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for name in files:
            entry = _unpickle(base / name)
            data = np.asarray(entry["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise UsageError(f"{base / name}: data of shape {data.shape}, expected (N, 3072)")
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry[label_key], dtype=np.int64))
            if len(labels[-1]) != len(images[-1]):
                raise UsageError(f"{base / name}: {len(images[-1])} images but {len(labels[-1])} labels")
        return np.concatenate(images), np.concatenate(labels)

    classes = _unpickle(base / meta_file)[names_key]
    if len(classes) != num_classes:
        raise UsageError(f"{base / meta_file}: {len(classes)} class names, expected {num_classes}")
    train_images, train_labels = read(train_files)
    test_images, test_labels = read([test_file])
    _check_labels(f"{title} train", train_labels, num_classes)
    _check_labels(f"{title} test", test_labels, num_classes)
    return _result(classes, train_images, train_labels, test_images, test_labels)


def read_cifar10(root: Path, **_: Any) -> dict[str, Any]:
    return _cifar(
        root,
        "cifar-10-batches-py",
        [f"data_batch_{k}" for k in range(1, 6)],
        "test_batch",
        "batches.meta",
        "labels",
        "label_names",
        10,
        "CIFAR-10",
    )


def read_cifar100(root: Path, **_: Any) -> dict[str, Any]:
    return _cifar(
        root,
        "cifar-100-python",
        ["train"],
        "test",
        "meta",
        "fine_labels",
        "fine_label_names",
        100,
        "CIFAR-100",
    )


# ---------------------------------------------------------------------- image folders
def _images_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))


def _decode_labelled(
    paths: list[Path], labels: list[int], size: int | None, description: str, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    images, kept = decode_images(paths, size, description=description, progress=progress)
    return images, np.asarray(labels, dtype=np.int64)[kept]


def read_folder(root: Path, image_size: int | None, progress: bool = True, **_: Any) -> dict[str, Any]:
    """``root/train/<class>/*`` and ``root/test/<class>/*`` (or ``val/``); classes sorted by name."""
    layout = f"create {root}/train/<class>/<image> and {root}/test/<class>/<image> (or val/)"
    _require(root, "image folder", layout)
    _require(root / "train", "training split", layout)
    test_folder = root / "test" if (root / "test").exists() else root / "val"
    _require(test_folder, "test split", layout)
    classes = sorted(path.name for path in (root / "train").iterdir() if path.is_dir())
    if len(classes) < 2:
        raise UsageError(
            f"{root / 'train'} has {len(classes)} class folder(s); a classifier needs at least 2"
        )
    unknown = sorted({path.name for path in test_folder.iterdir() if path.is_dir()} - set(classes))
    if unknown:
        raise UsageError(f"{test_folder} has class folder(s) missing from train: {', '.join(unknown[:5])}")
    parts = {}
    for split, folder in (("train", root / "train"), ("test", test_folder)):
        paths, labels = [], []
        for label, name in enumerate(classes):
            if (folder / name).is_dir():
                found = _images_in(folder / name)
                paths += found
                labels += [label] * len(found)
        if not paths:
            raise UsageError(f"{folder} holds no images; {layout}")
        parts[split] = _decode_labelled(paths, labels, image_size, f"decoding {folder.name}", progress)
    return _result(classes, *parts["train"], *parts["test"])


def read_flowers102(root: Path, image_size: int | None, progress: bool = True, **_: Any) -> dict[str, Any]:
    """torchvision's ``flowers-102/{jpg,imagelabels.mat,setid.mat}``; train and val form the training part."""
    from scipy.io import loadmat

    base = root / "flowers-102"
    how = f"get it with --download or torchvision.datasets.Flowers102('{root}', download=True)"
    for name in ("jpg", "imagelabels.mat", "setid.mat"):
        _require(base / name, f"Flowers-102 {name}", how)
    labels = loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"].astype(np.int64) - 1
    set_ids = loadmat(base / "setid.mat", squeeze_me=True)
    parts = {}
    for split, keys in (("train", ("trnid", "valid")), ("test", ("tstid",))):
        ids = np.concatenate([np.atleast_1d(set_ids[key]) for key in keys]).astype(np.int64)
        paths = [base / "jpg" / f"image_{image_id:05d}.jpg" for image_id in ids]
        parts[split] = _decode_labelled(
            paths, labels[ids - 1].tolist(), image_size, f"decoding flowers {split}", progress
        )
    num_classes = int(labels.max()) + 1
    return _result([f"flower_{k + 1:03d}" for k in range(num_classes)], *parts["train"], *parts["test"])


def read_stanford_cars(root: Path, image_size: int | None, progress: bool = True, **_: Any) -> dict[str, Any]:
    """torchvision's ``stanford_cars/`` layout (devkit .mat annotations, cars_train/, cars_test/)."""
    from scipy.io import loadmat

    base = root / "stanford_cars"
    how = (
        "torchvision cannot download it (pytorch/vision#7545): place the devkit, cars_train/, cars_test/ "
        f"and cars_test_annos_withlabels.mat under {base}"
    )
    files = {
        "train": (base / "devkit" / "cars_train_annos.mat", base / "cars_train"),
        "test": (base / "cars_test_annos_withlabels.mat", base / "cars_test"),
    }
    _require(base / "devkit" / "cars_meta.mat", "Stanford Cars devkit/cars_meta.mat", how)
    meta = loadmat(base / "devkit" / "cars_meta.mat", squeeze_me=True)
    classes = [str(name) for name in meta["class_names"]]
    parts = {}
    for split, (annotations_file, folder) in files.items():
        _require(annotations_file, f"Stanford Cars {annotations_file.name}", how)
        _require(folder, f"Stanford Cars {folder.name}", how)
        records = np.atleast_1d(loadmat(annotations_file, squeeze_me=True)["annotations"])
        paths = [folder / str(record["fname"]) for record in records]
        labels = [int(record["class"]) - 1 for record in records]
        parts[split] = _decode_labelled(paths, labels, image_size, f"decoding cars {split}", progress)
    return _result(classes, *parts["train"], *parts["test"])


def read_caltech101(root: Path, image_size: int | None, progress: bool = True, **_: Any) -> dict[str, Any]:
    """torchvision's ``caltech101/101_ObjectCategories``; a fixed, stratified 20 % becomes the test part."""
    base = root / "caltech101" / "101_ObjectCategories"
    _require(
        base,
        "Caltech101 101_ObjectCategories",
        f"get it with --download or torchvision.datasets.Caltech101('{root}', download=True)",
    )
    classes = sorted(
        path.name for path in base.iterdir() if path.is_dir() and path.name != "BACKGROUND_Google"
    )
    paths: list[Path] = []
    found_labels: list[int] = []
    for label, name in enumerate(classes):
        found = _images_in(base / name)
        paths += found
        found_labels += [label] * len(found)
    if len(classes) < 2 or not paths:
        raise UsageError(f"{base} needs at least two category folders with images")
    images, labels = _decode_labelled(paths, found_labels, image_size, "decoding caltech101", progress)
    train, test = stratified_split(labels, 0.2, SPLIT_SEED)
    return _result(classes, images[train], labels[train], images[test], labels[test])


def download(name: str, root: Path) -> None:
    """Fetch a data set with torchvision's downloader (needs the network)."""
    import torchvision.datasets as tv

    downloaders = {
        "cifar10": tv.CIFAR10,
        "cifar100": tv.CIFAR100,
        "flowers102": tv.Flowers102,
        "caltech101": tv.Caltech101,
    }
    if name not in downloaders:
        raise UsageError(f"{name} has no downloader; place its files under {root} by hand")
    try:
        downloaders[name](str(root), download=True)
    except Exception as error:  # network errors come in many types
        from optiloss.errors import OptilossError

        raise OptilossError(
            f"downloading {name} into {root} failed: {str(error).splitlines()[0]}; "
            "check the network or place the files by hand"
        ) from None
