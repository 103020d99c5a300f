"""Models by name: the surrogate, CIFAR-style Wide ResNets and any timm model, all untrained by default.

Every model takes float images in [0, 1]; normalisation happens inside.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from torch import nn

from optiloss.errors import UsageError
from optiloss.models import airbench, surrogate
from optiloss.models.airbench import AirbenchNet
from optiloss.models.spec import Surrogate
from optiloss.models.surrogate import DEFAULT_WIDTH, Normalized, SurrogateCNN
from optiloss.models.wideresnet import WideResNet
from optiloss.train import register_recipe

if TYPE_CHECKING:
    from timm.models import PretrainedCfg

_WRN = re.compile(r"^wrn-(\d+)-(\d+)$")
SURROGATES: dict[str, Surrogate] = {spec.name: spec for spec in (surrogate.SURROGATE, airbench.SURROGATE)}
"""The search's surrogate networks by name, the default first: a new one is a module with a
:class:`Surrogate` and a line here (docs/contributing.md)."""
for _spec in SURROGATES.values():
    register_recipe(_spec.recipe)


def surrogate_named(name: str) -> Surrogate | None:
    """The surrogate called ``name`` (or one of its aliases), or None for another model."""
    for spec in SURROGATES.values():
        if name == spec.name or name in spec.aliases:
            return spec
    return None


CENTRED = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    width: int = DEFAULT_WIDTH,
    weights: str | Path | None = None,
) -> nn.Module:
    """Create a model by name: a surrogate of :data:`SURROGATES` (``cnn``, whose old name is
    ``surrogate``; ``airbench``, ``width`` 64 for airbench94's own), ``wrn-DEPTH-WIDTH`` or a timm
    name, optionally with a pretrained tag (``tf_efficientnetv2_s.in1k``).

    timm models are created untrained unless ``weights`` names a local file:
    then they load it through timm's ``pretrained_cfg_overlay`` (never from a
    hub) and normalise inputs with the mean and std of the name's pretrained
    config in timm's registry, the ones those weights were trained with.
    """
    spec = surrogate_named(name)
    if spec is not None:
        return spec.build(num_classes, in_channels, width)
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
        raise UsageError(
            f"unknown model {name!r}: use {', '.join(SURROGATES)}, wrn-DEPTH-WIDTH (e.g. wrn-28-10) "
            "or a timm model name (e.g. resnet18, tf_efficientnetv2_s.in1k)"
        )
    config = pretrained_config(name)
    if weights is not None:
        return _pretrained(name, config, num_classes, in_channels, Path(weights))
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    return Normalized(model, *CENTRED)


def pretrained_config(name: str) -> PretrainedCfg:
    """timm's pretrained config of a timm model name (its default tag without one), from timm's
    registry, offline; a tag timm does not know is a :class:`UsageError`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a hub
    import timm
    from timm.models import PretrainedCfg, get_pretrained_cfg

    try:
        config = get_pretrained_cfg(name)
    except RuntimeError:
        tags = ", ".join(timm.list_pretrained(name.split(".")[0] + ".*")) or "none"
        raise UsageError(f"model {name!r}: timm has no such pretrained tag (its tags: {tags})") from None
    return config if config is not None else PretrainedCfg()


def _pretrained(
    name: str, config: PretrainedCfg, num_classes: int, in_channels: int, weights: Path
) -> nn.Module:
    """The timm model ``name`` with the weights of a local file, normalised as its pretrained config says.

    The file must hold the whole pretrained model, head included (the pretrained config's
    ``num_classes``), so it loads strictly: a file of another architecture is refused instead
    of leaving part of the model untrained; the head is then replaced for ``num_classes``.
    """
    import timm

    if not config.has_weights:
        similar = timm.list_pretrained(f"*{name.split('.')[0]}*")[:3]
        hint = f" (e.g. {', '.join(similar)})" if similar else ""
        raise UsageError(
            f"model {name!r} has no pretrained weights in timm, so the normalisation a weights "
            f"file expects is unknown: name a timm model with a pretrained tag{hint}"
        )
    if not weights.is_file():
        problem = "is a folder, not a file" if weights.is_dir() else "does not exist"
        raise UsageError(f"weights file {weights} {problem} (docs/transfer.md says how to get one)")
    try:
        model = timm.create_model(
            name,
            pretrained=True,
            num_classes=config.num_classes,
            in_chans=in_channels,
            pretrained_cfg_overlay={"file": str(weights), "source": None},
        )
    except Exception as error:  # anything timm or torch raise while reading or loading the file
        raise UsageError(
            f"weights file {weights} does not fit model {name!r} ({_first_detail(error)}): "
            f"it must be that model's pretrained state dict, head included"
        ) from None
    if num_classes != config.num_classes:
        # every timm model has reset_classifier, but create_model is typed as returning nn.Module
        cast(Any, model).reset_classifier(num_classes)
    return Normalized(model, _per_channel(config.mean, in_channels), _per_channel(config.std, in_channels))


def _first_detail(error: Exception) -> str:
    """The first informative line of an error (torch's load errors start with a header line), shortened."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    detail = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    return detail if len(detail) <= 150 else detail[:147] + "..."


def _per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Per-channel statistics for ``channels`` inputs: as given, or their mean for each channel."""
    if len(values) == channels:
        return tuple(values)
    return (sum(values) / len(values),) * channels


__all__ = [
    "DEFAULT_WIDTH",
    "SURROGATES",
    "Surrogate",
    "surrogate_named",
    "AirbenchNet",
    "Normalized",
    "SurrogateCNN",
    "WideResNet",
    "create_model",
    "pretrained_config",
]
