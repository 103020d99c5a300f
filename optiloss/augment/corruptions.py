"""Image corruptions for the robustness objective, modelled on CIFAR-10-C.

Each corruption maps a float batch in [0, 1] and a severity 1-5 to a corrupted
batch in [0, 1]. Severity tables follow Hendrycks & Dietterich (2019).
"""

from __future__ import annotations

import math
from typing import Callable

import kornia.augmentation as K
import torch

GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)


def gaussian_noise(images: torch.Tensor, severity: int) -> torch.Tensor:
    noise = K.RandomGaussianNoise(std=GAUSSIAN_NOISE_STD[severity - 1], p=1.0)
    return noise(images).clamp(0, 1)


def gaussian_blur(images: torch.Tensor, severity: int) -> torch.Tensor:
    sigma = GAUSSIAN_BLUR_SIGMA[severity - 1]
    kernel = 2 * math.ceil(3 * sigma) + 1
    blur = K.RandomGaussianBlur((kernel, kernel), (sigma, sigma), p=1.0)
    return blur(images).clamp(0, 1)


CORRUPTIONS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
}


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int) -> torch.Tensor:
    """Corrupt a uint8 batch reproducibly; returns uint8, like CIFAR-10-C."""
    with torch.random.fork_rng(devices=[images.device] if images.is_cuda else []):
        torch.manual_seed(seed)
        corrupted = CORRUPTIONS[name](images.float() / 255, severity)
    return (corrupted * 255).round().to(torch.uint8)


def corrupted_copies(images: torch.Tensor, severity: int, seed: int) -> dict[str, torch.Tensor]:
    """One corrupted uint8 copy of ``images`` per corruption, identical for the same seed."""
    return {name: corrupt(images, name, severity, seed + index)
            for index, name in enumerate(CORRUPTIONS)}
