"""P1: images/s of an optiloss surrogate trial against a plain PyTorch trial, same model, data and epochs.

    python bench/trial_throughput.py [--images 10000] [--epochs 4] [--workers 2]
        [--device cpu|cuda] [--float32]

Data: 10,000 real CIFAR-10 training images (shared JPEG archive), validation on
the 10,000 test images (a smaller set would make "within 1 point" a coin toss:
the standard error of an accuracy near 0.6 on 2,000 images is 1.1 points).
Plain PyTorch: a torchvision-style Dataset of PIL images, per-image
RandomCrop(32, 4) + RandomHorizontalFlip + ToTensor in a DataLoader with
``--workers`` processes, F.cross_entropy, the same surrogate, AdamW and
warm-up/cosine schedule. optiloss: the search's LossEvaluator with
cross-entropy as a genome (uint8 tensor on the device, Kornia batches). Both
accuracies are printed; the last line gives the throughput ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
from augment_throughput import PilImages
from torch.utils.data import DataLoader

from optiloss.data import load_dataset
from optiloss.genome import baseline_genome
from optiloss.models import create_model
from optiloss.scoring import LossEvaluator
from optiloss.settings import SearchConfig
from optiloss.train import TrainSettings, _warmup_cosine, accuracy, seeded

from _shared import cifar10_jpeg_folder, report_figures


def plain_pytorch(data, settings: TrainSettings, workers: int, device: torch.device) -> tuple[float, float]:
    transform = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.PILToTensor(),
            T.ToDtype(torch.float32, scale=True),
        ]
    )
    loader = DataLoader(
        PilImages(data.train_images.cpu(), data.train_labels.cpu(), transform),
        batch_size=settings.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        # the same order and worker seeds each run
        generator=torch.Generator().manual_seed(0),
    )
    with seeded(0, device):
        model = create_model("surrogate", 10).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_cosine(settings.epochs * len(loader), settings.warmup_fraction)
    )
    started = time.perf_counter()
    model.train()
    for _ in range(settings.epochs):
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return (
        settings.epochs * len(loader) * settings.batch_size / seconds,
        accuracy(model, data.val_images, data.val_labels),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--float32", action="store_true", help="optiloss without bf16 (mixed_precision = false)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    full = load_dataset(f"folder:{cifar10_jpeg_folder()}", progress=False)
    # folders are by class
    order = torch.randperm(len(full.train_labels), generator=torch.Generator().manual_seed(0))
    train = order[: args.images]
    data = dataclasses.replace(
        full,
        train_images=full.train_images[train],
        train_labels=full.train_labels[train],
        val_images=full.test_images,
        val_labels=full.test_labels,
    ).to(device)
    config = SearchConfig(epochs=args.epochs, batch_size=128, mixed_precision=not args.float32)
    settings = config.train_settings()
    evaluator = LossEvaluator.for_search(config, data, device)
    ours = evaluator.evaluate(baseline_genome(), evaluator.augmentation("base"), seed=0)
    steps = args.epochs * (args.images // settings.batch_size)
    ours_rate = steps * settings.batch_size / ours.training_seconds
    theirs_rate, theirs_accuracy = plain_pytorch(data, settings, args.workers, device)
    print(
        f"{args.images} CIFAR-10 images, {args.epochs} epochs, device {device}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"optiloss trial      {ours_rate:8.0f} img/s  validation accuracy {ours.accuracy:.4f}")
    print(
        f"plain PyTorch trial {theirs_rate:8.0f} img/s  validation accuracy {theirs_accuracy:.4f} "
        f"(DataLoader, {args.workers} workers, per-image PIL transforms)"
    )
    print(
        f"optiloss / plain PyTorch: ratio {ours_rate / theirs_rate:.2f} images/s; "
        f"accuracy difference {100 * (ours.accuracy - theirs_accuracy):+.1f} points"
    )
    report_figures(
        optiloss_images_per_s=ours_rate, plain_images_per_s=theirs_rate, ratio=ours_rate / theirs_rate
    )


if __name__ == "__main__":
    main()
