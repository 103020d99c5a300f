"""The airbench94 network (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU",
arXiv 2404.00498; KellerJordan/cifar10-airbench), written for optiloss.

A small VGG-like net: a frozen 2x2 convolution initialised by whitening patches
of the training images (its bias trains for the first epochs), then three
groups of conv-pool-BatchNorm-GELU-conv-BatchNorm-GELU (widths 64, 256, 256),
max-pooling, a bias-free linear head and a fixed 1/9 output scale. BatchNorm
weights are frozen at one; their biases train. The recipe that goes with it
(SGD with Nesterov momentum, decoupled hyperparameters, a 23 % warm-up then a
linear warm-down, a lookahead average of the weights) is
:class:`optiloss.train.AirbenchRecipe`; label smoothing is a loss of the zoo,
not part of the trainer, so the search can find (or beat) it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2
BATCHNORM_MOMENTUM = 0.6
OUTPUT_SCALE = 1 / 9
WHITEN_EPSILON = 5e-4


class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm with airbench's momentum convention, weight frozen at one, trainable bias."""

    def __init__(self, features: int, momentum: float = BATCHNORM_MOMENTUM) -> None:
        super().__init__(features, eps=1e-12, momentum=1 - momentum)
        self.weight.requires_grad = False


class _Conv(nn.Conv2d):
    """3x3 'same' convolution without bias whose first ``in_channels`` filters start as identities."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__(inputs, outputs, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.dirac_(self.weight.data[: self.weight.size(1)])


class _ConvGroup(nn.Module):
    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.conv1, self.pool, self.norm1 = _Conv(inputs, outputs), nn.MaxPool2d(2), _BatchNorm(outputs)
        self.conv2, self.norm2, self.activation = _Conv(outputs, outputs), _BatchNorm(outputs), nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """airbench94's network for 32x32 images in [0, 1] (normalised inside with CIFAR-10's statistics).

    Call :meth:`initialise_from_data` with training images before training: it sets the whitening
    convolution from their 2x2 patches (:func:`optiloss.train.train` does it for every model that has
    the method). ``width`` scales the three groups (64 gives airbench's 64/256/256).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        widths = [round(w * width / WIDTHS[0]) for w in WIDTHS]
        whiten_width = 2 * in_channels * WHITEN_KERNEL**2
        for name, values in (("mean", CIFAR_MEAN), ("std", CIFAR_STD)):
            self.register_buffer(name, torch.tensor(values[:in_channels]).view(1, -1, 1, 1), persistent=False)
        self.whiten = nn.Conv2d(in_channels, whiten_width, WHITEN_KERNEL, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        nn.init.zeros_(self.whiten.bias)
        self.groups = nn.Sequential(
            _ConvGroup(whiten_width, widths[0]),
            _ConvGroup(widths[0], widths[1]),
            _ConvGroup(widths[1], widths[2]),
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.whiten(self.normalise(images)))
        x = self.groups(x)
        x = F.adaptive_max_pool2d(x, 1).flatten(1)  # airbench's MaxPool2d(3) on the 3x3 map of 32 px inputs
        return self.head(x) * OUTPUT_SCALE

    @torch.no_grad()
    def initialise_from_data(self, images: torch.Tensor) -> None:
        """Whitening filters from the 2x2 patches of ``images`` (float in [0, 1], N x C x H x W):
        the eigenvectors of the patch covariance scaled by 1/sqrt(eigenvalue + eps), and their negatives."""
        x = self.normalise(images.float())
        channels, (height, width) = x.shape[1], self.whiten.weight.shape[2:]
        patches = x.unfold(2, height, 1).unfold(3, width, 1).transpose(1, 3)
        patches = patches.reshape(-1, channels * height * width)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())
        eigenvalues, eigenvectors = eigenvalues.flip(0).float(), eigenvectors.T.flip(0).float()
        filters = eigenvectors / torch.sqrt(eigenvalues.clamp_min(0) + WHITEN_EPSILON)[:, None]
        filters = filters.reshape(-1, channels, height, width)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))

    def whitening_bias(self) -> nn.Parameter:
        """The whitening convolution's bias: trained for the first epochs, then frozen."""
        return self.whiten.bias

    def batchnorm_biases(self) -> list[nn.Parameter]:
        """The parameters airbench trains with a 64x learning rate (and no extra weight decay)."""
        return [module.bias for module in self.modules() if isinstance(module, _BatchNorm)]
