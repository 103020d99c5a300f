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
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from optiloss.data import ImageSplits
from optiloss.scoring import load_data
from optiloss.settings import SearchConfig

from _shared import profiled, report_figures

TIMED_TTA_LEVEL = 1
"""Mirror test-time augmentation, as optiloss scores the airbench surrogate."""
AIRBENCH_AUGMENTATION = {"flip": True, "translate": 2}
SHUFFLE_SEED = 0
STEP_TIMING_STEPS = 20


@dataclass(frozen=True)
class Reference:
    """airbench94 on the P5 split: mean seconds per run (training and scoring), mean validation
    accuracy, and milliseconds of a steady training step."""

    seconds: float
    accuracy: float
    step_ms: float


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
    order = torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(SHUFFLE_SEED))
    write_split(
        data.train_images[order], data.train_labels[order], data.classes, folder / "cifar10" / "train.pt"
    )
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


def airbench_steps(airbench: ModuleType, train_loader, label_smoothing: float = 0.2) -> Callable[[int], None]:
    """A callable running ``n`` steps of airbench94's training loop (its network, loss and SGD with
    Nesterov momentum; no schedule or lookahead, which cost no kernels worth timing) on fresh batches."""
    model = airbench.make_net94()
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=label_smoothing, reduction="none")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.85, nesterov=True)

    def run(steps: int) -> None:
        done = 0
        while done < steps:
            for inputs, labels in train_loader:
                loss = loss_fn(model(inputs), labels).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                done += 1
                if done == steps:
                    return

    return run


def airbench_reference(config: SearchConfig, runs: int = 3, profile_steps: int = 0) -> Reference | None:
    """airbench94 on ``config``'s split (:class:`Reference`), or None (saying why) without the package
    or a GPU; ``profile_steps`` of its training loop also run under the profiler."""
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
        steps = airbench_steps(airbench, train_loader)
        steps(STEP_TIMING_STEPS)  # warm-up
        torch.cuda.synchronize()
        started = time.perf_counter()
        steps(STEP_TIMING_STEPS)
        torch.cuda.synchronize()
        step_ms = 1000 * (time.perf_counter() - started) / STEP_TIMING_STEPS
        if profile_steps:
            profiled("airbench94", lambda: steps(profile_steps), profile_steps, torch.device("cuda"))
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
        f"({len(data.train_labels)} training, {len(data.val_labels)} validation images); "
        f"{step_ms:.2f} ms a training step"
    )
    reference = Reference(statistics.mean(seconds), statistics.mean(accuracies), step_ms)
    report_figures(
        airbench94={"trial_s": reference.seconds, "accuracy": reference.accuracy, "step_ms": step_ms}
    )
    return reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", default="studies/cifar10.toml")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    airbench_reference(SearchConfig.load(args.config, {"dataset": args.dataset}), args.runs)


if __name__ == "__main__":
    main()
