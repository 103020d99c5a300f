"""How far does the search's robustness track the number the literature reports (CIFAR-10-C)?

    python bench/robustness_agreement.py [--corruptions DIR] [--epochs 1 2 3 5 8] [--subset 5000]

Trains several surrogate models of different quality on real CIFAR-10 (cross-entropy, the ``cnn``
surrogate, one model per entry of ``--epochs``) and scores each on the test split in three ways:

- ``search``: the search's default, optiloss's ten generated corruptions at severity 3;
- ``full``: the fifteen corruptions optiloss generates, at severities 1-5 (``corruption_suite =
  "fifteen"``, ``corruption_severities = [1, 2, 3, 4, 5]``);
- ``released``: a folder in the released layout read as ``optiloss transfer --corruptions`` reads it.

It prints each model's clean accuracy and the three robustness numbers, the rank correlation
(Spearman, Kendall) of ``search`` and ``full`` with ``released`` over the models, and for each
corruption how far the generated one reads above the released one (accuracy, mean over the models
and severities): with the real files, how much each approximation differs.

``--corruptions DIR`` names the released CIFAR-10-C files (the test split must then be CIFAR-10 in
torchvision's order: ``--dataset cifar10 --data-root ...``). Without it, there being no released files
on this machine, the folder is written from optiloss's own fifteen corruptions of the same test
images: the ``released`` column then measures the reader and the layout, not the agreement with the
real files, and the script says so.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from scipy import stats

from optiloss.augment import build_augmentation, corrupted_suite
from optiloss.augment.corruptions import RELEASED_NAMES, write_generated_layout
from optiloss.data import load_dataset
from optiloss.data.released import ReleasedCorruptions, released_key, split_released_key
from optiloss.genome import baseline_genome
from optiloss.models import create_model
from optiloss.scoring import LossEvaluator
from optiloss.settings import SearchConfig
from optiloss.train import accuracies, seeded, train

from _shared import cifar10_jpeg_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corruptions", metavar="DIR", help="the released CIFAR-10-C files")
    parser.add_argument("--dataset", default=None, help="default: the shared CIFAR-10 JPEG folder")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 3, 5, 8])
    parser.add_argument("--subset", type=int, default=5000, help="training images (default 5000)")
    parser.add_argument("--width", type=int, default=16, help="the cnn surrogate's width")
    args = parser.parse_args()
    dataset = args.dataset or f"folder:{cifar10_jpeg_folder()}"
    data = load_dataset(dataset, data_root=args.data_root, subset=args.subset)
    device = torch.device("cpu")
    config = SearchConfig.from_mapping({"dataset": dataset, "model_width": args.width, "device": "cpu"})
    test_images, test_labels = data.test_images, data.test_labels
    print(f"{dataset}: {len(data.train_images)} training images, {len(test_labels)} test images")

    with tempfile.TemporaryDirectory() as scratch:
        if args.corruptions:
            released = ReleasedCorruptions.open(args.corruptions, test_labels.numpy())
            print(f"released files: {args.corruptions}")
        else:
            folder = write_generated_layout(
                Path(scratch) / "generated-c", test_images, test_labels, seed=7, progress=True
            )
            released = ReleasedCorruptions.open(folder, test_labels.numpy())
            print(
                "no released files given: the released-layout folder is written from optiloss's own fifteen "
                "corruptions, so 'released' checks the reading, not the real files"
            )
        # scores the test split, its ten corruptions at severity 3 (the search's suite) and the folder
        evaluator = LossEvaluator(
            data, device, config, model="cnn", model_width=args.width, split="test", released=released
        )
        full_suite = corrupted_suite(
            test_images, (1, 2, 3, 4, 5), seed=config.seed, suite="fifteen", progress=True
        )
        cross_entropy = baseline_genome()
        rows = []
        # per released corruption: accuracy generated - released, for each model and severity
        gaps: dict[str, list[float]] = {}
        for epochs in args.epochs:
            with seeded(epochs, device):
                model = create_model("cnn", data.num_classes, data.channels, args.width)
                train(
                    model,
                    data.train_images,
                    data.train_labels,
                    cross_entropy,
                    build_augmentation("base", data.image_size, data.num_classes),
                    config.replace(epochs=epochs).train_settings(),
                )
            search, clean = evaluator.score(model)
            full = accuracies(model, full_suite, test_labels)
            on_released = evaluator.score_released(model)
            for key, value in full.items():
                name, severity = split_released_key(key)
                released_name = RELEASED_NAMES[name]
                gap = value - on_released[released_key(released_name, severity)]
                gaps.setdefault(released_name, []).append(gap)
            rows.append(
                {
                    "epochs": epochs,
                    "clean": clean,
                    "search": statistics.mean(search.values()),
                    "full": statistics.mean(full.values()),
                    "released": statistics.mean(on_released.values()),
                }
            )
            print(
                "  ".join(
                    f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                    for key, value in rows[-1].items()
                ),
                flush=True,
            )
    reference = [row["released"] for row in rows]
    for name in ("clean", "search", "full"):
        values = [row[name] for row in rows]
        spearman = stats.spearmanr(values, reference).statistic
        kendall = stats.kendalltau(values, reference).statistic
        print(
            f"{name:>6} vs released over {len(rows)} models: Spearman {spearman:.3f}, Kendall {kendall:.3f}"
        )
    print("accuracy on the generated corruption - on the released one, mean over models and severities:")
    for corruption, differences in gaps.items():
        print(f"  {corruption:<18} {statistics.mean(differences):+.4f}")


if __name__ == "__main__":
    main()
