"""The corruption suite of the robustness objective, modelled on CIFAR-10-C.

Each corruption maps a float batch in [0, 1] and a severity 1-5 to a batch in
[0, 1]. Severity tables follow Hendrycks & Dietterich (2019) for 32 px images.
Kornia does the work where it has the operation; the rest are small tensor
functions. Defocus blur is approximated by a Gaussian blur and fog by Kornia's
plasma brightness; frost uses the release's own photographs (docs/robustness.md,
"generated as", says how each follows the release).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path

import kornia.augmentation as K
import kornia.enhance
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from optiloss.data.cache import cached
from optiloss.data.released import write_released_layout
from optiloss.errors import OptilossError

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


GLASS_BLUR = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))
"""(sigma, largest shift in px, iterations) per severity: CIFAR-10-C's for 32 px."""
ZOOM_BLUR_LARGEST = (1.06, 1.11, 1.16, 1.21, 1.26)
"""Zoom factors 1, 1.01, ... below this per severity: CIFAR-10-C's for 32 px."""
ELASTIC = ((0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
"""(alpha, sigma, affine shift) per severity as shares of the image side: CIFAR-10-C's for 32 px."""


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    kernel = max(3, 2 * math.ceil(3 * sigma) + 1)
    return kornia.filters.gaussian_blur2d(images, (kernel, kernel), (sigma, sigma), border_type="reflect")


def glass_blur(images: torch.Tensor, severity: int) -> torch.Tensor:
    """Blur, move every pixel to a random neighbour within the largest shift, blur again. CIFAR-10-C
    swaps pixels one by one in a Python loop; here every pixel takes a neighbour's value at once (the
    same local scrambling, in one gather)."""
    sigma, shift, iterations = GLASS_BLUR[severity - 1]
    images = _blur(images, sigma)
    count, channels, height, width = images.shape
    rows = torch.arange(height).view(1, height, 1)
    columns = torch.arange(width).view(1, 1, width)
    for _ in range(iterations):
        moved_rows = (rows + torch.randint(-shift, shift + 1, (count, height, width))).clamp(0, height - 1)
        moved_columns = (columns + torch.randint(-shift, shift + 1, (count, height, width))).clamp(
            0, width - 1
        )
        index = (moved_rows * width + moved_columns).view(count, 1, -1).expand(-1, channels, -1)
        images = images.flatten(2).gather(2, index).view(count, channels, height, width)
    return _blur(images, sigma).clamp(0, 1)


def _zoom_centre(images: torch.Tensor, zoom: float) -> torch.Tensor:
    """The centre of ``images`` magnified by ``zoom`` (bilinear), at the images' own size."""
    height, width = images.shape[-2:]
    zoomed = F.interpolate(
        images, size=(math.ceil(height * zoom), math.ceil(width * zoom)), mode="bilinear", align_corners=False
    )
    top, left = (zoomed.shape[-2] - height) // 2, (zoomed.shape[-1] - width) // 2
    return zoomed[..., top : top + height, left : left + width]


def zoom_blur(images: torch.Tensor, severity: int) -> torch.Tensor:
    """The mean of the image and its centre zoomed by 1, 1.01, ... (CIFAR-10-C's zoom blur)."""
    zooms = [1 + step / 100 for step in range(round((ZOOM_BLUR_LARGEST[severity - 1] - 1) * 100))]
    total = images.clone()
    for zoom in zooms:
        total += _zoom_centre(images, zoom)
    return total / (len(zooms) + 1)


def elastic_transform(images: torch.Tensor, severity: int) -> torch.Tensor:
    """CIFAR-10-C's elastic transform: a random affine map (three points moved by up to the shift),
    then a smooth random displacement field (uniform noise blurred by sigma, scaled by alpha), sampled
    bilinearly with a reflected border."""
    alpha, sigma, shift = ELASTIC[severity - 1]
    count, _, height, width = images.shape
    side = min(height, width)
    # the affine part, in the normalised coordinates of grid_sample: the map that takes three points
    # (centre +- a third of the side) to themselves moved by up to shift
    square = torch.tensor([[-1 / 3, -1 / 3], [1 / 3, -1 / 3], [-1 / 3, 1 / 3]])
    moved = square + (torch.rand(count, 3, 2) * 2 - 1) * shift * 2
    source = torch.cat([moved, torch.ones(count, 3, 1)], dim=2)  # the inverse map, for sampling
    target = square.expand(count, 3, 2)
    affine = torch.linalg.solve(source, target.clone()).transpose(1, 2)  # (count, 2, 3)
    grid = F.affine_grid(affine, list(images.shape), align_corners=False)
    if alpha > 0:
        noise = torch.rand(count, 2, height, width) * 2 - 1
        displacement = _blur(noise, max(sigma * side, 1e-3)) * alpha * 2  # shares of the side -> [-1, 1]
        grid = grid + displacement.permute(0, 2, 3, 1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


SNOW = (
    (0.1, 0.2, 1.0, 0.6, 8, 3, 0.95),
    (0.1, 0.2, 1.0, 0.5, 10, 4, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
)
"""(flake mean, flake spread, zoom, threshold, streak radius, streak sigma, image weight) per severity:
CIFAR-10-C's for 32 px."""
FROST = ((1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))
"""(image weight, frost weight) per severity: CIFAR-10-C's for 32 px."""
FROST_PHOTOGRAPHS = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
"""The photographs CIFAR-10-C draws from (its list names a sixth that its draw never reaches)."""
FROST_SCALE = 0.2
FROST_PACKAGE = "imagecorruptions==1.1.2"


def _motion_streaks(layers: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur, which CIFAR-10-C's snow uses: each pixel becomes the Gaussian-weighted
    mean of the 2 * ceil(radius) + 1 pixels behind it along ``angles`` (degrees, one per image; the
    taps rounded to whole pixels, the border repeated). ``layers``: (N, 1, H, W)."""
    taps = 2 * math.ceil(radius) + 1
    steps = torch.arange(taps, dtype=torch.float64)
    weights = torch.exp(-(steps**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).to(layers.dtype)
    radians = torch.deg2rad(angles.double()).view(-1, 1)
    column_steps = torch.ceil(steps * torch.cos(radians) - 0.5).long()  # (N, taps)
    row_steps = torch.ceil(steps * torch.sin(radians) - 0.5).long()
    count, _, height, width = layers.shape
    padded = F.pad(layers, (taps, taps, taps, taps), mode="replicate").flatten(1)
    rows = torch.arange(height).view(1, height, 1) + taps
    columns = torch.arange(width).view(1, 1, width) + taps
    total = torch.zeros(count, height * width, dtype=layers.dtype)
    for tap in range(taps):
        index = (rows + row_steps[:, tap].view(-1, 1, 1)) * (width + 2 * taps) + (
            columns + column_steps[:, tap].view(-1, 1, 1)
        )
        total += weights[tap] * padded.gather(1, index.flatten(1))
    return total.view(count, 1, height, width)


def snow(images: torch.Tensor, severity: int) -> torch.Tensor:
    """CIFAR-10-C's snow: a layer of flakes (normal noise, its centre zoomed, thresholded) streaked
    by a one-sided motion blur at an angle between -135 and -45 degrees, added to the image and to
    it upside down, over an image whitened towards its grey (1.5 grey + 0.5). The layer passes through
    8 bits before and after the streaks, as the release's PNG round trip does."""
    mean, spread, zoom, threshold, radius, sigma, image_weight = SNOW[severity - 1]
    count, _, height, width = images.shape
    flakes = _zoom_centre(torch.randn(count, 1, height, width) * spread + mean, zoom)
    flakes = torch.where(flakes < threshold, 0.0, flakes).clamp(0, 1)
    flakes = torch.floor(flakes * 255) / 255
    angles = torch.empty(count).uniform_(-135, -45)
    flakes = torch.round(_motion_streaks(flakes, radius, sigma, angles) * 255) / 255
    grey = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    images = image_weight * images + (1 - image_weight) * torch.maximum(images, grey * 1.5 + 0.5)
    return (images + flakes + flakes.flip(-2, -1)).clamp(0, 1)


@functools.lru_cache(maxsize=1)
def _frost_photographs() -> tuple[torch.Tensor, ...]:
    """The frost photographs as float RGB in [0, 1], scaled by CIFAR-10-C's 0.2 (bilinear, to 8 bits).
    They ship in the imagecorruptions package (Apache-2.0), found without importing it (its own
    imports need OpenCV, which optiloss does not)."""
    spec = importlib.util.find_spec("imagecorruptions")
    folder = Path(next(iter(spec.submodule_search_locations or ()), "")) / "frost" if spec else None
    if folder is None or not all((folder / name).is_file() for name in FROST_PHOTOGRAPHS):
        raise OptilossError(
            "frost needs the frost photographs of the imagecorruptions package: "
            f"pip install --no-deps {FROST_PACKAGE}"
        )
    photographs = []
    for name in FROST_PHOTOGRAPHS:
        with Image.open(folder / name) as photograph:
            pixels = torch.from_numpy(np.array(photograph.convert("RGB"))).permute(2, 0, 1)
        scaled = F.interpolate(
            pixels[None].float(), scale_factor=FROST_SCALE, mode="bilinear", align_corners=False
        )
        photographs.append(scaled[0].round().clamp(0, 255) / 255)
    return tuple(photographs)


def frost(images: torch.Tensor, severity: int) -> torch.Tensor:
    """CIFAR-10-C's frost: the image dimmed and a random crop of one of five frost photographs added.
    Images larger than the scaled photographs (beyond CIFAR's 32 px) crop a photograph magnified to
    cover them."""
    image_weight, frost_weight = FROST[severity - 1]
    count, _, height, width = images.shape
    choices = torch.randint(len(FROST_PHOTOGRAPHS), (count,))
    crops = torch.empty_like(images)
    for index, photograph in enumerate(_frost_photographs()):
        chosen = (choices == index).nonzero().flatten()
        cover = max(1.0, (height + 1) / photograph.shape[-2], (width + 1) / photograph.shape[-1])
        if cover > 1:
            size = (math.ceil(photograph.shape[-2] * cover), math.ceil(photograph.shape[-1] * cover))
            photograph = F.interpolate(photograph[None], size=size, mode="bilinear", align_corners=False)[0]
        tops = torch.randint(photograph.shape[-2] - height, (len(chosen),)).tolist()
        lefts = torch.randint(photograph.shape[-1] - width, (len(chosen),)).tolist()
        for image, top, left in zip(chosen.tolist(), tops, lefts):
            crops[image] = photograph[:, top : top + height, left : left + width]
    return (image_weight * images + frost_weight * crops).clamp(0, 1)


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
"""The search's default suite (``corruption_suite = "ten"``)."""
MORE_CORRUPTIONS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "glass_blur": glass_blur,
    "zoom_blur": zoom_blur,
    "elastic_transform": elastic_transform,
    "snow": snow,
    "frost": frost,
}
"""CIFAR-10-C's corruptions beyond the ten, in ``corruption_suite = "fifteen"``."""
SUITES = {"ten": tuple(CORRUPTIONS), "fifteen": (*CORRUPTIONS, *MORE_CORRUPTIONS)}
GENERATORS = {**CORRUPTIONS, **MORE_CORRUPTIONS}


def corrupt(
    images: torch.Tensor, name: str, severity: int, seed: int, batch_size: int = 1000
) -> torch.Tensor:
    """Corrupt uint8 ``images`` reproducibly on the CPU (CPU and CUDA differ); returns uint8."""
    images = images.cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        chunks = [
            GENERATORS[name](images[start : start + batch_size].float() / 255, severity)
            for start in range(0, len(images), batch_size)
        ]
    return (torch.cat(chunks).clamp(0, 1) * 255).round().to(torch.uint8)


def corrupted_copies(
    images: torch.Tensor, severity: int, seed: int, suite: str = "ten", progress: bool = False
) -> dict[str, torch.Tensor]:
    """One corrupted uint8 copy of ``images`` per corruption of ``suite`` (:data:`SUITES`), on
    ``images``' device.

    Generated once on the CPU with a fixed seed and cached on disk, so every
    trial of a study, in any process or on any machine, scores identical images.
    The ten keep their seeds in either suite, and ``"ten"``'s cache key is the one every study made
    before the suites has its copies under.
    """
    digest = hashlib.sha256(images.cpu().contiguous().numpy().tobytes()).hexdigest()
    names = SUITES[suite]
    key = {"corruptions": list(names), "images": digest, "severity": severity, "seed": seed}

    def generate() -> dict[str, torch.Tensor]:
        bar = tqdm(names, desc=f"corrupting at severity {severity}", unit="copy", disable=not progress)
        return {name: corrupt(images, name, severity, seed + index) for index, name in enumerate(bar)}

    copies = cached(key, generate)
    return {name: copy.to(images.device) for name, copy in copies.items()}


def corrupted_suite(
    images: torch.Tensor, severities: tuple[int, ...], seed: int, suite: str = "ten", progress: bool = False
) -> dict[str, torch.Tensor]:
    """The corrupted copies robustness averages over: :func:`corrupted_copies` of ``suite`` at one
    severity (keys ``<corruption>``, as every study made before severity lists), or at each of several
    (keys ``<corruption>_s<severity>``, each severity's copies cached as the single-severity ones are)."""
    if len(severities) == 1:
        return corrupted_copies(images, severities[0], seed, suite, progress)
    return {
        f"{name}_s{severity}": copy
        for severity in severities
        for name, copy in corrupted_copies(images, severity, seed, suite, progress).items()
    }


RELEASED_NAMES = {
    name: {"gaussian_blur": "defocus_blur", "jpeg": "jpeg_compression"}.get(name, name) for name in GENERATORS
}
"""Each generated corruption's name in the released CIFAR-10-C files (defocus blur is generated as a
Gaussian blur)."""


def write_generated_layout(
    folder: str | Path, images: torch.Tensor, labels: torch.Tensor, seed: int = 0, progress: bool = False
) -> Path:
    """optiloss's own fifteen corruptions of ``images`` at severities 1-5, written in the released
    layout under the released names (:mod:`optiloss.data.released`): for data sets without released
    files, and to check the reader against images whose corruptions are known."""
    blocks: dict[str, list[np.ndarray]] = {RELEASED_NAMES[name]: [] for name in GENERATORS}
    jobs = [(index, name, severity) for index, name in enumerate(GENERATORS) for severity in range(1, 6)]
    for index, name, severity in tqdm(jobs, desc="corrupting", unit="copy", disable=not progress):
        copy = corrupt(images, name, severity, seed + 100 * severity + index)
        blocks[RELEASED_NAMES[name]].append(copy.permute(0, 2, 3, 1).numpy())
    return write_released_layout(folder, blocks, labels.numpy())
