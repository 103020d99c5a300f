"""An on-disk cache of decoded data sets, keyed by what would change them."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CACHE_ENVIRONMENT_VARIABLE = "OPTILOSS_CACHE"
CACHE_VERSION = 1


def cache_folder() -> Path:
    """``$OPTILOSS_CACHE``, else ``~/.cache/optiloss/tensors``."""
    return Path(os.environ.get(CACHE_ENVIRONMENT_VARIABLE) or Path.home() / ".cache" / "optiloss" / "tensors")


def source_signature(*paths: Path) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of each path, and of every folder below a folder path.

    Folder modification times change when files are added, removed or renamed;
    a file edited in place is not seen (delete the cache folder after that).
    """
    signature = []
    for path in paths:
        stack = [Path(path)]
        while stack:
            current = stack.pop()
            stat = current.stat()
            signature.append((str(current.resolve()), stat.st_size, stat.st_mtime_ns))
            if current.is_dir():
                with os.scandir(current) as entries:  # d_type: no stat per file
                    stack.extend(sorted(Path(entry.path) for entry in entries if entry.is_dir()))
    return signature


def cached(key: dict[str, Any], build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Return ``build()``, loading it from the cache when ``key`` was built before.

    ``key`` must be JSON-serialisable and hold everything the result depends on.
    The write is atomic (temporary file, then rename), so a killed process never
    leaves a half-written cache entry.
    """
    text = json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    path = cache_folder() / f"{digest[:32]}.pt"
    if path.exists():
        try:
            # memory-mapped: the caller's index copies are the only copy held in memory
            return torch.load(path, weights_only=True, mmap=True)
        except Exception:  # a corrupt entry is rebuilt
            path.unlink(missing_ok=True)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(value, temporary)
    os.replace(temporary, path)
    return value
