"""Does a positive multiple of a loss train the same? 2 x cross-entropy and log10 cross-entropy against it.

    python bench/loss_scale.py [--seeds 3] [--models cnn airbench] [--set KEY=VALUE ...]

For each surrogate (``cnn``: AdamW on digits; ``airbench``: airbench94's SGD on
a subset of the real CIFAR-10 JPEGs from the shared archive), trains
cross-entropy, ``2 x CE + y`` (the 2·CE of issue 15, a term without ``p``
added) and ``-(y log10 p)`` (CE / ln 10) with the same seeds, and prints each
loss's validation accuracy (mean +- std) and its largest per-seed difference
from cross-entropy. ``ce_rerun`` trains cross-entropy again with the
same seeds: the run-to-run noise of the machine (none on this CPU). Adam-type
optimisers are invariant to the loss's scale up to their epsilon, SGD is not
(the scale multiplies the learning rate); float rounding of a rewritten loss
still sends each run down its own trajectory, so "trains the same" means the
same distribution over seeds, not the same weights.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from optiloss.genome.named import named_losses
from optiloss.scoring import LossEvaluator, load_data
from optiloss.settings import SearchConfig

from _shared import add_overrides_option, cifar10_jpeg_folder, config_overrides

LOSSES = {
    "ce": "-(y * ln(|p| + eps))",
    "ce_rerun": "-(y * ln(|p| + eps))",  # the control: the same loss and seeds again
    "two_ce_plus_y": "(y * ((1 - ln(|p| + eps)) - ln(|p| + eps)))",
    "ce_log10": "-(y * log10(|p| + eps))",
}
SETTINGS = {
    "cnn": {"dataset": "digits", "model": "cnn", "epochs": 6, "model_width": 16},
    "airbench": {"model": "airbench", "epochs": 4, "subset": 5000},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["cnn", "airbench"], choices=tuple(SETTINGS))
    add_overrides_option(parser)
    args = parser.parse_args()
    overrides = config_overrides(args)
    for model in args.models:
        values = {"device": "cpu", **SETTINGS[model], **overrides}
        if model == "airbench" and "dataset" not in values:
            values["dataset"] = f"folder:{cifar10_jpeg_folder()}"
        config = SearchConfig.from_mapping(values)
        data = load_data(config, progress=False)
        evaluator = LossEvaluator.for_search(config, data, torch.device(config.device))
        augmentation = evaluator.augmentation(config.augmentation)
        losses = named_losses(LOSSES, config.nodes)
        accuracies = {
            name: [evaluator.evaluate(genome, augmentation, seed).accuracy for seed in range(args.seeds)]
            for name, genome in losses.items()
        }
        baseline = accuracies["ce"]
        spread = statistics.stdev(baseline) if len(baseline) > 1 else 0.0
        print(
            f"{model} ({config.train_settings().recipe}, {config.dataset}, {len(data.train_labels)} "
            f"training images, {config.epochs} epochs, {args.seeds} seeds)"
        )
        for name, values_ in accuracies.items():
            largest = max(abs(a - b) for a, b in zip(values_, baseline))
            print(
                f"  {name:19s} accuracy {statistics.mean(values_):.4f} +- "
                f"{statistics.stdev(values_) if len(values_) > 1 else 0.0:.4f}  largest per-seed "
                f"difference from cross-entropy {largest:.4f} (its spread {spread:.4f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
