"""The released CIFAR-10-C / CIFAR-100-C files: reading, checking, and the transfer report's columns."""

import csv
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from optiloss.augment.corruptions import RELEASED_NAMES, corrupt
from optiloss.data import load_dataset
from optiloss.data.released import (
    LABELS_FILE,
    RELEASED_CORRUPTIONS,
    SEVERITIES,
    ReleasedCorruptions,
    write_released_layout,
)
from optiloss.errors import UsageError

from conftest import CIFAR10_SAMPLE, run_cli, small_search

GENERATED_AS = {released: name for name, released in RELEASED_NAMES.items()}
"""Each released corruption's generator in optiloss."""


def generated_blocks(images, corruption: str) -> list[np.ndarray]:
    """The five severities of ``corruption`` made by optiloss's own suite, as (N, H, W, 3) uint8."""
    name = GENERATED_AS[corruption]
    return [
        corrupt(images, name, severity, seed=severity).permute(0, 2, 3, 1).numpy() for severity in SEVERITIES
    ]


@pytest.fixture(scope="module")
def sample_test_split():
    data = load_dataset(f"folder:{CIFAR10_SAMPLE}", progress=False)
    return data.test_images, data.test_labels.numpy()


@pytest.fixture(scope="module")
def released_folder(tmp_path_factory, sample_test_split):
    """A folder in the released layout, written from the 200 real CIFAR-10 test images of the sample."""
    images, labels = sample_test_split
    blocks = {corruption: generated_blocks(images, corruption) for corruption in RELEASED_CORRUPTIONS}
    return write_released_layout(tmp_path_factory.mktemp("cifar10-c"), blocks, labels), blocks


def test_the_reader_slices_each_severity_from_its_rows_and_reads_memory_mapped(
    released_folder, sample_test_split, monkeypatch
):
    folder, blocks = released_folder
    _, labels = sample_test_split
    modes = []
    load = np.load
    monkeypatch.setattr(
        np, "load", lambda *args, **kwargs: modes.append(kwargs.get("mmap_mode")) or load(*args, **kwargs)
    )
    released = ReleasedCorruptions.open(folder, labels)
    assert released.per_severity == len(labels) == 200
    for severity in SEVERITIES:
        block = released.images("contrast", severity)
        assert block.shape == (200, 3, 32, 32) and block.dtype.is_floating_point is False
        assert np.array_equal(block.permute(0, 2, 3, 1).numpy(), blocks["contrast"][severity - 1])
    assert not np.array_equal(released.images("contrast", 1).numpy(), released.images("contrast", 5).numpy())
    assert modes and set(modes) == {"r"}  # every file is memory-mapped, none read whole
    seen = [(corruption, severity) for corruption, severity, _ in released.blocks()]
    assert len(seen) == 15 * 5 and seen[0] == ("gaussian_noise", 1) and seen[-1] == ("jpeg_compression", 5)


def _copy(folder: Path, target: Path) -> Path:
    target.mkdir()
    for path in folder.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda f: (f / "snow.npy").unlink(), "snow.npy is missing"),
        (lambda f: (f / "fog.npy").write_text("not an array"), "fog.npy is not a NumPy array file"),
        (
            lambda f: np.save(f / "frost.npy", np.zeros((1000, 32, 32), np.uint8)),
            "frost.npy is uint8 of shape (1000, 32, 32)",
        ),
        (
            lambda f: np.save(f / "zoom_blur.npy", np.zeros((1000, 32, 32, 3), np.float32)),
            "zoom_blur.npy is float32",
        ),
        (
            lambda f: np.save(f / LABELS_FILE, np.zeros(50_000, np.int64)),
            "has shape (50000,); the test split has 200",
        ),
        (
            lambda f: np.save(f / LABELS_FILE, np.roll(np.load(f / LABELS_FILE), 1)),
            "does not match the test split's labels",
        ),
    ],
)
def test_each_bad_file_is_one_usage_error_naming_it(
    released_folder, sample_test_split, tmp_path, damage, named
):
    folder = _copy(released_folder[0], tmp_path / "damaged")
    damage(folder)
    with pytest.raises(UsageError) as raised:
        ReleasedCorruptions.open(folder, sample_test_split[1])
    assert named in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.slow
def test_a_transfer_scored_on_the_released_files_reports_cifar_c_beside_the_clean_accuracy(
    released_folder, tmp_path
):
    url = small_search(tmp_path, n_trials=7, population_size=7)  # the six zoo losses and one found
    options = [
        "transfer",
        "digits-base",
        "--storage",
        url,
        "--model",
        "wrn-10-1",
        "--dataset",
        f"folder:{CIFAR10_SAMPLE}",
        "--top-k",
        "1",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--output",
        str(tmp_path / "report"),
    ]
    bad = run_cli(*options, "--corruptions", str(tmp_path))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr  # after the data's progress bars, one line:
    assert bad.stderr.strip().splitlines()[-1].startswith("optiloss: error: ")
    assert "labels.npy is missing" in bad.stderr.strip().splitlines()[-1]
    result = run_cli(*options, "--corruptions", str(released_folder[0]))
    assert result.returncode == 0, result.stderr
    name = next(
        s.study_name for s in optuna.get_all_study_summaries(url) if "-transfer-wrn-10-1-" in s.study_name
    )
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    for trial in trials:
        blocks = {key: value for key, value in trial.user_attrs.items() if key.startswith("cifar_c_")}
        assert len(blocks) == 75 and "cifar_c_elastic_transform_s5" in blocks
        assert trial.user_attrs["cifar_c"] == pytest.approx(sum(blocks.values()) / 75)
    header = result.stdout.split("\n\n")[1].splitlines()[0]
    for column in ("test_accuracy", "robustness", "cifar_c", "p_cifar_c", "cifar_c_s1", "cifar_c_s5"):
        assert column in header
    stem = name.replace("/", "_").replace(":", "_")
    with open(tmp_path / "report" / f"{stem}-cifar-c.csv") as handle:
        rows = list(csv.DictReader(handle))
    losses = {trial.user_attrs["loss"] for trial in trials}
    assert len(rows) == len(losses) * 75
    assert {row["corruption"] for row in rows} == set(RELEASED_CORRUPTIONS)
    assert all(row["seeds"] == "2" and 0 <= float(row["accuracy"]) <= 1 for row in rows)


def test_optiloss_writes_its_own_fifteen_corruptions_in_the_released_layout(sample_test_split, tmp_path):
    from optiloss.augment.corruptions import write_generated_layout

    images, labels = sample_test_split
    folder = write_generated_layout(tmp_path / "generated-c", images[:40], torch.from_numpy(labels[:40]))
    released = ReleasedCorruptions.open(folder, labels[:40])
    blocks = list(released.blocks())
    assert [(corruption, severity) for corruption, severity, _ in blocks] == [
        (corruption, severity) for corruption in RELEASED_CORRUPTIONS for severity in SEVERITIES
    ]
    for corruption, severity, block in blocks:
        assert block.shape == images[:40].shape and block.dtype == images.dtype
        assert (block.float() - images[:40].float()).abs().mean() > 1.0, (corruption, severity)
