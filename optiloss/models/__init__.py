"""Models by name: the surrogate, CIFAR-style Wide ResNets and any timm model, all untrained by default.

Every model takes float images in [0, 1]; normalisation happens inside.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from torch import nn

from optiloss.errors import UsageError
from optiloss.models.airbench import AirbenchNet
from optiloss.models.surrogate import Normalized, SurrogateCNN
from optiloss.models.wideresnet import WideResNet

_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")
SURROGATES = ("cnn", "airbench")
"""The search's surrogate networks: the small CNN (the default, for digits and CPUs) and airbench94's net."""
CENTRED = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def create_model(name: str, num_classes: int, in_channels: int = 3, width: int = 32,
                 weights: str | Path | None = None) -> nn.Module:
    """Create a model by name: ``cnn`` (the small surrogate; ``surrogate`` is its old name),
    ``airbench`` (airbench94's network, ``width`` 64 for its own), ``wrn-DEPTH-WIDTH`` or a timm name.

    timm models are created with ``pretrained=False``; pretrained weights come
    only from a local ``weights`` file (timm's ``pretrained_cfg_overlay``),
    never from a hub, and bring their own normalisation.
    """
    if name in ("cnn", "surrogate"):
        return SurrogateCNN(num_classes, in_channels, width)
    if name == "airbench":
        return AirbenchNet(num_classes, in_channels, width)
    match = _WRN.match(name)
    if match:
        if weights:
            raise UsageError("--weights applies to timm models; WRNs train from scratch")
        try:
            return Normalized(WideResNet(int(match[1]), int(match[2]), num_classes, in_channels), *CENTRED)
        except ValueError as error:
            raise UsageError(str(error)) from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a hub
    import timm

    if not timm.is_model(name):
        raise UsageError(f"unknown model {name!r}: use cnn, airbench, wrn-DEPTH-WIDTH (e.g. wrn-28-10) "
                         "or a timm model name (e.g. efficientnetv2_s, resnet18)")
    if weights is not None:
        if not Path(weights).is_file():
            raise UsageError(f"weights file {weights} does not exist")
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_channels,
                                  pretrained_cfg_overlay={"file": str(weights)})
        config = model.pretrained_cfg
        return Normalized(model, config.get("mean", CENTRED[0]), config.get("std", CENTRED[1]))
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    return Normalized(model, *CENTRED)


__all__ = ["SURROGATES", "AirbenchNet", "Normalized", "SurrogateCNN", "WideResNet", "create_model"]
