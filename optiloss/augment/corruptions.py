"""The corruption suite of the robustness objective, modelled on CIFAR-10-C.

Each corruption maps a float batch in [0, 1] and a severity 1-5 to a batch in
[0, 1]. Severity tables follow Hendrycks & Dietterich (2019) for 32 px images.
Kornia does the work where it has the operation; shot noise and pixelate are
small tensor functions. Defocus blur is approximated by a Gaussian blur and
fog by Kornia's plasma brightness.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import kornia.augmentation as K
import kornia.enhance
import torch
import torch.nn.functional as F

from optiloss.data.cache import cached

GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_NOISE_PHOTONS = (500, 250, 100, 75, 50)
IMPULSE_NOISE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)
GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)
MOTION_BLUR_KERNEL = (3, 5, 5, 7, 7)
CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)
BRIGHTNESS_SHIFT = (0.05, 0.1, 0.15, 0.2, 0.3)
FOG_INTENSITY = (0.2, 0.3, 0.4, 0.5, 0.6)
JPEG_QUALITY = (80, 65, 58, 50, 40)
PIXELATE_FACTOR = (0.95, 0.9, 0.85, 0.75, 0.65)


def gaussian_noise(images: torch.Tensor, severity: int) -> torch.Tensor:
    return K.RandomGaussianNoise(std=GAUSSIAN_NOISE_STD[severity - 1], p=1.0)(images)


def shot_noise(images: torch.Tensor, severity: int) -> torch.Tensor:
    photons = SHOT_NOISE_PHOTONS[severity - 1]
    return torch.poisson(images * photons) / photons


def impulse_noise(images: torch.Tensor, severity: int) -> torch.Tensor:
    amount = IMPULSE_NOISE_AMOUNT[severity - 1]
    return K.RandomSaltAndPepperNoise(amount=(amount, amount), salt_vs_pepper=(0.5, 0.5), p=1.0)(images)


def gaussian_blur(images: torch.Tensor, severity: int) -> torch.Tensor:
    sigma = GAUSSIAN_BLUR_SIGMA[severity - 1]
    kernel = 2 * math.ceil(3 * sigma) + 1
    return K.RandomGaussianBlur((kernel, kernel), (sigma, sigma), p=1.0)(images)


def motion_blur(images: torch.Tensor, severity: int) -> torch.Tensor:
    return K.RandomMotionBlur(MOTION_BLUR_KERNEL[severity - 1], (-45.0, 45.0), (-1.0, 1.0), p=1.0)(images)


def contrast(images: torch.Tensor, severity: int) -> torch.Tensor:
    return kornia.enhance.adjust_contrast_with_mean_subtraction(images, CONTRAST_FACTOR[severity - 1])


def brightness(images: torch.Tensor, severity: int) -> torch.Tensor:
    shift = 1 + BRIGHTNESS_SHIFT[severity - 1]  # Kornia adds factor - 1
    return K.RandomBrightness(brightness=(shift, shift), p=1.0)(images)


def fog(images: torch.Tensor, severity: int) -> torch.Tensor:
    intensity = FOG_INTENSITY[severity - 1]
    return K.RandomPlasmaBrightness(roughness=(0.4, 0.4), intensity=(intensity, intensity), p=1.0)(images)


def jpeg(images: torch.Tensor, severity: int) -> torch.Tensor:
    quality = float(JPEG_QUALITY[severity - 1])
    return K.RandomJPEG(jpeg_quality=(quality, quality), p=1.0)(images)


def pixelate(images: torch.Tensor, severity: int) -> torch.Tensor:
    height, width = images.shape[-2:]
    factor = PIXELATE_FACTOR[severity - 1]
    small = F.interpolate(
        images, size=(max(1, round(height * factor)), max(1, round(width * factor))), mode="area"
    )
    return F.interpolate(small, size=(height, width), mode="nearest")


CORRUPTIONS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "gaussian_blur": gaussian_blur,
    "motion_blur": motion_blur,
    "contrast": contrast,
    "brightness": brightness,
    "fog": fog,
    "jpeg": jpeg,
    "pixelate": pixelate,
}


def corrupt(
    images: torch.Tensor, name: str, severity: int, seed: int, batch_size: int = 1000
) -> torch.Tensor:
    """Corrupt uint8 ``images`` reproducibly on the CPU (CPU and CUDA differ); returns uint8."""
    images = images.cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        chunks = [
            CORRUPTIONS[name](images[start : start + batch_size].float() / 255, severity)
            for start in range(0, len(images), batch_size)
        ]
    return (torch.cat(chunks).clamp(0, 1) * 255).round().to(torch.uint8)


def corrupted_copies(images: torch.Tensor, severity: int, seed: int) -> dict[str, torch.Tensor]:
    """One corrupted uint8 copy of ``images`` per corruption, on ``images``' device.

    Generated once on the CPU with a fixed seed and cached on disk, so every
    trial of a study, in any process or on any machine, scores identical images.
    """
    digest = hashlib.sha256(images.cpu().contiguous().numpy().tobytes()).hexdigest()
    key = {"corruptions": list(CORRUPTIONS), "images": digest, "severity": severity, "seed": seed}
    copies = cached(
        key,
        lambda: {
            name: corrupt(images, name, severity, seed + index) for index, name in enumerate(CORRUPTIONS)
        },
    )
    return {name: copy.to(images.device) for name, copy in copies.items()}


def corrupted_suite(images: torch.Tensor, severities: tuple[int, ...], seed: int) -> dict[str, torch.Tensor]:
    """The corrupted copies robustness averages over: :func:`corrupted_copies` at one severity (keys
    ``<corruption>``, as every study made before severity lists), or at each of several (keys
    ``<corruption>_s<severity>``, each severity's copies cached as the single-severity ones are)."""
    if len(severities) == 1:
        return corrupted_copies(images, severities[0], seed)
    return {
        f"{name}_s{severity}": copy
        for severity in severities
        for name, copy in corrupted_copies(images, severity, seed).items()
    }
