"""The in-memory form of a data set and stratified splitting."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split


@dataclass(frozen=True)
class ImageSplits:
    """Images as uint8 tensors (N, 3, H, W) with int64 labels, split three ways.

    The search trains on ``train`` and scores on ``val``; ``test`` is reserved
    for transfer and final evaluation.
    """

    name: str
    classes: tuple[str, ...]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    conditions: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """What the data conditions did to the training part (:mod:`optiloss.data.conditions`;
    ``ConditionRecord.as_dict``), empty without a condition."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        height, width = self.train_images.shape[2:]
        return height, width

    def to(self, device: torch.device | str) -> ImageSplits:
        """A copy with every tensor on ``device`` (still uint8: batches become float on the fly), or
        these splits themselves when they are on it already.

        To CUDA, the copy goes through pinned memory without blocking.
        """
        device = torch.device(device)
        fields = ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels")
        if all(_is_on(getattr(self, field), device) for field in fields):
            return self
        cuda = device.type == "cuda"
        moved = {
            field: (getattr(self, field).pin_memory() if cuda else getattr(self, field)).to(
                device, non_blocking=cuda
            )
            for field in fields
        }
        return replace(self, **moved)


def _is_on(tensor: torch.Tensor, device: torch.device) -> bool:
    if tensor.device.type != device.type:
        return False
    index = (
        device.index
        if device.index is not None
        else (torch.cuda.current_device() if device.type == "cuda" else None)
    )
    return tensor.device.index == index


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out) with ``fraction`` of each class held out, reproducibly."""
    indices = np.arange(len(labels))
    kept, held_out = train_test_split(indices, test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(kept), np.sort(held_out)


def class_mixed_subset(labels: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``count`` examples drawn at random (seeded) with every class in proportion to its
    share of ``labels`` (largest remainders round the shares), in random order; all indices when
    ``count`` covers the set. Data sets stored class by class need this where a prefix would hold
    only the first classes."""
    total = len(labels)
    generator = torch.Generator().manual_seed(seed)
    if count >= total:
        return torch.randperm(total, generator=generator)
    labels = labels.cpu()
    classes, sizes = labels.unique(return_counts=True)
    exact = sizes.double() * count / total
    quota = exact.floor().long()
    remainder_order = (exact - quota).argsort(descending=True, stable=True)
    quota[remainder_order[: count - int(quota.sum())]] += 1
    order = torch.randperm(total, generator=generator)
    shuffled = labels[order]
    chosen = [order[shuffled == label][: int(share)] for label, share in zip(classes, quota)]
    picked = torch.cat(chosen)
    return picked[torch.randperm(len(picked), generator=generator)]
