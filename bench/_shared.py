"""Helpers the benchmarks share: the real CIFAR-10 JPEG folder, unpacked once."""

from __future__ import annotations

import argparse
import tarfile
import tomllib
from pathlib import Path
from typing import Any

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


def add_overrides_option(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable): a search-config key with a TOML value, e.g. ``subset=3000``."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a search-config key (a TOML value)",
    )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys given with ``--set`` (:func:`add_overrides_option`)."""
    return tomllib.loads("\n".join(args.set))
