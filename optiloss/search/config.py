"""Search configuration: one TOML file per study, validated before anything is written.

The settings model itself lives in :mod:`optiloss.settings`; these are the
search's names for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from optiloss.settings import SearchConfig, read_toml

__all__ = ["SearchConfig", "load_config", "make_config", "read_toml"]


def make_config(values: Mapping[str, Any], source: str = "config") -> SearchConfig:
    """Validate ``values`` and build a config (:meth:`SearchConfig.from_mapping`)."""
    return SearchConfig.from_mapping(values, source)


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> SearchConfig:
    """Read a study TOML (the defaults when ``path`` is None) and apply ``overrides``
    (:meth:`SearchConfig.load`)."""
    return SearchConfig.load(path, overrides)
