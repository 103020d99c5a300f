"""The experiment's report page: ``storage/reports/<experiment>/index.html``, one self-contained file.

Everything on it is read from the studies (the search studies, the recheck and matrix ledgers, the
transfer studies), so the page of a partial run shows what exists and says what is missing. The
figures are inline SVG drawn by matplotlib with real text (searchable, no fonts fetched); the page
loads no script, style sheet or font from anywhere, so it opens from the file system offline.

This module only assembles: the sections come from :mod:`optiloss.report.sections` (and the
ablation's from :func:`optiloss.ablate.read_ablation`); it adds the versions, the device and the
storage, and renders the Jinja2 template ``templates/experiment.html`` (autoescaped).
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

import jinja2

from optiloss.errors import OptilossError
from optiloss.experiment import Experiment, StagePlan, plan, reading_storage
from optiloss.report.sections import augmentation_section, matrix_section, transfer_section
from optiloss.storage import REPORTS_DIR, mask_url, resolve_storage_url

PAGE = "index.html"
_PACKAGES = ("optiloss", "torch", "torchvision", "optuna", "kornia", "timm", "numpy", "scipy")


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _device(experiment: Experiment) -> str:
    import torch

    from optiloss.devices import resolve_device

    try:
        device = resolve_device(experiment.search.device)
    except OptilossError:
        return f"{experiment.search.device} (not available on the machine that wrote this page)"
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({model or platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_experiment_page(
    experiment: Experiment,
    storage_url: str | None = None,
    output: str | Path = REPORTS_DIR,
    plans: list[StagePlan] | None = None,
) -> Path:
    """Write ``{output}/{experiment.name}/index.html`` from what the storage holds; returns its path."""
    storage = reading_storage(experiment, storage_url)
    plans = plans if plans is not None else plan(experiment, storage=storage)
    transfers = [(stage.name, experiment.transfer_runs(stage)) for stage in experiment.transfers]
    sections = [
        augmentation_section(storage, experiment, augmentation, transfers)
        for augmentation in experiment.augmentations
    ]
    matrix, matrix_svg = matrix_section(storage, experiment)
    from optiloss.ablate import read_ablation  # the [ablation] stage's section (issue 35)

    ablations = [
        read_ablation(storage, name, experiment.ablation_ledger(augmentation))
        for augmentation, name in experiment.study_names().items()
    ]
    url = mask_url(resolve_storage_url(storage_url))
    template = jinja2.Environment(
        loader=jinja2.PackageLoader("optiloss.report", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
    ).get_template("experiment.html")
    html = template.render(
        experiment=experiment,
        plans=plans,
        sections=sections,
        matrix=matrix,
        matrix_rows=matrix.rows() if matrix else [],
        matrix_svg=matrix_svg,
        ablations=[ablation for ablation in ablations if ablation is not None],
        transfers=[
            transfer_section(storage, name, runs, experiment.study_names()) for name, runs in transfers
        ],
        versions=_versions(),
        device=_device(experiment),
        storage=url,
        dashboard=f"optiloss dashboard --storage {url}",
        optuna_dashboard=f"optuna-dashboard {url}",
    )
    folder = Path(output) / experiment.name
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / PAGE
    page.write_text(html)
    return page
