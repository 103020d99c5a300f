"""The released CIFAR-10-C and CIFAR-100-C files (Hendrycks & Dietterich, 2019), as robustness is
reported in the literature (RobustBench, AugMix).

The released layout is one folder holding ``<corruption>.npy`` for each of the fifteen corruptions,
each a uint8 array of 50,000 x 32 x 32 x 3 (height, width, RGB), severity s in rows
10,000 (s - 1) to 10,000 s, and ``labels.npy``, the test labels repeated for each severity. The
four extra corruptions of the release (speckle noise, Gaussian blur, spatter, saturate) may lie
beside them; by convention they stay out of the headline and are not read.

:meth:`ReleasedCorruptions.open` checks the whole folder before anything trains (every problem is
one :class:`~optiloss.errors.UsageError` naming the file); :meth:`ReleasedCorruptions.images` then
reads one corruption at one severity at a time, memory-mapped, so at most one block of 10,000
images (30 MB) is in memory, never a whole 150 MB file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from optiloss.errors import UsageError

RELEASED_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
"""The fifteen corruptions of the headline number, in the release's order."""
SEVERITIES = (1, 2, 3, 4, 5)
LABELS_FILE = "labels.npy"
WHERE_FROM = (
    "CIFAR-10-C: https://zenodo.org/records/2535967, CIFAR-100-C: https://zenodo.org/records/3555552 "
    "(unpack the .tar so that the .npy files lie in one folder)"
)


def released_key(corruption: str, severity: int) -> str:
    """How a run records its accuracy on one corruption at one severity: ``<corruption>_s<severity>``."""
    return f"{corruption}_s{severity}"


def split_released_key(key: str) -> tuple[str, int]:
    """(corruption, severity) of a :func:`released_key`."""
    corruption, _, severity = key.rpartition("_s")
    return corruption, int(severity)


def _load(path: Path) -> np.ndarray:
    """``path`` memory-mapped; a missing or non-NumPy file is a :class:`UsageError` naming it."""
    if not path.is_file():
        raise UsageError(f"{path} is missing: the released layout has one .npy per corruption ({WHERE_FROM})")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise UsageError(f"{path} is not a NumPy array file (.npy): {error}") from None


@dataclass(frozen=True)
class ReleasedCorruptions:
    """A checked folder in the released layout; ``per_severity`` images per severity."""

    folder: Path
    per_severity: int

    @classmethod
    def open(cls, folder: str | Path, test_labels: np.ndarray) -> ReleasedCorruptions:
        """Check ``folder`` against the test split's labels: ``labels.npy`` must hold them once per
        severity, in the same order, and every corruption file must be a uint8 array of
        (5 x the test split, height, width, 3)."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise UsageError(f"--corruptions {folder} is not a folder ({WHERE_FROM})")
        count = len(test_labels)
        labels = _load(folder / LABELS_FILE)
        if labels.shape != (count * len(SEVERITIES),):
            raise UsageError(
                f"{folder / LABELS_FILE} has shape {labels.shape}; the test split has {count} images, so "
                f"the released layout has {count * len(SEVERITIES)} labels (one block per severity): "
                "are these the files of this data set?"
            )
        for severity in SEVERITIES:
            block = np.asarray(labels[(severity - 1) * count : severity * count])
            differing = np.flatnonzero(block != test_labels)
            if len(differing):
                row = (severity - 1) * count + int(differing[0])
                raise UsageError(
                    f"{folder / LABELS_FILE} does not match the test split's labels (first at row {row}): "
                    "the files must be of this data set's test split, in its order"
                )
        for corruption in RELEASED_CORRUPTIONS:
            path = folder / f"{corruption}.npy"
            images = _load(path)
            if (
                images.dtype != np.uint8
                or images.ndim != 4
                or images.shape[0] != len(labels)
                or images.shape[3] != 3
            ):
                raise UsageError(
                    f"{path} is {images.dtype} of shape {images.shape}; expected uint8 of shape "
                    f"({len(labels)}, height, width, 3)"
                )
        return cls(folder, count)

    def images(self, corruption: str, severity: int) -> torch.Tensor:
        """The uint8 images (N, 3, H, W) of ``corruption`` at ``severity``, read from the memory map."""
        array = np.load(self.folder / f"{corruption}.npy", mmap_mode="r")
        rows = slice((severity - 1) * self.per_severity, severity * self.per_severity)
        block = np.array(array[rows])  # this block alone is read from the file
        return torch.from_numpy(block).permute(0, 3, 1, 2).contiguous()

    def blocks(self) -> Iterator[tuple[str, int, torch.Tensor]]:
        """(corruption, severity, images) for every corruption and severity, one block at a time."""
        for corruption in RELEASED_CORRUPTIONS:
            for severity in SEVERITIES:
                yield corruption, severity, self.images(corruption, severity)


def write_released_layout(
    folder: str | Path, blocks: dict[str, list[np.ndarray]], test_labels: np.ndarray
) -> Path:
    """Write ``blocks`` (corruption -> one uint8 (N, H, W, 3) array per severity) and the labels in the
    released layout; for tests and for data sets without released files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / LABELS_FILE, np.tile(np.asarray(test_labels, dtype=np.int64), len(SEVERITIES)))
    for corruption, severities in blocks.items():
        np.save(folder / f"{corruption}.npy", np.concatenate(severities).astype(np.uint8))
    return folder
