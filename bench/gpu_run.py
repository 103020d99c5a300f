"""One GPU call that measures: the parts of ``bench/gpu.sh`` in order of value, each under its own time
limit, after a preflight that refuses within seconds, with a log and a results file that come back.

    bash bench/gpu.sh [--device cuda|cpu] [--plan] [--all] [--out DIR] [ARCHIVE_OR_FOLDER]

- The preflight checks, before anything runs: the CIFAR-10 data (the JPEG archive, unpacked once into
  ``$OPTILOSS_DATA/cifar10-jpeg`` through a temporary folder renamed when complete, or a folder with
  ``train/`` and ``test/``, made absolute), the imports (torch, optuna, kornia, sqlalchemy, and on CUDA
  airbench for the reference), and on CUDA that torch sees the card; it prints the versions of
  torch, CUDA and cuDNN and the card. What is missing is one line and exit status 2.
- The parts run in order of value, each in its own process group, stopped at its limit (recorded as
  ``timeout``; the next part runs). On CUDA: P5 airbench (with the breakdown, the profile and the
  airbench94 reference), P2 airbench, P7 (steady state), then P5 compiled in what is left of the
  budget (at most :data:`CUDA_BUDGET_S`). ``--all`` adds the CNN P5, P2 CNN and P1 after them.
  ``--device cpu`` is the try-out: every part on a small scale, with CPU limits.
- With ``--out DIR`` (default ``$OUT`` when set) the whole log goes to ``DIR/gpu.log`` and one JSON
  line per part (name, status, seconds, limit, exit status, figures) to ``DIR/results.jsonl``,
  written as each part ends, so a call cut short still returns what finished.
- ``--plan`` prints the parts and their limits and runs nothing.

The exit status is 0 when every part ran, 1 when one failed or was stopped, 2 when the preflight
refused.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVES = (
    ROOT / ".gpu" / "cifar10-jpeg.tar.xz",
    ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.xz",
)
CUDA_BUDGET_S = 480
"""The default CUDA run's parts add up to at most 8 minutes (a 10-minute call leaves room for start-up)."""
FIGURES_ENV = "OPTILOSS_BENCH_FIGURES"
"""The file a part appends its figures to, one JSON object a line (``_shared.report_figures``)."""
COMPLETE_MARKER = ".unpacked"
MINIMUM_PART_S = 20
"""A part that would get less than this of the budget is skipped instead of started."""
REQUIRED_MODULES = ("torch", "optuna", "kornia", "sqlalchemy")


class PreflightError(Exception):
    """What the run lacks, as the one line the user sees."""


@dataclass(frozen=True)
class Part:
    """One measurement: a command run from the repository root, stopped after ``limit_s`` seconds.
    A part that ``fills_budget`` runs in what is left of the budget, at most ``limit_s``."""

    name: str
    command: tuple[str, ...]
    limit_s: int
    fills_budget: bool = False


@dataclass
class PartResult:
    part: str
    status: str
    """ok, failed (non-zero exit), timeout (stopped at its limit) or skipped (no budget left)."""
    seconds: float
    limit_s: float
    exit_status: int | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return json.dumps(
            {
                "part": self.part,
                "status": self.status,
                "seconds": round(self.seconds, 2),
                "limit_s": round(self.limit_s, 1),
                "exit_status": self.exit_status,
                "figures": self.figures,
                "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
        )


@dataclass(frozen=True)
class Plan:
    """The parts in the order they run, and the seconds they may take in all."""

    parts: list[Part]
    budget_s: int


def plan(device: str, folder: Path, everything: bool = False) -> Plan:
    """The parts of a run on ``device`` (``cuda``, or ``cpu`` for the try-out) over the CIFAR-10 JPEG
    ``folder``, in the order they run; ``everything`` adds the parts measured on a GPU before. On CUDA
    the default parts share :data:`CUDA_BUDGET_S`; on the CPU the budget is the sum of the limits."""
    python = sys.executable
    dataset = f"folder:{folder}"
    trial = (python, "bench/gpu_trial.py", "--dataset", dataset, "--device", device)
    if device == "cuda":
        parts = [
            Part("P5 airbench", (*trial, "--breakdown", "--profile", "10", "--reference", "3"), 180),
            Part(
                "P2 airbench",
                (
                    python,
                    "bench/loss_overhead.py",
                    "--device",
                    "cuda",
                    "--steps",
                    "100",
                    "--model",
                    "airbench",
                )
                + ("--width", "64", "--batch-size", "1024", "--compile-genome"),
                50,
            ),
            Part(
                "P7 workers",
                (python, "bench/search_throughput.py", "--dataset", dataset, "--workers", "1", "2", "4", "8")
                + ("--seconds", "34", "--set", 'device="cuda"'),
                160,
            ),
            Part(
                "P5 compiled", (*trial, "--compile", "--seeds", "1", "--losses", "cross_entropy"), 150, True
            ),
        ]
        extra = [
            Part(
                "P5 CNN surrogate",
                (*trial, "--config", "", "--set", "batch_size=512")
                + ("--set", "learning_rate=0.006", "--seeds", "1"),
                120,
            ),
            Part("P2 CNN", (python, "bench/loss_overhead.py", "--device", "cuda", "--steps", "100"), 45),
            Part(
                "P1 trial throughput",
                (python, "bench/trial_throughput.py", "--device", "cuda")
                + ("--workers", "8", "--epochs", "4"),
                120,
            ),
        ]
    else:
        tryout = ("--set", "subset=4000", "--set", "epochs=2", "--seeds", "1")
        parts = [
            Part("P5 airbench", (*trial, *tryout, "--breakdown", "--profile", "2", "--reference", "1"), 600),
            Part(
                "P2 airbench",
                (python, "bench/loss_overhead.py", "--device", device, "--steps", "4", "--model", "airbench")
                + ("--width", "16", "--batch-size", "256"),
                150,
            ),
            Part(
                "P7 workers",
                (
                    python,
                    "bench/search_throughput.py",
                    "--dataset",
                    "digits",
                    "--config",
                    "studies/digits-demo.toml",
                )
                + ("--workers", "1", "2", "--seconds", "60", "--set", f'device="{device}"'),
                180,
            ),
        ]
        extra = [
            Part(
                "P5 CNN surrogate",
                (*trial, "--config", "", "--set", "batch_size=512")
                + ("--set", "learning_rate=0.006", *tryout),
                300,
            ),
            Part("P2 CNN", (python, "bench/loss_overhead.py", "--device", device, "--steps", "100"), 150),
            Part(
                "P1 trial throughput",
                (python, "bench/trial_throughput.py", "--device", device)
                + ("--workers", "8", "--epochs", "1"),
                300,
            ),
        ]
    extra = extra if everything else []
    budget = CUDA_BUDGET_S if device == "cuda" else sum(part.limit_s for part in parts)
    return Plan(parts + extra, budget + sum(part.limit_s for part in extra))


def describe_plan(run: Plan) -> Iterator[str]:
    for part in run.parts:
        limit = (
            f"what is left of the budget, at most {part.limit_s} s"
            if part.fills_budget
            else f"{part.limit_s} s"
        )
        yield f"{part.name}: limit {limit}"
        yield "    " + " ".join(part.command[1:])
    yield f"budget: {run.budget_s} s in all"


# -- the preflight ---------------------------------------------------------------------------------


def unpack_once(archive: Path, target: Path) -> Path:
    """``target`` holding ``archive`` unpacked: reused when an earlier unpack completed (it carries a
    marker); otherwise unpacked into a temporary folder beside it, marked, and renamed into place, so a
    killed unpack never leaves a folder that looks complete."""
    import shutil
    import tarfile

    if (target / COMPLETE_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        with tarfile.open(archive) as handle:
            handle.extractall(partial, filter="data")
        (partial / COMPLETE_MARKER).touch()
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)  # an unmarked folder: a partial unpack of an earlier run
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def data_root() -> Path:
    return Path(os.environ.get("OPTILOSS_DATA") or tempfile.gettempdir()).resolve()


def locate_data(given: str | None) -> Path:
    """The archive or folder to use, made absolute; :class:`PreflightError` when there is none."""
    if given:
        path = Path(given).expanduser().resolve()
        if not path.exists():
            raise PreflightError(
                f"no CIFAR-10 data at {path}: give the JPEG archive (cifar10-jpeg.tar.xz) or a folder "
                "holding train/ and test/"
            )
        return path
    for archive in DEFAULT_ARCHIVES:
        if archive.is_file():
            return archive
    raise PreflightError(
        "no CIFAR-10 data given and none at "
        + " or ".join(map(str, DEFAULT_ARCHIVES))
        + ": give the JPEG archive or a folder holding train/ and test/"
    )


def prepare_data(source: Path) -> Path:
    """The absolute folder with ``train/`` and ``test/``, unpacking an archive once; the folder is also
    reachable as ``$OPTILOSS_DATA/cifar10-jpeg``, where the CPU benchmarks look."""
    standard = data_root() / "cifar10-jpeg"
    if source.is_file():
        folder = unpack_once(source, standard)
    else:
        folder = source
        missing = [name for name in ("train", "test") if not (folder / name).is_dir()]
        if missing:
            raise PreflightError(
                f"{folder} has no {' and no '.join(m + '/' for m in missing)}: give the JPEG archive "
                "(cifar10-jpeg.tar.xz) or a folder holding train/ and test/"
            )
        if not (standard.exists() and standard.samefile(folder)):
            if standard.is_symlink():
                standard.unlink()
            if not standard.exists():
                standard.parent.mkdir(parents=True, exist_ok=True)
                standard.symlink_to(folder, target_is_directory=True)
    return folder


def check_imports(device: str) -> list[str]:
    """The modules the parts need that do not import (airbench too on CUDA)."""
    names = REQUIRED_MODULES + (("airbench",) if device == "cuda" else ())
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # an ImportError, or a wheel built for another torch
            missing.append(name)
    return missing


def versions(device: str) -> str:
    import torch

    line = f"python {sys.version.split()[0]}, torch {torch.__version__}"
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        line += (
            f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
            f"{properties.name} ({properties.total_memory / 2**30:.0f} GiB)"
        )
    return line


def preflight(device: str, given: str | None) -> tuple[Path, str]:
    """(the data folder, a line of versions), or :class:`PreflightError` naming what is missing."""
    source = locate_data(given)
    missing = check_imports(device)
    if missing:
        raise PreflightError(
            f"cannot import {', '.join(missing)}: install the carried wheels first "
            "(python3 -m pip install --no-index --no-deps --target /tmp/site .gpu/*.whl; "
            "export PYTHONPATH=/tmp/site:$PWD)"
        )
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PreflightError(
                f"torch {torch.__version__} sees no CUDA device: run on a GPU machine, or add --device cpu "
                "for the try-out"
            )
    return prepare_data(source), versions(device)


# -- running the parts -----------------------------------------------------------------------------


class Log:
    """Lines to the terminal and, with an output folder, to ``gpu.log``; results to ``results.jsonl``."""

    def __init__(self, out: Path | None) -> None:
        self.out = out
        self._log: IO[str] | None = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            path = out / "gpu.log"
            # a gpu.log there already has another writer (``| tee $OUT/gpu.log``): do not interleave
            self._log = open(path if not path.exists() else out / "gpu-run.log", "w", buffering=1)

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        if self._log is not None:
            self._log.write(line + "\n")

    def result(self, result: PartResult) -> None:
        if self.out is not None:
            with open(self.out / "results.jsonl", "a") as handle:
                handle.write(result.line() + "\n")
                handle.flush()
                os.fsync(handle.fileno())


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the part's process group, SIGKILL if it is still there 5 s later."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def run_part(
    part: Part, limit_s: float, log: Callable[[str], None], environment: dict[str, str]
) -> PartResult:
    """Run ``part`` in its own process group, its output line by line to ``log``, stopped after
    ``limit_s`` seconds; its figures read back from the file it appended them to."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl", delete=False) as figures_file:
        figures_path = figures_file.name
    started = time.monotonic()
    process = subprocess.Popen(
        part.command,
        cwd=ROOT,
        env={**environment, FIGURES_ENV: figures_path},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: [log(line.rstrip("\n")) for line in process.stdout], daemon=True)
    reader.start()
    try:
        status = "ok" if process.wait(timeout=limit_s) == 0 else "failed"
    except subprocess.TimeoutExpired:
        _stop(process)
        status = "timeout"
    reader.join(timeout=10)
    seconds = time.monotonic() - started
    figures: dict[str, Any] = {}
    with open(figures_path) as handle:
        for line in handle:
            if line.strip():
                figures.update(json.loads(line))
    os.unlink(figures_path)
    return PartResult(part.name, status, seconds, limit_s, process.returncode, figures)


def run_parts(run: Plan, log: Log, environment: dict[str, str]) -> list[PartResult]:
    """Each part in turn under its limit (a part that fills the budget gets what is left), each result
    written as soon as the part ends."""
    results = []
    started = time.monotonic()
    for part in run.parts:
        left = run.budget_s - (time.monotonic() - started)
        limit = min(part.limit_s, left) if part.fills_budget else part.limit_s
        if part.fills_budget and limit < MINIMUM_PART_S:
            result = PartResult(part.name, "skipped", 0.0, max(limit, 0.0))
            log(f"== {part.name}: skipped, {max(left, 0):.0f} s of the budget left")
        else:
            log(f"== {part.name} (limit {limit:.0f} s)")
            result = run_part(part, limit, log, environment)
            ending = {
                "ok": "ok",
                "failed": f"FAILED (exit status {result.exit_status})",
                "timeout": "STOPPED at its limit",
            }
            log(f"== {part.name}: {ending[result.status]} after {result.seconds:.1f} s; going on")
        log.result(result)
        results.append(result)
    return results


def summary(results: list[PartResult]) -> str:
    failed = [f"{r.part} ({r.status})" for r in results if r.status != "ok"]
    total = sum(r.seconds for r in results)
    if not failed:
        return f"== every part ran ({total:.0f} s)"
    return f"== {len(failed)} part(s) did not finish: {', '.join(failed)} ({total:.0f} s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu.sh", description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", help="the CIFAR-10 JPEG archive or an unpacked folder")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--plan", action="store_true", help="print the parts and their limits, run nothing")
    parser.add_argument("--all", action="store_true", help="add the CNN P5, P2 CNN and P1")
    parser.add_argument(
        "--out", type=Path, default=os.environ.get("OUT") or None, help="folder for gpu.log and results.jsonl"
    )
    args = parser.parse_args(argv)
    if args.plan:
        for line in describe_plan(plan(args.device, Path("<data folder>"), args.all)):
            print(line)
        return 0
    log = Log(args.out.resolve() if args.out else None)
    begun = time.monotonic()
    try:
        folder, versions_line = preflight(args.device, args.data)
    except PreflightError as error:
        log(f"gpu.sh: {error}")
        log.result(PartResult("preflight", "refused", time.monotonic() - begun, 0, 2, {"error": str(error)}))
        return 2
    log(f"preflight: {versions_line}; data {folder} ({time.monotonic() - begun:.1f} s)")
    log.result(
        PartResult(
            "preflight",
            "ok",
            time.monotonic() - begun,
            0,
            0,
            {"versions": versions_line, "data": str(folder)},
        )
    )
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "bench"), *filter(None, [environment.get("PYTHONPATH")])]
    )
    environment.update(PYTHONUNBUFFERED="1", OPTILOSS_DATA=str(data_root()))
    results = run_parts(plan(args.device, folder, args.all), log, environment)
    log(summary(results))
    return 0 if all(result.status == "ok" for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
