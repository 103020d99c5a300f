"""The airbench94 reference beside P5: the `airbench` package on the same split, its seconds and accuracy.

    python bench/airbench_reference.py --dataset folder:/path/to/cifar10-jpeg [--runs 3] [--config TOML]

Trains airbench94 (Keller Jordan, arXiv 2404.00498; ``pip install airbench``)
on exactly the training and validation images of the P5 trial (the split of
``--config``, default ``studies/cifar10.toml``): its ``CifarLoader`` reads them
from ``cifar10/train.pt`` and ``cifar10/test.pt``, written here into a
temporary folder. One warm-up run, then ``--runs`` timed ones (training and
evaluation with its flip-and-translate test-time augmentation). Prints one line
per run and their mean; ``bench/gpu.sh`` prints P5's ratio against it. Without
the package (or a GPU) it says so and exits 0, so the GPU script goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from optiloss.evaluate import load_data
from optiloss.settings import SearchConfig


def _write_split(images: torch.Tensor, labels: torch.Tensor, classes, path: Path) -> None:
    # airbench's loader takes uint8 images as N x H x W x C on the CPU and moves them to the GPU itself
    torch.save({"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels,
                "classes": list(classes)}, path)


def airbench_reference(config: SearchConfig, runs: int = 3) -> tuple[float, float] | None:
    """Mean seconds per run and mean validation accuracy of airbench94 on ``config``'s split,
    or None (saying why) without the package or a GPU."""
    try:
        import airbench
    except ImportError:
        print("airbench reference: skipped, the airbench package is not installed (pip install airbench)")
        return None
    if not torch.cuda.is_available():
        print("airbench reference: skipped, airbench needs a CUDA GPU")
        return None
    data = load_data(config, progress=False)
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        os.makedirs("cifar10")
        _write_split(data.train_images, data.train_labels, data.classes, Path("cifar10/train.pt"))
        _write_split(data.val_images, data.val_labels, data.classes, Path("cifar10/test.pt"))
        airbench.warmup94(verbose=False)
        seconds, accuracies = [], []
        for run in range(runs):
            torch.cuda.synchronize()
            started = time.perf_counter()
            accuracy = airbench.train94(run=run + 1, verbose=False)
            torch.cuda.synchronize()
            seconds.append(time.perf_counter() - started)
            accuracies.append(float(accuracy))
            print(f"airbench94 run {run + 1}: {seconds[-1]:.2f} s, validation accuracy {accuracies[-1]:.4f}")
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    print(f"airbench94 reference: {statistics.mean(seconds):.2f} s per run, validation accuracy "
          f"{statistics.mean(accuracies):.4f} +- {spread:.4f} "
          f"({len(data.train_labels)} training, {len(data.val_labels)} validation images)")
    return statistics.mean(seconds), statistics.mean(accuracies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", default="studies/cifar10.toml")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    airbench_reference(SearchConfig.load(args.config, {"dataset": args.dataset}), args.runs)


if __name__ == "__main__":
    main()
