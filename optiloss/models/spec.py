"""What the search needs to know about a surrogate network: one :class:`Surrogate` per network."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from optiloss.train import Recipe


@dataclass(frozen=True)
class Surrogate:
    """A search surrogate: how to build it, how it trains, and the settings it brings.

    ``build(num_classes, in_channels, width)`` makes an untrained network for images in [0, 1];
    ``recipe`` trains it (:class:`optiloss.train.Recipe`, registered under its name);
    ``defaults`` are the values of ``batch_size``, ``learning_rate``, ``weight_decay`` and
    ``model_width`` that a search leaves unset; below ``minimum_image_size`` pixels the network
    cannot run; ``flip_tta`` scores it with mirror test-time augmentation.
    """

    name: str
    build: Callable[[int, int, int], nn.Module]
    recipe: Recipe
    defaults: Mapping[str, Any]
    description: str
    minimum_image_size: int = 1
    flip_tta: bool = False
    aliases: tuple[str, ...] = field(default=())
