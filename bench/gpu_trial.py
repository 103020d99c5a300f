"""P5: the default CIFAR-10 trial on a GPU: its time and validation accuracy over seeds, per loss.

    python bench/gpu_trial.py --dataset folder:/path/to/cifar10-jpeg [--config TOML] [--compile]
                              [--set KEY=VALUE ...] [--seeds 3] [--breakdown] [--reference RUNS]
                              [--device cpu]

The trial of ``--config`` (default ``studies/cifar10.toml``: the airbench
surrogate) on the 40,000/10,000 train/validation split, trained with
cross-entropy, the zoo's ``label_smoothing`` (1.2475 x cross-entropy with
smoothing 0.198: under SGD a 25 % larger step) and label smoothing 0.2 exactly
(airbench94's loss), each for ``--seeds`` seeds after one untimed warm-up run
(kernel tuning, compilation with ``--compile``). A run is timed from the data on
the device to its scores (the validation images and their ten corrupted copies,
mirrored views included). Goal: at most 3 s with at least 89.5 % validation
accuracy. ``--breakdown`` also times one epoch as it is, the same epoch with no
augmentation at all, and scoring alone, so the next speed-up is aimed at the
right part. ``--set`` overrides config keys (``model="cnn"``, ``epochs=8``).
``--reference RUNS`` also times airbench94 (the ``airbench`` package, when
installed) the same way on the same split and prints the ratio. ``--device cpu``
tries the script out on a CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import time
from collections.abc import Callable

import torch

from optiloss.augment.pipelines import one_hot
from optiloss.genome import screen, zoo
from optiloss.models import create_model
from optiloss.scoring import LossEvaluator, load_data
from optiloss.settings import SearchConfig
from optiloss.train import LossFunction, seeded, train

from _shared import add_overrides_option, config_overrides
from airbench_reference import airbench_reference

AIRBENCH_SMOOTHING = 0.2


def label_smoothing(smoothing: float, num_classes: int) -> LossFunction:
    """Cross-entropy against ``(1 - smoothing) y + smoothing / C``, as ``torch.nn.CrossEntropyLoss``'s
    ``label_smoothing`` (averaged over the batch)."""

    def loss(y: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        smoothed = (1 - smoothing) * y + smoothing / num_classes
        return -(smoothed * torch.log(p.clamp_min(1e-12))).sum(1).mean()

    return loss


def timed(work: Callable[[], object], synchronize: Callable[[], None]) -> tuple[float, object]:
    synchronize()
    started = time.perf_counter()
    result = work()
    synchronize()
    return time.perf_counter() - started, result


def breakdown(evaluator: LossEvaluator, loss: LossFunction, synchronize: Callable[[], None]) -> None:
    """Seconds of one training epoch with the study's augmentation and with none, and of scoring."""
    data, settings = evaluator.data, dataclasses.replace(evaluator.train_settings, epochs=1)
    augmentation = evaluator.augmentation(evaluator.settings.augmentation)

    def no_augmentation(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images, one_hot(labels, data.num_classes, images.dtype)

    def one_epoch(pipeline) -> Callable[[], object]:
        def work():
            with seeded(0, evaluator.device):
                model = create_model(
                    evaluator.model, data.num_classes, data.channels, evaluator.model_width
                ).to(evaluator.device)
                train(model, data.train_images, data.train_labels, loss, pipeline, settings)
                return model

        return work

    one_epoch(augmentation)()  # warm-up
    augmented, model = timed(one_epoch(augmentation), synchronize)
    plain, _ = timed(one_epoch(no_augmentation), synchronize)
    scoring, _ = timed(lambda: evaluator.score(model), synchronize)
    steps = len(data.train_labels) // min(settings.batch_size, len(data.train_labels))
    print(
        f"one epoch ({steps} steps): {augmented:.3f} s with augmentation "
        f"({1000 * augmented / steps:.2f} ms a step), {plain:.3f} s without "
        f"({1000 * plain / steps:.2f} ms a step); scoring alone {scoring:.3f} s "
        f"({len(evaluator.corrupted) + 1} image sets)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument(
        "--config",
        default="studies/cifar10.toml",
        help='a study TOML; "" for the search defaults (the CNN surrogate)',
    )
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true", help="also time one epoch's parts")
    parser.add_argument(
        "--reference",
        type=int,
        default=0,
        metavar="RUNS",
        help="also time airbench94 on the same split (RUNS timed runs)",
    )
    add_overrides_option(parser)
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try the script out")
    args = parser.parse_args()
    device = torch.device(args.device)
    overrides = config_overrides(args)
    config = SearchConfig.load(
        args.config or None,
        {"dataset": args.dataset, "device": args.device, "compile": args.compile, **overrides},
    )
    data = load_data(config, progress=False).to(device)
    evaluator = LossEvaluator.for_search(config, data, device)
    losses: dict[str, LossFunction] = {
        "cross_entropy": screen(zoo()["cross_entropy"]).genome,
        "label_smoothing (zoo)": screen(zoo()["label_smoothing"]).genome,
        f"label smoothing {AIRBENCH_SMOOTHING}": label_smoothing(AIRBENCH_SMOOTHING, data.num_classes),
    }
    augmentation = evaluator.augmentation(config.augmentation)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"{name}: {args.config or 'the default'} trial ({config.model}, epochs {config.epochs}, width "
        f"{config.model_width}, batch {config.batch_size}, lr {config.learning_rate}, "
        f"compile {args.compile}) on {len(data.train_labels)} images, scored on {len(data.val_labels)} "
        f"validation images and {len(evaluator.corrupted)} corrupted copies"
    )
    evaluator.evaluate(losses["cross_entropy"], augmentation, seed=0)  # warm-up: cuDNN tuning, compilation
    mean_seconds = None
    for label, loss in losses.items():
        seconds, scores = [], []
        for seed in range(1, args.seeds + 1):
            run = functools.partial(evaluator.evaluate, loss, augmentation, seed=seed)
            second, result = timed(run, synchronize)
            seconds.append(second)
            scores.append(result.accuracy)
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        print(
            f"{label}: trial {statistics.mean(seconds):.2f} s (min {min(seconds):.2f}), validation "
            f"accuracy {statistics.mean(scores):.4f} +- {spread:.4f} over {len(scores)} seeds"
        )
        mean_seconds = mean_seconds or statistics.mean(seconds)
    if args.breakdown:
        breakdown(evaluator, losses["cross_entropy"], synchronize)
    if args.reference:
        reference = airbench_reference(config, args.reference)
        if reference is not None:
            print(
                f"optiloss trial (cross-entropy) / airbench94: ratio {mean_seconds / reference[0]:.2f} "
                "in seconds"
            )


if __name__ == "__main__":
    main()
