"""Which device a command or a worker trains on."""

from __future__ import annotations

import torch

from optiloss.errors import UsageError


def worker_device(name: str, worker: int, gpu_count: int) -> str:
    """The device worker ``worker`` trains on, for a ``--device`` of ``auto``, ``cpu``, ``cuda`` or
    ``cuda:N`` on a machine with ``gpu_count`` GPUs: ``cuda`` (and ``auto`` with GPUs) spreads the
    workers over every GPU (worker i on GPU i mod count); ``cuda:N`` pins them all to GPU N.
    Asking for a GPU that is not there is a :class:`UsageError`."""
    if name == "cpu" or (name == "auto" and gpu_count == 0):
        return "cpu"
    if gpu_count == 0:
        raise UsageError(f"--device {name} was asked for, but torch sees no CUDA device; use --device cpu")
    if name in ("auto", "cuda"):
        return f"cuda:{worker % gpu_count}"
    try:
        index = int(name.removeprefix("cuda:"))
    except ValueError:
        raise UsageError(f"--device {name}: use auto, cpu, cuda or cuda:N with N a GPU index") from None
    if index >= gpu_count:
        raise UsageError(
            f"--device {name} was asked for, but torch sees {gpu_count} CUDA device(s) "
            f"(cuda:0 to cuda:{gpu_count - 1})"
        )
    return name


def resolve_device(name: str, worker: int = 0) -> torch.device:
    """The device of ``worker`` on this machine (:func:`worker_device`)."""
    gpu_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return torch.device(worker_device(name, worker, gpu_count))
