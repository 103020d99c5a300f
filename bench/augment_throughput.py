"""Images/s of each Kornia pipeline against the same augmentation done per image in a DataLoader.

    python bench/augment_throughput.py [--images 10240] [--batch-size 256] [--workers 2]

Data: the first training images of the real CIFAR-10 (32x32, from the shared
JPEG archive). optiloss: uint8 tensor -> batch slice -> float -> Kornia pipeline.
Baseline: a torchvision-style Dataset of PIL images with per-image transforms
(RandomCrop(32, 4), RandomHorizontalFlip, then RandAugment(2, 9) / RandomErasing
of a 16 px square / MixUp(alpha 1) on the collated batch), DataLoader with
``--workers`` processes. The last line gives the ratios.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset

from optiloss.augment import AUGMENTATIONS, build_augmentation
from optiloss.data import load_dataset
from optiloss.train import seeded, to_float

from _shared import cifar10_jpeg_folder


class PilImages(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images = [T.functional.to_pil_image(image) for image in images]
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.transform(self.images[index]), self.labels[index]


def per_image_transform(name: str):
    ops = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    if name in ("randaug", "all"):
        ops.append(T.RandAugment(num_ops=2, magnitude=9))
    ops += [T.PILToTensor(), T.ToDtype(torch.float32, scale=True)]
    if name in ("cutout", "all"):
        ops.append(T.RandomErasing(p=1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0.5))
    return T.Compose(ops)


def baseline_rate(images, labels, name: str, batch_size: int, workers: int) -> float:
    loader = DataLoader(
        PilImages(images, labels, per_image_transform(name)),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=False,
    )
    mixup = T.MixUp(alpha=1.0, num_classes=10) if name in ("mixup", "all") else None
    started, count = time.perf_counter(), 0
    for batch, targets in loader:
        if mixup is not None:
            batch, targets = mixup(batch, targets)
        count += len(batch)
    return count / (time.perf_counter() - started)


def kornia_rate(images, labels, name: str, batch_size: int) -> float:
    pipeline = build_augmentation(name, (32, 32), 10)
    order = torch.randperm(len(images))
    with seeded(0):
        pipeline(to_float(images[:batch_size]), labels[:batch_size])  # warm-up
        started, count = time.perf_counter(), 0
        for start in range(0, len(images) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            batch, targets = pipeline(to_float(images[index]), labels[index])
            count += len(batch)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10240)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data = load_dataset(f"folder:{cifar10_jpeg_folder()}", progress=False)
    images, labels = data.train_images[: args.images], data.train_labels[: args.images]
    print(
        f"{len(images)} CIFAR-10 images, batches of {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}, baseline DataLoader workers {args.workers}"
    )
    ratios = {}
    for name in AUGMENTATIONS:
        ours = kornia_rate(images, labels, name, args.batch_size)
        theirs = baseline_rate(images, labels, name, args.batch_size, args.workers)
        ratios[name] = ours / theirs
        print(
            f"{name:8s} kornia {ours:9.0f} img/s   per-image DataLoader {theirs:9.0f} img/s   "
            f"ratio {ratios[name]:.2f}"
        )
    print(
        "ratios (kornia / per-image): " + ", ".join(f"{name} {ratio:.2f}" for name, ratio in ratios.items())
    )


if __name__ == "__main__":
    main()
