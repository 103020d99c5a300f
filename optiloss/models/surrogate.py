"""The small surrogate network every search trial trains, and the input normalisation wrapper."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from optiloss.models.spec import Surrogate
from optiloss.train import RECIPES, TrainSettings

DEFAULT_WIDTH = 32
"""Channels of the first stage (64 and 128 follow)."""


def _conv_block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)
    )


class SurrogateCNN(nn.Module):
    """Three conv stages (``width``, 2x, 4x channels) with pooling, global average pool, linear head.

    Takes float images in [0, 1]; centring happens inside so every caller feeds the same range.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = DEFAULT_WIDTH) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(in_channels, width),
            _conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width),
            nn.MaxPool2d(2),
            _conv_block(4 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((images - 0.5) / 0.25))


class Normalized(nn.Module):
    """``model((x - mean) / std)`` for images in [0, 1]."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


SURROGATE = Surrogate(
    name="cnn",
    build=lambda num_classes, in_channels, width: SurrogateCNN(num_classes, in_channels, width),
    recipe=RECIPES["adamw"],
    # the AdamW recipe's own defaults, written once on TrainSettings
    defaults={
        "batch_size": TrainSettings.batch_size,
        "learning_rate": TrainSettings.learning_rate,
        "weight_decay": TrainSettings.weight_decay,
        "model_width": DEFAULT_WIDTH,
    },
    description="a small CNN trained with AdamW, warm-up and cosine decay (the default; for digits and CPUs)",
    aliases=("surrogate",),
)
