"""P5: the default CIFAR-10 trial on a GPU: its time and validation accuracy over seeds, per loss.

    python bench/gpu_trial.py --dataset folder:/path/to/cifar10-jpeg [--config TOML] [--compile]
                              [--set KEY=VALUE ...] [--seeds 3] [--losses NAME ...] [--breakdown]
                              [--profile STEPS] [--reference RUNS] [--device cpu]

The trial of ``--config`` (default ``studies/cifar10.toml``: the airbench
surrogate) on the 40,000/10,000 train/validation split, trained with
cross-entropy, the zoo's ``label_smoothing`` (1.2475 x cross-entropy with
smoothing 0.198: under SGD a 25 % larger step) and label smoothing 0.2 exactly
(airbench94's loss), each for ``--seeds`` seeds after one untimed warm-up run
(kernel tuning; with ``--compile`` every loss is warmed, so no compilation is
timed); ``--losses`` keeps some of them. A run is timed from the data on
the device to its scores (the validation images and their ten corrupted copies,
mirrored views included). Per loss it prints the trial's seconds, its training
and scoring seconds, and the milliseconds of a training step over epochs 2 on
(from the run's own history: no set-up, no first-epoch tuning). Goal: at most
3 s with at least 89.5 % validation accuracy. ``--breakdown`` also times one
epoch as it is (set-up included), the same epoch with no augmentation at all,
and scoring alone, so the next speed-up is aimed at the right part. ``--set``
overrides config keys (``model="cnn"``, ``epochs=8``).
``--reference RUNS`` also times airbench94 (the ``airbench`` package, when
installed) the same way on the same split and prints the ratios on the like-for-like
row, label smoothing 0.2: per trial and per training step. ``--profile STEPS``
runs ``STEPS`` training steps of each side under ``torch.profiler`` and prints the
busy device time against the wall time per step and the top kernels (busy far
below wall: the step is launch-bound). ``--device cpu`` tries the script out on
a CPU. Figures also go to ``bench/gpu.sh``'s results file.
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
from optiloss.genome import BASELINE, baseline_genome, screen, zoo
from optiloss.models import create_model
from optiloss.scoring import Evaluation, LossEvaluator, load_data
from optiloss.settings import SearchConfig
from optiloss.train import LossFunction, seeded, train

from _shared import add_overrides_option, config_overrides, profiled, report_figures
from airbench_reference import airbench_reference

AIRBENCH_SMOOTHING = 0.2
LIKE_FOR_LIKE = "label_smoothing_0.2"
"""The row timed against airbench94, which trains with label smoothing 0.2 exactly."""


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


def steady_step_ms(evaluation: Evaluation, steps_per_epoch: int) -> float | None:
    """Milliseconds of a training step over epochs 2 on, from the run's history (None with one epoch)."""
    history = evaluation.history
    if len(history) < 2:
        return None
    return 1000 * (history[-1]["seconds"] - history[0]["seconds"]) / ((len(history) - 1) * steps_per_epoch)


def steps_per_epoch(evaluator: LossEvaluator) -> int:
    images = len(evaluator.data.train_labels)
    return images // min(evaluator.train_settings.batch_size, images)


def one_epoch(evaluator: LossEvaluator, loss: LossFunction, pipeline, images: int | None = None):
    """A callable training a fresh model for one epoch (on the first ``images`` training images)."""
    data, settings = evaluator.data, dataclasses.replace(evaluator.train_settings, epochs=1)
    count = images or len(data.train_labels)

    def work():
        with seeded(0, evaluator.device):
            model = create_model(evaluator.model, data.num_classes, data.channels, evaluator.model_width).to(
                evaluator.device
            )
            train(model, data.train_images[:count], data.train_labels[:count], loss, pipeline, settings)
            return model

    return work


def breakdown(evaluator: LossEvaluator, loss: LossFunction, synchronize: Callable[[], None]) -> None:
    """Seconds of one training epoch (set-up included) with the study's augmentation and with none,
    and of scoring."""
    data = evaluator.data
    augmentation = evaluator.augmentation(evaluator.settings.augmentation)

    def no_augmentation(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images, one_hot(labels, data.num_classes, images.dtype)

    one_epoch(evaluator, loss, augmentation)()  # warm-up
    augmented, model = timed(one_epoch(evaluator, loss, augmentation), synchronize)
    plain, _ = timed(one_epoch(evaluator, loss, no_augmentation), synchronize)
    scoring, _ = timed(lambda: evaluator.score(model), synchronize)
    print(
        f"one epoch with its set-up ({steps_per_epoch(evaluator)} steps): "
        f"{augmented:.3f} s with augmentation, "
        f"{plain:.3f} s without; scoring alone {scoring:.3f} s ({len(evaluator.corrupted) + 1} image sets)"
    )
    report_figures(epoch_s=augmented, epoch_without_augmentation_s=plain, scoring_s=scoring)


def profile_trial(evaluator: LossEvaluator, loss: LossFunction, steps: int) -> dict:
    """``steps`` training steps of the trial's recipe (one epoch on a prefix of the training set,
    whitening and optimiser set-up included) under the profiler."""
    images = steps * min(evaluator.train_settings.batch_size, len(evaluator.data.train_labels))
    work = one_epoch(evaluator, loss, evaluator.augmentation(evaluator.settings.augmentation), images)
    work()  # warm-up at this size
    return profiled("optiloss trial", work, steps, evaluator.device)


def trial_losses(num_classes: int) -> dict[str, LossFunction]:
    return {
        BASELINE: baseline_genome(),
        "label_smoothing": screen(zoo()["label_smoothing"]).genome,
        LIKE_FOR_LIKE: label_smoothing(AIRBENCH_SMOOTHING, num_classes),
    }


def time_losses(
    evaluator: LossEvaluator,
    losses: dict[str, LossFunction],
    seeds: int,
    synchronize: Callable[[], None],
    warm_each: bool,
) -> dict[str, dict[str, float]]:
    """Per loss: mean trial, training and scoring seconds, ms a step over epochs 2 on, and accuracy."""
    augmentation = evaluator.augmentation(evaluator.settings.augmentation)
    steps = steps_per_epoch(evaluator)
    rows = {}
    for label, loss in losses.items():
        if warm_each:
            evaluator.evaluate(loss, augmentation, seed=0)  # its compilation happens here, untimed
        seconds, runs = [], []
        for seed in range(1, seeds + 1):
            run = functools.partial(evaluator.evaluate, loss, augmentation, seed=seed)
            second, result = timed(run, synchronize)
            seconds.append(second)
            runs.append(result)
        scores = [run.accuracy for run in runs]
        step_ms = [ms for ms in (steady_step_ms(run, steps) for run in runs) if ms is not None]
        row = {
            "trial_s": statistics.mean(seconds),
            "training_s": statistics.mean(run.training_seconds for run in runs),
            "scoring_s": statistics.mean(run.evaluation_seconds for run in runs),
            "step_ms": statistics.mean(step_ms) if step_ms else float("nan"),
            "accuracy": statistics.mean(scores),
            "accuracy_sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        }
        print(
            f"{label}: trial {row['trial_s']:.2f} s (min {min(seconds):.2f}; "
            f"training {row['training_s']:.2f} s, "
            f"scoring {row['scoring_s']:.2f} s, {row['step_ms']:.2f} ms a step over epochs 2 on), validation "
            f"accuracy {row['accuracy']:.4f} +- {row['accuracy_sd']:.4f} over {len(scores)} seeds"
        )
        report_figures(**{label: row})
        rows[label] = row
    return rows


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
    parser.add_argument(
        "--losses", nargs="+", choices=list(trial_losses(10)), help="time only these losses (default: all)"
    )
    parser.add_argument("--breakdown", action="store_true", help="also time one epoch's parts")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="STEPS", help="profile STEPS steps of each side"
    )
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
    losses = {
        name: loss for name, loss in trial_losses(data.num_classes).items() if name in (args.losses or [name])
    }
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"{name}: {args.config or 'the default'} trial ({config.model}, epochs {config.epochs}, width "
        f"{config.model_width}, batch {config.batch_size}, lr {config.learning_rate}, "
        f"compile {args.compile}) on {len(data.train_labels)} images, scored on {len(data.val_labels)} "
        f"validation images and {len(evaluator.corrupted)} corrupted copies"
    )
    augmentation = evaluator.augmentation(config.augmentation)
    evaluator.evaluate(trial_losses(data.num_classes)[BASELINE], augmentation, seed=0)  # cuDNN tuning
    rows = time_losses(evaluator, losses, args.seeds, synchronize, warm_each=args.compile)
    if args.breakdown:
        breakdown(evaluator, trial_losses(data.num_classes)[BASELINE], synchronize)
    if args.profile:
        profile_trial(evaluator, trial_losses(data.num_classes)[LIKE_FOR_LIKE], args.profile)
    if args.reference:
        reference = airbench_reference(config, args.reference, profile_steps=args.profile)
        if reference is not None and LIKE_FOR_LIKE in rows:
            ours = rows[LIKE_FOR_LIKE]
            per_trial, per_step = ours["trial_s"] / reference.seconds, ours["step_ms"] / reference.step_ms
            print(
                "optiloss trial / airbench94, both with label smoothing 0.2: "
                f"ratio {per_trial:.2f} per trial "
                f"({ours['trial_s']:.2f} s against {reference.seconds:.2f} s), "
                f"{per_step:.2f} per training step "
                f"({ours['step_ms']:.2f} ms against {reference.step_ms:.2f} ms); accuracy "
                f"{ours['accuracy']:.4f} against {reference.accuracy:.4f}"
            )
            report_figures(ratio_per_trial=per_trial, ratio_per_step=per_step)


if __name__ == "__main__":
    main()
