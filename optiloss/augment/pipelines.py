"""Training augmentation pipelines (tensor ops and Kornia, batched, on the data's device).

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
import torch.nn.functional as F
from kornia.augmentation.auto import RandAugment
from torch import nn

from optiloss.errors import UsageError
from optiloss.train import Augmentation

AUGMENTATIONS: tuple[str, ...] = ("base", "cutout", "mixup", "randaug", "all")
SOFT_TARGET_AUGMENTATIONS: tuple[str, ...] = ("mixup", "all")
"""The pipelines that train on mixed (soft) targets; the others give one-hot targets."""
ALL_AUGMENTATIONS = "all5"
"""Pseudo-augmentation name: one study for each of :data:`AUGMENTATIONS`."""


FLIP_MODES: tuple[str, ...] = ("random", "alternate", "none")
"""``random``: each image mirrored with probability 1/2, drawn per batch. ``alternate`` (airbench):
a random half of the training set mirrored once before training, then every image mirrored
together on odd epochs. ``none``: no flip."""
PADDING_MODES: tuple[str, ...] = ("constant", "reflect")
"""How the translate's border is filled: ``constant`` zeros (Kornia's default), or ``reflect``
(airbench's)."""


@dataclass(frozen=True)
class AugmentSettings:
    """Parameters of every pipeline. ``None`` sizes scale with the image (4 and 16 px at 32 px).
    ``hflip`` is one of :data:`FLIP_MODES` (``True`` and ``False``, as older studies stored it,
    read as ``"random"`` and ``"none"``); ``crop_padding_mode`` one of :data:`PADDING_MODES`."""

    hflip: str = "random"
    crop_padding: int | None = None
    crop_padding_mode: str = "constant"
    cutout_size: int | None = None
    mixup_alpha: float = 1.0
    randaug_n: int = 2
    randaug_m: int = 9

    def __post_init__(self) -> None:
        if isinstance(self.hflip, bool):
            object.__setattr__(self, "hflip", legacy_flip_mode(self.hflip))
        if self.hflip not in FLIP_MODES:
            raise ValueError(f"hflip must be one of {', '.join(FLIP_MODES)}, got {self.hflip!r}")
        if self.crop_padding_mode not in PADDING_MODES:
            raise ValueError(
                f"crop_padding_mode must be one of {', '.join(PADDING_MODES)}, got {self.crop_padding_mode!r}"
            )


def legacy_flip_mode(hflip: bool) -> str:
    """The flip mode of a study that stored ``hflip`` as true or false."""
    return "random" if hflip else "none"


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


class RandomTranslate(nn.Module):
    """A random translation by up to ``padding`` pixels each way: the batch padded (zeros or
    reflection), then one window of the image's size cut from each image at an offset drawn
    uniformly on the device (the random crop with padding of Kornia and airbench).

    A handful of kernels per batch whatever its size: one pad, one draw, one gather; nothing is
    read back to the host.
    """

    def __init__(self, image_size: tuple[int, int], padding: int, mode: str = "constant") -> None:
        super().__init__()
        if mode == "reflect" and padding >= min(image_size):
            raise UsageError(
                f"crop_padding_mode reflect needs crop_padding below the image size "
                f"({padding} >= {min(image_size)} px): lower crop_padding or use constant"
            )
        self.padding, self.mode = padding, mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.padding == 0 or len(images) == 0:
            return images
        batch, channels, height, width = images.shape
        padded = F.pad(images, (self.padding,) * 4, mode=self.mode)
        offsets = torch.randint(0, 2 * self.padding + 1, (batch, 2), device=images.device)
        rows = offsets[:, 0, None, None] + torch.arange(height, device=images.device)[None, :, None]
        cols = offsets[:, 1, None, None] + torch.arange(width, device=images.device)[None, None, :]
        flat = (rows * padded.shape[-1] + cols).view(batch, 1, height * width)
        crops = padded.flatten(2).gather(2, flat.expand(-1, channels, -1))
        return crops.view(batch, channels, height, width)


class HorizontalFlip(nn.Module):
    """Mirrors images left-right in one of :data:`FLIP_MODES` (``random`` or ``alternate``).

    In ``alternate`` mode, :meth:`prepare` mirrors a random half of the training set once and
    :meth:`start_epoch` says whether this epoch mirrors every image (odd epochs), so each image
    is seen both ways in every two epochs (airbench's "alternating flip").
    """

    def __init__(self, mode: str = "random") -> None:
        super().__init__()
        if mode not in ("random", "alternate"):
            raise ValueError(f"a flip mode is random or alternate, got {mode!r}")
        self.mode = mode
        self.mirror_all = False

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        if self.mode != "alternate":
            return images
        return _flip_some(images, torch.rand(len(images), device=images.device) < 0.5)

    def start_epoch(self, epoch: int) -> None:
        self.mirror_all = self.mode == "alternate" and epoch % 2 == 1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.mode == "alternate":
            return images.flip(-1) if self.mirror_all else images
        return _flip_some(images, torch.rand(len(images), device=images.device) < 0.5)


def _flip_some(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, *([1] * (images.dim() - 1))), images.flip(-1), images)


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
        params = {
            "mixup_pairs": pairs,
            "mixup_lambdas": lambdas.to(images.dtype),
            "batch_prob": torch.ones(1, dtype=torch.bool),
        }  # on the host, where Kornia reads it;
        # one entry ("every image") spares Kornia's Python-level sum over a per-image mask
        mixed, label_info = self.mix(images, labels, params=params)
        first, second, lam = label_info[:, 0].long(), label_info[:, 1].long(), label_info[:, 2:3]
        return mixed, (1 - lam) * one_hot(first, self.num_classes, images.dtype) + lam * one_hot(
            second, self.num_classes, images.dtype
        )


class TrainingAugmentation(Augmentation):
    """``(images, labels) -> (images, y)``: image ops, then mixup if any, else one-hot targets.
    :meth:`prepare` and :meth:`start_epoch` reach the ops that have them (the alternating flip)."""

    def __init__(self, image_ops: list[nn.Module], num_classes: int, mixup: MixUp | None = None) -> None:
        super().__init__()
        self.image_ops = nn.ModuleList(image_ops)
        self.num_classes = num_classes
        self.mixup = mixup

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        for op in self.image_ops:
            if isinstance(op, HorizontalFlip):
                images = op.prepare(images)
        return images

    def start_epoch(self, epoch: int) -> None:
        for op in self.image_ops:
            if isinstance(op, HorizontalFlip):
                op.start_epoch(epoch)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for op in self.image_ops:
            images = op(images)
        if self.mixup is not None:
            return self.mixup(images, labels)
        return images, one_hot(labels, self.num_classes, images.dtype)


def build_augmentation(
    name: str, image_size: tuple[int, int], num_classes: int, settings: AugmentSettings = AugmentSettings()
) -> TrainingAugmentation:
    """The named pipeline: ``base`` (random translate with padding, horizontal flip; both tensor
    ops on the device, :class:`RandomTranslate` and :class:`HorizontalFlip`), then
    ``cutout`` (one square erased), ``mixup``, ``randaug`` (RandAugment n, m) or
    ``all`` (RandAugment, cutout and mixup together)."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; available: {', '.join(AUGMENTATIONS)}")
    ops: list[nn.Module] = [
        RandomTranslate(image_size, crop_padding(image_size, settings), settings.crop_padding_mode)
    ]
    if settings.hflip != "none":
        ops.append(HorizontalFlip(settings.hflip))
    if name in ("randaug", "all"):
        ops.append(RandAugment(n=settings.randaug_n, m=settings.randaug_m))
    if name in ("cutout", "all"):
        side = cutout_size(image_size, settings)
        share = side * side / (image_size[0] * image_size[1])
        # 0.5 is the centre of the input range: the model sees 0 there, as in DeVries & Taylor
        ops.append(K.RandomErasing(scale=(share, share), ratio=(1.0, 1.0), value=0.5, p=1.0))
    mixup = MixUp(settings.mixup_alpha, num_classes) if name in ("mixup", "all") else None
    return TrainingAugmentation(ops, num_classes, mixup)
