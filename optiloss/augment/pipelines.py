"""Training augmentation pipelines.

A pipeline takes a float batch in [0, 1] and its int64 labels and returns the
augmented batch (still in [0, 1]) and the target distribution ``y`` (B, C) that
the genome sees: one-hot here, mixed for mixup.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn


class TrainingAugmentation(nn.Module):
    """Batched augmentation with soft targets: ``(images, labels) -> (images, y)``."""

    def __init__(self, image_transform: nn.Module | None, num_classes: int) -> None:
        super().__init__()
        self.image_transform = image_transform
        self.num_classes = num_classes

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.image_transform is not None:
            images = self.image_transform(images)
        targets = nn.functional.one_hot(labels, self.num_classes).to(images.dtype)
        return images, targets


def crop_padding(image_size: tuple[int, int]) -> int:
    """Padding of the random crop: 4 px on 32 px images, scaled with size, at least 1."""
    return max(1, round(min(image_size) / 8))


def _base(image_size: tuple[int, int], hflip: bool = True) -> nn.Module:
    ops: list[nn.Module] = [K.RandomCrop(image_size, padding=crop_padding(image_size))]
    if hflip:
        ops.append(K.RandomHorizontalFlip())
    return K.AugmentationSequential(*ops)


AUGMENTATIONS = ("base",)


def build_augmentation(name: str, image_size: tuple[int, int], num_classes: int,
                       hflip: bool = True) -> TrainingAugmentation:
    """The named pipeline for images of ``image_size``: ``base`` = random crop with padding and flip."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; available: {', '.join(AUGMENTATIONS)}")
    return TrainingAugmentation(_base(image_size, hflip), num_classes)
