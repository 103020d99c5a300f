"""Helpers the benchmarks share: the real CIFAR-10 JPEG folder, unpacked once."""

from __future__ import annotations

import tarfile
from pathlib import Path

from optiloss.data import default_data_root

ROOT = Path(__file__).resolve().parents[1]
CIFAR_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.xz"


def cifar10_jpeg_folder(archive: Path = CIFAR_ARCHIVE) -> Path:
    """``<data root>/cifar10-jpeg`` (train/ and test/ class folders), unpacked from the
    shared archive if missing."""
    target = default_data_root() / "cifar10-jpeg"
    if not (target / "test").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as handle:
            handle.extractall(target, filter="data")
    return target
