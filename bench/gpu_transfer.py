"""One real epoch of WRN-28-10 on the full CIFAR-10 per zoo loss, on a GPU: epoch time and test accuracy.

    python bench/gpu_transfer.py --dataset folder:/path/to/cifar10-jpeg [--model wrn-28-10] [--epochs 1]

The baseline is cross-entropy, trained in the same run: the last line gives
each loss's epoch time as a ratio to cross-entropy's. Run by bench/gpu_transfer.sh.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from optiloss.data import load_dataset
from optiloss.genome import BASELINE, baseline_genome, screen, zoo
from optiloss.scoring import LossEvaluator, merge_validation_into_training
from optiloss.settings import TransferConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", default="wrn-28-10")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_dataset(args.dataset, 0.02, progress=False)
    data = merge_validation_into_training(data).to(device)
    config = TransferConfig(
        model=args.model, epochs=args.epochs, batch_size=args.batch_size, learning_rate=1e-3
    )
    evaluator = LossEvaluator.for_transfer(config, data, device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(
        f"{args.model} on {len(data.train_labels)} training images, {args.epochs} epoch(s), batch "
        f"{args.batch_size}, device {name}"
    )
    warm_up = dataclasses.replace(
        data,
        train_images=data.train_images[: 4 * args.batch_size],
        train_labels=data.train_labels[: 4 * args.batch_size],
    )
    LossEvaluator.for_transfer(config, warm_up, device).evaluate(  # kernels tuned, not timed
        baseline_genome(), evaluator.augmentation("base"), seed=0
    )
    seconds = {}
    for label, genome in zoo().items():
        result = evaluator.evaluate(screen(genome).genome, evaluator.augmentation("base"), seed=0)
        seconds[label] = result.training_seconds / args.epochs
        print(
            f"{label:14s} {seconds[label]:7.2f} s/epoch  test accuracy {result.accuracy:.4f}  "
            f"robustness {result.robustness:.4f}"
            + (f"  diverged: {result.diverged}" if result.diverged else "")
        )
    baseline = seconds[BASELINE]
    print("epoch time / cross-entropy's: " + ", ".join(f"{k} {v / baseline:.2f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
