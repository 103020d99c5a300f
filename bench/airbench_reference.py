"""The airbench94 reference beside P5: the `airbench` package on the same split, its seconds and accuracy.

    python bench/airbench_reference.py --dataset folder:/path/to/cifar10-jpeg [--runs 3] [--config TOML]

Trains airbench94 (Keller Jordan, arXiv 2404.00498; ``pip install airbench==0.1.8``)
on exactly the training and validation images of the P5 trial (the split of
``--config``, default ``studies/cifar10.toml``), timed as optiloss's trial is:
the data already on the device and the loaders built before the timer (its
``CifarLoader`` reads ``cifar10/train.pt`` and ``cifar10/test.pt``, written here
into a temporary folder); inside the timer, ``train94`` (training, label
smoothing 0.2, its own 9.9 epochs) and then ``airbench.evaluate`` on the
validation images with mirror test-time augmentation (``tta_level`` 1, as
optiloss scores its airbench trials; airbench's default level 2 adds two
translated views and is printed untimed beside it). ``train94`` builds its own
test loader, which it only uses with ``verbose``; here it is handed the one
built before the timer, so no file is read inside it. One warm-up run, then
``--runs`` timed ones. Without the package (or a GPU) it says so and returns,
so the GPU script goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch

from optiloss.data import ImageSplits
from optiloss.scoring import load_data
from optiloss.settings import SearchConfig

TIMED_TTA_LEVEL = 1
"""Mirror test-time augmentation, as optiloss scores the airbench surrogate."""
AIRBENCH_AUGMENTATION = {"flip": True, "translate": 2}


def write_split(images: torch.Tensor, labels: torch.Tensor, classes, path: Path) -> None:
    """One split in the file format of airbench's ``CifarLoader``: uint8 images N x H x W x C on the
    CPU (it moves them to the device itself), int64 labels and the class names."""
    torch.save(
        {"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels, "classes": list(classes)}, path
    )


def airbench_loaders(
    airbench: ModuleType, data: ImageSplits, folder: Path, device: str | int = 0, batch_size: int = 1024
):
    """(training loader, validation loader) of the ``airbench`` package over ``data``'s training and
    validation parts, written under ``folder/cifar10``; ``device`` as airbench's ``gpu`` argument."""
    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    write_split(data.train_images, data.train_labels, data.classes, folder / "cifar10" / "train.pt")
    write_split(data.val_images, data.val_labels, data.classes, folder / "cifar10" / "test.pt")
    train_loader = airbench.CifarLoader(
        str(folder / "cifar10"),
        train=True,
        batch_size=batch_size,
        aug=AIRBENCH_AUGMENTATION,
        altflip=True,
        gpu=device,
    )
    test_loader = airbench.CifarLoader(str(folder / "cifar10"), train=False, batch_size=2000, gpu=device)
    return train_loader, test_loader


def timed_runs(
    run_once: Callable[[int], float], runs: int, synchronize: Callable[[], None]
) -> tuple[list[float], list[float]]:
    """(seconds, accuracies) of ``runs`` calls of ``run_once(run)`` after one untimed warm-up call,
    each timed between two device synchronisations."""
    run_once(-1)
    seconds, accuracies = [], []
    for run in range(runs):
        synchronize()
        started = time.perf_counter()
        accuracies.append(run_once(run + 1))
        synchronize()
        seconds.append(time.perf_counter() - started)
    return seconds, accuracies


@contextlib.contextmanager
def _prebuilt_test_loader(airbench: ModuleType, test_loader) -> Iterator[None]:
    """``train94`` builds a test loader from ``cifar10/test.pt`` on every run (it evaluates with it only
    when ``verbose``); hand it the one built before the timer instead."""
    utils = airbench.utils
    original = utils.CifarLoader

    def loader(path, train=True, *args, **kwargs):
        return original(path, train, *args, **kwargs) if train else test_loader

    utils.CifarLoader = loader
    try:
        yield
    finally:
        utils.CifarLoader = original


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
        train_loader, test_loader = airbench_loaders(airbench, data, Path(folder))
        models = []

        def run_once(run: int) -> float:
            models[:] = [airbench.train94(train_loader=train_loader, run=run, verbose=False)]
            return airbench.evaluate(models[0], test_loader, tta_level=TIMED_TTA_LEVEL)

        with _prebuilt_test_loader(airbench, test_loader):
            seconds, accuracies = timed_runs(run_once, runs, torch.cuda.synchronize)
        full_tta = airbench.evaluate(models[0], test_loader, tta_level=2)
    for run, (second, score) in enumerate(zip(seconds, accuracies)):
        print(
            f"airbench94 run {run + 1}: {second:.2f} s, validation accuracy {score:.4f} "
            f"(tta_level {TIMED_TTA_LEVEL})"
        )
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    print(
        f"airbench94 reference: {statistics.mean(seconds):.2f} s per run (training and scoring), "
        f"validation accuracy {statistics.mean(accuracies):.4f} +- {spread:.4f} at tta_level "
        f"{TIMED_TTA_LEVEL}; last run at tta_level 2 (untimed): {full_tta:.4f} "
        f"({len(data.train_labels)} training, {len(data.val_labels)} validation images)"
    )
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
