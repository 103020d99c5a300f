"""Helpers the benchmarks share: the real CIFAR-10 JPEG folder, unpacked once; figures for
``bench/gpu.sh``'s results file."""

from __future__ import annotations

import argparse
import json
import os
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from gpu_run import FIGURES_ENV, unpack_once

from optiloss.data import default_data_root

ROOT = Path(__file__).resolve().parents[1]
CIFAR_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.xz"


def cifar10_jpeg_folder(archive: Path = CIFAR_ARCHIVE) -> Path:
    """``<data root>/cifar10-jpeg`` (train/ and test/ class folders), unpacked from the
    shared archive if missing."""
    target = default_data_root() / "cifar10-jpeg"
    if (target / "test").is_dir() and (target.is_symlink() or target.resolve() != target):
        return target  # a folder ``bench/gpu.sh`` linked here
    return unpack_once(archive, target)


def report_figures(**figures: Any) -> None:
    """Add ``figures`` (JSON values) to the results line of the running ``bench/gpu.sh`` part; does
    nothing when the benchmark runs on its own."""
    path = os.environ.get(FIGURES_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(figures) + "\n")


def add_overrides_option(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable): a search-config key with a TOML value, e.g. ``subset=3000``."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a search-config key (a TOML value)",
    )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys given with ``--set`` (:func:`add_overrides_option`)."""
    return tomllib.loads("\n".join(args.set))


def profiled(label: str, work: Callable[[], object], steps: int, device: torch.device, top: int = 6) -> dict:
    """Run ``work`` (``steps`` training steps) under ``torch.profiler``; print and return the wall time
    and the busy device time per step (CUDA kernels on a GPU, operator self time on a CPU) and the
    ``top`` kernels by time. Busy far below wall: the step waits on launches, not on the device."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    synchronize = torch.cuda.synchronize if cuda else (lambda: None)
    synchronize()
    started = time.perf_counter()
    with profile(activities=activities) as profiler:
        work()
        synchronize()
    wall_ms = 1000 * (time.perf_counter() - started) / steps
    events = profiler.key_averages()
    attribute = "self_device_time_total" if cuda else "self_cpu_time_total"
    busy_ms = sum(getattr(event, attribute) for event in events) / 1000 / steps
    ranked = sorted(events, key=lambda event: getattr(event, attribute), reverse=True)[:top]
    kernels = {event.key: getattr(event, attribute) / 1000 / steps for event in ranked}
    print(
        f"profile, {label}: {wall_ms:.2f} ms wall a step, {busy_ms:.2f} ms busy on the "
        f"{'GPU' if cuda else 'CPU'} ({100 * busy_ms / wall_ms:.0f} %) over {steps} steps; top: "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in kernels.items())
    )
    figures = {"wall_ms_per_step": wall_ms, "busy_ms_per_step": busy_ms, "top_kernels_ms": kernels}
    report_figures(**{f"profile {label}": figures})
    return figures
