"""The data conditions: the noisy-label losses against cross-entropy under label noise and imbalance.

    python bench/conditions.py [--subset 5000] [--epochs 10] [--seeds 3] [--noise 0.4]
                               [--imbalance 100] [--search-trials 0] [--test-subset N]
                               [--device auto]
                               [--set KEY=VALUE ...]

On a stratified subset of the real CIFAR-10 (the JPEG folders of ``../shared/data``), trains
cross-entropy, label smoothing 0.1, MAE, GCE (q 0.7) and SCE (alpha 0.1, beta 1) from the zoo of
condition studies (6 nodes, 2 constants) on the search surrogate with the same fresh seeds, under
three conditions of the training part: none, ``--noise`` symmetric label noise, and
``--imbalance`` (CIFAR-10-LT's profile). Every run is scored on the clean, balanced test split.
Prints, per condition and loss, test accuracy mean +- sd, the difference from cross-entropy in
points and Welch's p. The GCE and SCE papers report the robust losses well ahead of
cross-entropy under heavy symmetric noise (with long training of ResNets on all of CIFAR-10); the
benchmark says whether a short surrogate run shows that direction.

With ``--search-trials N``, one short search (N COMPLETE trials, 6 nodes, 2 constants) runs under the
noise; its most accurate loss of its own (selected on the noisy-trained validation split, clean
labels) is then trained with the same fresh seeds beside GCE and SCE and scored on the clean test
split, reported whatever it shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from typing import Any

from optiloss.data import class_mixed_subset
from optiloss.devices import resolve_device
from optiloss.genome import BASELINE, Genome, screen, zoo
from optiloss.scoring import LossEvaluator, load_data
from optiloss.settings import SearchConfig
from optiloss.statistics import sample_std, welch_p_value

from _shared import add_overrides_option, cifar10_jpeg_folder, config_overrides

LOSSES = (BASELINE, "label_smoothing_0.1", "mae", "gce", "sce")
FRESH_SEED = 7919


def condition_losses() -> dict[str, Genome]:
    known = zoo(6, 2, 10, conditions=True)
    return {name: screen(known[name]).genome for name in LOSSES}


def train_all(
    config: SearchConfig, losses: dict[str, Genome], seeds: int, test_subset: int | None = None
) -> dict[str, list[float]]:
    """Test accuracy of each loss, one fresh seed after another (the same seeds for every loss), on the
    test split or a class-mixed ``test_subset`` of it (fixed, the same for every loss and condition)."""
    device = resolve_device(config.device)
    data = load_data(config, progress=False)
    if test_subset:
        kept = class_mixed_subset(data.test_labels, test_subset)
        data = dataclasses.replace(
            data, test_images=data.test_images[kept], test_labels=data.test_labels[kept]
        )
    evaluator = LossEvaluator(
        data.to(device),
        device,
        config,
        model=config.model,
        model_width=config.model_width or 16,
        split="test",
    )
    augmentation = evaluator.augmentation(config.augmentation)
    accuracy: dict[str, list[float]] = {name: [] for name in losses}
    for k in range(seeds):
        for name, genome in losses.items():
            print(f"  seed {k + 1}/{seeds}, {name}", flush=True)
            accuracy[name].append(
                evaluator.evaluate(genome, augmentation, config.seed + FRESH_SEED * (k + 1)).accuracy
            )
    return accuracy


def rows(condition: str, accuracy: dict[str, list[float]]) -> list[dict[str, Any]]:
    baseline = accuracy[BASELINE]
    table = []
    for name, values in accuracy.items():
        p = welch_p_value(values, baseline) if name != BASELINE else float("nan")
        table.append(
            {
                "condition": condition,
                "loss": name,
                "accuracy": f"{statistics.mean(values):.4f} +- {sample_std(values):.4f}",
                "vs_ce_points": f"{100 * (statistics.mean(values) - statistics.mean(baseline)):+.2f}",
                "p_welch": "" if p != p else f"{p:.3g}",
            }
        )
    return table


def short_search(config: SearchConfig, trials: int, folder: str) -> Genome | None:
    """The most accurate loss of a short search's own (no zoo loss) under ``config``'s conditions."""
    from optiloss.search import run_search
    from optiloss.studies import found_and_zoo, trial_genome

    searched = config.replace(
        n_trials=trials,
        study_name="noisy-search",
        artifacts=False,
        baseline_seeds=0,
        checkpoint_dir=f"{folder}/checkpoints",
    )
    outcome = run_search(searched, f"sqlite:///{folder}/search.db", progress=False, log=lambda line: None)
    assert outcome.study is not None
    found, _ = found_and_zoo(outcome.study)
    return trial_genome(outcome.study, found[0]) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--imbalance", type=float, default=100.0)
    parser.add_argument("--search-trials", type=int, default=0)
    parser.add_argument("--search-only", action="store_true", help="skip the table, run the search part")
    parser.add_argument("--test-subset", type=int, default=None, help="score on N test images (CPU runs)")
    parser.add_argument("--device", default="auto")
    add_overrides_option(parser)
    args = parser.parse_args()
    base = {
        "dataset": f"folder:{cifar10_jpeg_folder()}",
        "subset": args.subset,
        "epochs": args.epochs,
        "device": args.device,
        "nodes": 6,
        "constants": 2,
        **config_overrides(args),
    }
    conditions = {
        "none": {},
        f"{100 * args.noise:g} % symmetric noise": {"label_noise_rate": args.noise},
        f"imbalance {args.imbalance:g}": {"imbalance_ratio": args.imbalance},
    }
    losses = condition_losses()
    table = []
    started = time.perf_counter()
    for condition, keys in ({} if args.search_only else conditions).items():
        config = SearchConfig.from_mapping({**base, **keys})
        data = load_data(config, progress=False)
        print(
            f"{condition}: {len(data.train_labels)} training images, {data.conditions or 'no condition'}",
            flush=True,
        )
        table += rows(condition, train_all(config, losses, args.seeds, args.test_subset))
    from optiloss.report import format_rows

    if table:
        print(format_rows(table))
    print(
        f"\n{args.seeds} seeds, {args.epochs} epochs, subset {args.subset}, test images "
        f"{args.test_subset or 'all'}, "
        f"{time.perf_counter() - started:.0f} s"
    )
    if args.search_trials:
        noisy = SearchConfig.from_mapping({**base, "label_noise_rate": args.noise})
        with tempfile.TemporaryDirectory() as folder:
            best = short_search(noisy, args.search_trials, folder)
        if best is None:
            print("the short search found no loss of its own")
            return
        print(f"\nbest loss of a {args.search_trials}-trial search under the noise: {best.formula}")
        compared = {
            BASELINE: losses[BASELINE],
            "found": best,
            "gce": losses["gce"],
            "sce": losses["sce"],
        }
        print(
            format_rows(
                rows(
                    f"{100 * args.noise:g} % noise", train_all(noisy, compared, args.seeds, args.test_subset)
                )
            )
        )


if __name__ == "__main__":
    main()
