"""Training augmentation pipelines (Kornia, batched, on the data's device).

A pipeline maps a float batch in [0, 1] and its int64 labels to the augmented
batch (still in [0, 1]) and the target distribution ``y`` (B, C) the genome
sees. Randomness comes from torch's global generator (Kornia has no generator
argument), so :func:`optiloss.train.seeded` makes a pipeline reproducible.

Why mixup gives the genome *mixed targets* rather than mixing two losses:
mixing losses, ``(1 - lam) L(onehot(a), p) + lam L(onehot(b), p)``, equals
``L(y_mix, p)`` only for losses linear in ``y`` (cross-entropy is). An evolved
loss such as ``(y - p)^2`` or ``y / p`` is not, and the paper feeds the network's
loss the mixed label distribution; searching under mixup then means searching
for the loss that handles soft targets well, which is the point of a
per-augmentation search.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch
from kornia.augmentation.auto import RandAugment
from torch import nn

AUGMENTATIONS: tuple[str, ...] = ("base", "cutout", "mixup", "randaug", "all")
SOFT_TARGET_AUGMENTATIONS: tuple[str, ...] = ("mixup", "all")
"""The pipelines that train on mixed (soft) targets; the others give one-hot targets."""
ALL_AUGMENTATIONS = "all5"
"""Pseudo-augmentation name: one study for each of :data:`AUGMENTATIONS`."""


@dataclass(frozen=True)
class AugmentSettings:
    """Parameters of every pipeline. ``None`` sizes scale with the image (4 and 16 px at 32 px)."""

    hflip: bool = True
    crop_padding: int | None = None
    cutout_size: int | None = None
    mixup_alpha: float = 1.0
    randaug_n: int = 2
    randaug_m: int = 9


def crop_padding(image_size: tuple[int, int], settings: AugmentSettings = AugmentSettings()) -> int:
    """Padding of the random crop: 4 px on 32 px images, scaled with size, at least 1."""
    if settings.crop_padding is not None:
        return settings.crop_padding
    return max(1, round(min(image_size) / 8))


def cutout_size(image_size: tuple[int, int], settings: AugmentSettings = AugmentSettings()) -> int:
    """Side of the cutout square: 16 px on 32 px images (DeVries & Taylor), scaled with size."""
    if settings.cutout_size is not None:
        return settings.cutout_size
    return max(1, round(min(image_size) / 2))


def one_hot(labels: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``F.one_hot(labels, num_classes).to(dtype)`` without its range check, which reads the
    labels' min and max back to the host (two device syncs per training step on CUDA)."""
    targets = torch.zeros(len(labels), num_classes, dtype=dtype, device=labels.device)
    return targets.scatter_(1, labels[:, None], 1)


class BatchedRandomCrop(K.RandomCrop):
    """Kornia's ``RandomCrop`` (same parameters, same replay, same pixels) whose crop is one gather.

    Kornia's slice mode reads the crop boxes back to the host and slices each
    image in a Python loop (hundreds of small ops per batch, a device sync on
    CUDA); its resample mode warps with bilinear interpolation. When every box
    has the output size, which holds whenever the padded image is at least that
    large, the crop here is one gather from the padded batch.
    """

    def apply_transform(self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict,
                        transform: torch.Tensor | None = None) -> torch.Tensor:
        padding = self.compute_padding(tuple(input.shape), flags)  # a function of the shape (see Kornia)
        height, width = flags["size"]
        fits = (input.shape[-2] + padding[2] + padding[3] >= height
                and input.shape[-1] + padding[0] + padding[1] >= width)
        drawn = params.get("padding_size")  # replayed parameters may come from another padding
        same_padding = (isinstance(drawn, torch.Tensor) and drawn.device.type == "cpu"
                        and bool((drawn.numpy() == padding).all()))  # host memory: no device read
        if flags["cropping_mode"] != "slice" or not fits or not same_padding or input.shape[0] == 0:
            return super().apply_transform(input, params, flags, transform)
        padded = self.precrop_padding(input, padding, flags)
        # (B, [x, y])
        corner = params["src"][:, 0].to(device=input.device, dtype=torch.long, non_blocking=True)
        rows = corner[:, 1, None, None] + torch.arange(height, device=input.device)[None, :, None]
        cols = corner[:, 0, None, None] + torch.arange(width, device=input.device)[None, None, :]
        flat = (rows * padded.shape[-1] + cols).view(len(input), 1, height * width)
        crops = padded.flatten(2).gather(2, flat.expand(-1, input.shape[1], -1))
        return crops.view(len(input), input.shape[1], height, width)


class MixUp(nn.Module):
    """Kornia's ``RandomMixUpV2`` with lambda ~ Beta(alpha, alpha, validate_args=False), returning mixed
    target distributions.

    Kornia draws lambda uniformly; Beta(1, 1) is that, other alphas are drawn
    here and handed to Kornia as its parameters. Its (y_a, y_b, lambda) labels
    become ``y = (1 - lambda) onehot(y_a) + lambda onehot(y_b)``.
    """

    def __init__(self, alpha: float, num_classes: int) -> None:
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"mixup alpha must be positive, got {alpha}")
        self.alpha = alpha
        self.num_classes = num_classes
        self.mix = K.RandomMixUpV2(p=1.0, data_keys=["input", "class"])

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = len(images)
        alpha = torch.tensor(float(self.alpha), device=images.device)
        pairs = torch.randperm(batch, device=images.device)
        lambdas = torch.distributions.Beta(alpha, alpha, validate_args=False).sample((batch,))  # no sync
        params = {"mixup_pairs": pairs, "mixup_lambdas": lambdas.to(images.dtype),
                  "batch_prob": torch.ones(1, dtype=torch.bool)}  # on the host, where Kornia reads it;
        # one entry ("every image") spares Kornia's Python-level sum over a per-image mask
        mixed, label_info = self.mix(images, labels, params=params)
        first, second, lam = label_info[:, 0].long(), label_info[:, 1].long(), label_info[:, 2:3]
        return mixed, (1 - lam) * one_hot(first, self.num_classes, images.dtype) + lam * one_hot(
            second, self.num_classes, images.dtype)


class TrainingAugmentation(nn.Module):
    """``(images, labels) -> (images, y)``: image ops, then mixup if any, else one-hot targets."""

    def __init__(self, image_ops: list[nn.Module], num_classes: int, mixup: MixUp | None = None) -> None:
        super().__init__()
        self.image_ops = nn.ModuleList(image_ops)
        self.num_classes = num_classes
        self.mixup = mixup

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for op in self.image_ops:
            images = op(images)
        if self.mixup is not None:
            return self.mixup(images, labels)
        return images, one_hot(labels, self.num_classes, images.dtype)


def build_augmentation(name: str, image_size: tuple[int, int], num_classes: int,
                       settings: AugmentSettings = AugmentSettings()) -> TrainingAugmentation:
    """The named pipeline: ``base`` (random crop with padding, horizontal flip), then
    ``cutout`` (one square erased), ``mixup``, ``randaug`` (RandAugment n, m) or
    ``all`` (RandAugment, cutout and mixup together)."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; available: {', '.join(AUGMENTATIONS)}")
    ops: list[nn.Module] = [BatchedRandomCrop(image_size, padding=crop_padding(image_size, settings))]
    if settings.hflip:
        ops.append(K.RandomHorizontalFlip())
    if name in ("randaug", "all"):
        ops.append(RandAugment(n=settings.randaug_n, m=settings.randaug_m))
    if name in ("cutout", "all"):
        side = cutout_size(image_size, settings)
        share = side * side / (image_size[0] * image_size[1])
        # 0.5 is the centre of the input range: the model sees 0 there, as in DeVries & Taylor
        ops.append(K.RandomErasing(scale=(share, share), ratio=(1.0, 1.0), value=0.5, p=1.0))
    mixup = MixUp(settings.mixup_alpha, num_classes) if name in ("mixup", "all") else None
    return TrainingAugmentation(ops, num_classes, mixup)
