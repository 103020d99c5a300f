"""First (decoding) and cached load of the real CIFAR-10 JPEG folder: seconds, ratio, peak memory.

    python bench/data_loading.py [--archive ../shared/data/cifar10-jpeg.tar.xz]

Unpacks the archive into a temporary folder, then loads ``folder:<that>`` twice,
each time in a fresh process with an empty-then-warm private cache, so each
load's peak resident memory is its own. The last line gives the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_once(folder: str) -> None:
    from optiloss.data import load_dataset

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    data = load_dataset(f"folder:{folder}", progress=False)
    seconds = time.perf_counter() - started
    held = sum(
        getattr(data, f).numel() * getattr(data, f).element_size()
        for f in ("train_images", "val_images", "test_images")
    )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_after_imports_mb": before,
                "images_mb": held / 2**20,
                "images": len(data.train_labels) + len(data.val_labels) + len(data.test_labels),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.xz"))
    parser.add_argument("--load-once", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_once:
        _load_once(args.load_once)
        return
    with tempfile.TemporaryDirectory() as workspace:
        folder = str(Path(workspace) / "cifar10")
        with tarfile.open(args.archive) as archive:
            archive.extractall(folder, filter="data")
        environment = {**os.environ, "OPTILOSS_CACHE": str(Path(workspace) / "cache")}
        runs = []
        for label in ("first (decode)", "cached"):
            output = subprocess.run(
                [sys.executable, __file__, "--load-once", folder],
                env=environment,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            runs.append(json.loads(output.strip().splitlines()[-1]))
            print(
                f"{label:15s} {runs[-1]['seconds']:7.3f} s  peak RSS {runs[-1]['peak_rss_mb']:7.0f} MB  "
                f"(after imports {runs[-1]['rss_after_imports_mb']:.0f} MB; {runs[-1]['images']} images, "
                f"{runs[-1]['images_mb']:.0f} MB as uint8)"
            )
    print(
        f"cached load is {runs[0]['seconds'] / runs[1]['seconds']:.1f}x faster than the first "
        f"({runs[0]['seconds']:.2f} s -> {runs[1]['seconds']:.3f} s)"
    )


if __name__ == "__main__":
    main()
