"""Data sets: the real CIFAR-10 folder, torchvision layouts on small fixtures, and every error."""

import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import optiloss.data.decode
from optiloss.data import load_dataset
from optiloss.errors import UsageError

from conftest import run_cli

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _assert_a_second_load_reads_the_cache(
    first, folder: Path, validation_fraction: float, monkeypatch
) -> None:
    def no_decoding(*args, **kwargs):
        raise AssertionError("the second load decoded images instead of using the cache")

    monkeypatch.setattr(optiloss.data.sources, "decode_images", no_decoding)
    second = load_dataset(f"folder:{folder}", validation_fraction=validation_fraction, progress=False)
    for field in ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(first, field), getattr(second, field)), field


@pytest.mark.slow
def test_real_cifar10_folder_loads_with_exact_counts_and_a_cached_second_load(cifar10_folder, monkeypatch):
    first = load_dataset(f"folder:{cifar10_folder}", validation_fraction=0.2, progress=False)
    assert first.classes == CLASSES and first.image_size == (32, 32) and first.channels == 3
    assert first.train_images.dtype == torch.uint8 and first.train_labels.dtype == torch.int64
    train_counts = torch.bincount(torch.cat([first.train_labels, first.val_labels]), minlength=10)
    assert train_counts.tolist() == [5000] * 10
    assert torch.bincount(first.test_labels, minlength=10).tolist() == [1000] * 10
    assert torch.bincount(first.val_labels, minlength=10).tolist() == [1000] * 10  # stratified 20 %
    assert first.train_images.shape == (40000, 3, 32, 32) and first.test_images.shape == (10000, 3, 32, 32)
    assert 100 < first.train_images.float().mean() < 150  # real photographs, not blank arrays
    _assert_a_second_load_reads_the_cache(first, cifar10_folder, 0.2, monkeypatch)
    subset = load_dataset(f"folder:{cifar10_folder}", subset=1000, progress=False)
    assert len(subset.train_labels) + len(subset.val_labels) == 1000
    assert torch.bincount(subset.train_labels, minlength=10).tolist() == [80] * 10
    assert len(subset.test_labels) == 10000  # the test part is never subsetted


def test_committed_cifar10_sample_loads_stratified_and_a_second_load_is_cached(cifar10_sample, monkeypatch):
    first = load_dataset(f"folder:{cifar10_sample}", validation_fraction=0.25, progress=False)
    assert first.classes == CLASSES and first.image_size == (32, 32) and first.channels == 3
    assert (
        torch.bincount(torch.cat([first.train_labels, first.val_labels]), minlength=10).tolist() == [60] * 10
    )
    assert torch.bincount(first.val_labels, minlength=10).tolist() == [15] * 10
    assert torch.bincount(first.test_labels, minlength=10).tolist() == [20] * 10
    assert 100 < first.train_images.float().mean() < 150  # real photographs, not blank arrays
    _assert_a_second_load_reads_the_cache(first, cifar10_sample, 0.25, monkeypatch)


def _real_images(folder: Path, per_class: int, split: str = "train") -> list[tuple[np.ndarray, int]]:
    """Real CIFAR-10 images (decoded JPEGs) to fill format fixtures."""
    found = []
    for label, name in enumerate(CLASSES):
        for path in sorted((folder / split / name).iterdir())[:per_class]:
            found.append((np.asarray(Image.open(path).convert("RGB")), label))
    return found


def _write_cifar_pickles(root: Path, images, names, folder, files, label_key, names_key, meta_file):
    base = root / folder
    base.mkdir(parents=True)
    chunks = np.array_split(np.arange(len(images)), len(files))
    for name, chunk in zip(files, chunks):
        entry = {
            "data": np.stack([images[i][0].transpose(2, 0, 1).reshape(-1) for i in chunk]),
            label_key: [images[i][1] for i in chunk],
            "batch_label": name,
        }
        with open(base / name, "wb") as handle:
            pickle.dump(entry, handle)
    with open(base / meta_file, "wb") as handle:
        pickle.dump({names_key: list(names)}, handle)


def test_cifar10_pickle_layout(cifar10_sample, tmp_path):
    train, test = _real_images(cifar10_sample, 3), _real_images(cifar10_sample, 2, "test")
    _write_cifar_pickles(
        tmp_path,
        train,
        CLASSES,
        "cifar-10-batches-py",
        [f"data_batch_{k}" for k in range(1, 6)],
        "labels",
        "label_names",
        "batches.meta",
    )
    base = tmp_path / "cifar-10-batches-py"
    with open(base / "test_batch", "wb") as handle:
        pickle.dump(
            {
                "data": np.stack([image.transpose(2, 0, 1).reshape(-1) for image, _ in test]),
                "labels": [label for _, label in test],
            },
            handle,
        )
    data = load_dataset("cifar10", validation_fraction=0.34, data_root=tmp_path, progress=False)
    assert data.classes == CLASSES and data.image_size == (32, 32)
    assert len(data.train_labels) + len(data.val_labels) == 30 and len(data.test_labels) == 20
    # pixels survive the pickle layout exactly
    first_test = torch.from_numpy(test[0][0].transpose(2, 0, 1).copy())
    assert torch.equal(data.test_images[0], first_test)


def test_cifar100_pickle_layout(cifar10_sample, tmp_path):
    images = _real_images(cifar10_sample, 20)  # 200 real images spread over 100 fine labels
    relabelled = [(image, index % 100) for index, (image, _) in enumerate(images)]
    names = [f"fine_{k}" for k in range(100)]
    _write_cifar_pickles(
        tmp_path, relabelled, names, "cifar-100-python", ["train"], "fine_labels", "fine_label_names", "meta"
    )
    shutil.copy(tmp_path / "cifar-100-python" / "train", tmp_path / "cifar-100-python" / "test")
    data = load_dataset("cifar100", validation_fraction=0.5, data_root=tmp_path, progress=False)
    assert data.num_classes == 100 and len(data.test_labels) == 200
    assert sorted(torch.unique(data.val_labels).tolist()) == list(range(100))


def test_cifar_with_a_missing_class_is_refused(cifar10_sample, tmp_path):
    train = [item for item in _real_images(cifar10_sample, 3) if item[1] != 9]
    _write_cifar_pickles(
        tmp_path,
        train,
        CLASSES,
        "cifar-10-batches-py",
        [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"],
        "labels",
        "label_names",
        "batches.meta",
    )
    with pytest.raises(UsageError, match="CIFAR-10 train: 8 classes present, expected 10"):
        load_dataset("cifar10", data_root=tmp_path, progress=False)


def _save_jpegs(folder: Path, images, pattern: str, grayscale_every: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, (image, _) in enumerate(images):
        picture = Image.fromarray(image)
        if grayscale_every and index % grayscale_every == 0:
            picture = picture.convert("L")
        name = pattern.format(index + 1)
        picture.save(folder / name)
        names.append(name)
    return names


def test_flowers102_layout(cifar10_sample, tmp_path):
    images = _real_images(cifar10_sample, 4)  # 40 images, labels 0..9 stand for 10 flower classes
    base = tmp_path / "flowers-102"
    _save_jpegs(base / "jpg", images, "image_{:05d}.jpg")
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([[label + 1 for _, label in images]])})
    ids = np.arange(1, 41)
    scipy.io.savemat(
        base / "setid.mat",
        {"trnid": ids[0::4], "valid": ids[1::4], "tstid": np.sort(np.concatenate([ids[2::4], ids[3::4]]))},
    )
    data = load_dataset(
        "flowers102", validation_fraction=0.5, data_root=tmp_path, image_size=24, progress=False
    )
    assert data.num_classes == 10 and data.image_size == (24, 24)
    assert len(data.train_labels) + len(data.val_labels) == 20 and len(data.test_labels) == 20


def test_stanford_cars_layout(cifar10_sample, tmp_path):
    base = tmp_path / "stanford_cars"
    train, test = _real_images(cifar10_sample, 2), _real_images(cifar10_sample, 1, "test")
    annotation = np.dtype([("fname", "O"), ("class", "O")])
    (base / "devkit").mkdir(parents=True)
    scipy.io.savemat(
        base / "devkit" / "cars_meta.mat",
        {"class_names": np.array([f"car {k}" for k in range(10)], dtype=object)},
    )
    for images, folder, annotations in (
        (train, "cars_train", base / "devkit" / "cars_train_annos.mat"),
        (test, "cars_test", base / "cars_test_annos_withlabels.mat"),
    ):
        names = _save_jpegs(base / folder, images, "{:05d}.jpg")
        records = np.array([(name, label + 1) for name, (_, label) in zip(names, images)], dtype=annotation)
        scipy.io.savemat(annotations, {"annotations": records})
    data = load_dataset("stanford_cars", validation_fraction=0.5, data_root=tmp_path, progress=False)
    assert data.classes[0] == "car 0" and data.image_size == (64, 64)
    assert len(data.test_labels) == 10 and sorted(data.test_labels.tolist()) == list(range(10))


def test_caltech101_layout_with_grayscale_images_and_a_fixed_split(cifar10_sample, tmp_path):
    base = tmp_path / "caltech101" / "101_ObjectCategories"
    images = _real_images(cifar10_sample, 5)
    for label, name in enumerate(CLASSES):
        _save_jpegs(
            base / name, [item for item in images if item[1] == label], "image_{:04d}.jpg", grayscale_every=2
        )
    _save_jpegs(base / "BACKGROUND_Google", images[:3], "image_{:04d}.jpg")
    first = load_dataset(
        "caltech101", validation_fraction=0.25, data_root=tmp_path, image_size=32, progress=False
    )
    assert first.classes == tuple(sorted(CLASSES)) and first.channels == 3
    assert len(first.test_labels) == 10 and torch.bincount(first.test_labels).tolist() == [1] * 10
    again = load_dataset(
        "caltech101", validation_fraction=0.25, data_root=tmp_path, image_size=32, progress=False
    )
    assert torch.equal(first.test_images, again.test_images)


def _tiny_folder(root: Path, cifar10_sample: Path, classes=("cat", "dog"), per_class=30) -> Path:
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for path in sorted((cifar10_sample / split / name).iterdir())[:per_class]:
                shutil.copy(path, root / split / name / path.name)
    return root


def test_unreadable_images_are_skipped_with_a_warning_or_refused_above_one_percent(cifar10_sample, tmp_path):
    root = _tiny_folder(tmp_path / "set", cifar10_sample, per_class=60)
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(f"folder:{root}", progress=False)
    messages = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert messages == [
        f"skipped 1 unreadable image(s) of 121 (first: {root / 'train' / 'cat' / 'broken.jpg'})"
    ]
    assert len(data.train_labels) + len(data.val_labels) == 120
    for k in range(3):
        (root / "train" / "dog" / f"broken{k}.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UsageError, match="4 of 124 images could not be read"):
        load_dataset(f"folder:{root}", progress=False)


@pytest.mark.parametrize(
    "arrange, message",
    [
        ("missing", "image folder not found: expected {root}"),
        ("one_class", "has 1 class folder(s); a classifier needs at least 2"),
        ("empty_test", "holds no images"),
        ("cifar_missing", "CIFAR-10 file data_batch_1 not found: expected"),
    ],
)
def test_data_errors_exit_2_with_one_line_and_write_no_study(
    cifar10_sample, tmp_path, sqlite_url, arrange, message
):
    root = tmp_path / "set"
    dataset = f"folder:{root}"
    if arrange == "one_class":
        _tiny_folder(root, cifar10_sample, classes=("cat",))
    elif arrange == "empty_test":
        _tiny_folder(root, cifar10_sample)
        for folder in (root / "test").iterdir():
            shutil.rmtree(folder)
            folder.mkdir()
    elif arrange == "cifar_missing":
        dataset = "cifar10"
    result = run_cli(
        "search",
        "--dataset",
        dataset,
        "--data-root",
        str(tmp_path),
        "--storage",
        sqlite_url,
        "--n-trials",
        "1",
        "--no-progress",
    )
    assert result.returncode == 2, result.stderr
    assert message.format(root=root) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
    if arrange == "cifar_missing":
        assert "--download" in result.stderr
