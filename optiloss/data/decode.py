"""Decoding image files into one uint8 array, once."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from optiloss.errors import UsageError

MAX_BAD_SHARE = 0.01


def _load(path: Path, size: int | None) -> np.ndarray:
    with Image.open(path) as opened:
        image = opened.convert("RGB")  # grayscale, palette and CMYK images become RGB
        if size is not None and image.size != (size, size):
            # shorter side to `size`, then a centred square crop
            scale = size / min(image.size)
            width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
            image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
            left, top = (width - size) // 2, (height - size) // 2
            image = image.crop((left, top, left + size, top + size))
        return np.asarray(image, dtype=np.uint8)


def decode_images(
    paths: Sequence[Path], size: int | None, *, description: str = "decoding", progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``paths`` into (N, 3, size, size) uint8 and the indices of the paths that decoded.

    Unreadable files are skipped and counted in one warning; more than 1 % of
    them is a :class:`UsageError`. With ``size`` None every image must already
    have the same size.
    """
    images: np.ndarray | None = None  # filled in place: one copy of the data set in memory
    kept: list[int] = []
    bad: list[Path] = []
    for index, path in enumerate(
        tqdm(paths, desc=description, unit="img", disable=not progress, mininterval=0.5)
    ):
        try:
            image = _load(path, size)
        except (UnidentifiedImageError, OSError, ValueError):
            bad.append(path)
            continue
        if images is None:
            images = np.empty((len(paths), 3, *image.shape[:2]), dtype=np.uint8)
        elif image.shape[:2] != images.shape[2:]:
            raise UsageError(
                f"{path} is {image.shape[1]}x{image.shape[0]} but earlier images are "
                f"{images.shape[3]}x{images.shape[2]}; "
                "set image_size (--image-size) to resize them"
            )
        images[len(kept)] = image.transpose(2, 0, 1)
        kept.append(index)
    if len(bad) > MAX_BAD_SHARE * max(1, len(paths)):
        raise UsageError(
            f"{len(bad)} of {len(paths)} images could not be read (first: {bad[0]}); "
            "more than 1 % is treated as a broken data set"
        )
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable image(s) of {len(paths)} (first: {bad[0]})", stacklevel=2
        )
    if images is None:
        return np.zeros((0, 3, size or 0, size or 0), np.uint8), np.zeros(0, np.int64)
    return images[: len(kept)], np.asarray(kept, dtype=np.int64)
