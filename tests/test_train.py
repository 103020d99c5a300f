"""The training loop's precision switch on the real digits set."""

from pathlib import Path

import pytest
import torch

from optiloss.augment import build_augmentation
from optiloss.data import load_dataset
from optiloss.genome import screen, zoo
from optiloss.models import create_model
from optiloss.train import TrainSettings, bf16_pays_off, train


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux's /proc/cpuinfo")
def test_bf16_pays_off_on_cpus_with_native_bf16_only():
    assert bf16_pays_off(torch.device("cpu")) == bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    assert bf16_pays_off(torch.device("cuda"))
    assert not bf16_pays_off(torch.device("meta"))


@pytest.mark.parametrize("mixed_precision", [True, False])
def test_the_model_runs_in_bf16_only_when_mixed_precision_is_on_and_pays(mixed_precision):
    data = load_dataset("digits")
    model = create_model("surrogate", 10, width=8)
    seen = []
    model.head.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    cross_entropy = screen(zoo()["cross_entropy"]).genome
    result = train(
        model,
        data.train_images,
        data.train_labels,
        cross_entropy,
        build_augmentation("base", (8, 8), 10),
        TrainSettings(epochs=4, mixed_precision=mixed_precision),
    )
    expected = torch.bfloat16 if mixed_precision and bf16_pays_off(torch.device("cpu")) else torch.float32
    assert seen and set(seen) == {expected}
    assert result.diverged is None and result.history[-1]["train_accuracy"] > 0.4  # chance is 0.1


def test_a_deterministic_run_leaves_torch_global_flags_as_it_found_them():
    data = load_dataset("digits")
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.get_float32_matmul_precision(),
    )
    assert before[0] is False
    train(
        create_model("surrogate", 10, width=4),
        data.train_images,
        data.train_labels,
        screen(zoo()["cross_entropy"]).genome,
        build_augmentation("base", (8, 8), 10),
        TrainSettings(epochs=1, deterministic=True),
    )
    assert (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.get_float32_matmul_precision(),
    ) == before


@pytest.mark.slow
def test_the_layers_import_only_downwards():
    """search, transfer, matrix and recheck do not reach into one another, and nothing below the
    report imports it (checked in a fresh interpreter, where sys.modules shows what an import pulled in)."""
    import subprocess
    import sys

    probes = {
        "optiloss.search": (
            "optiloss.report",
            "optiloss.transfer",
            "optiloss.matrix",
            "optiloss.recheck",
            "optiloss.evaluate",
        ),
        "optiloss.transfer": (
            "optiloss.report",
            "optiloss.search",
            "optiloss.matrix",
            "optiloss.recheck",
            "optiloss.evaluate",
        ),
        "optiloss.matrix": (
            "optiloss.report",
            "optiloss.search",
            "optiloss.transfer",
            "optiloss.recheck",
            "optiloss.evaluate",
        ),
        "optiloss.recheck": (
            "optiloss.report",
            "optiloss.search",
            "optiloss.transfer",
            "optiloss.matrix",
            "optiloss.evaluate",
        ),
        "optiloss.evaluate": (
            "optiloss.report",
            "optiloss.search",
            "optiloss.transfer",
            "optiloss.matrix",
            "optiloss.recheck",
        ),
        "optiloss.tune": (
            "optiloss.report",
            "optiloss.search",
            "optiloss.transfer",
            "optiloss.matrix",
            "optiloss.recheck",
        ),
        "optiloss.ablate": (
            "optiloss.report",
            "optiloss.search",
            "optiloss.transfer",
            "optiloss.matrix",
            "optiloss.recheck",
            "optiloss.evaluate",
        ),
        "optiloss.ledger": ("optiloss.report", "optiloss.search", "optiloss.transfer", "optiloss.studies"),
        "optiloss.experiment": ("optiloss.report", "optiloss.cli"),
        "optiloss.studies": ("optiloss.report", "optiloss.search", "optiloss.evaluate", "optiloss.scoring"),
        "optiloss.scoring": ("optiloss.report", "optiloss.search", "optiloss.studies", "optiloss.liveness"),
        "optiloss.liveness": ("optiloss.report", "optiloss.search", "optiloss.scoring", "optiloss.studies"),
        "optiloss.train": ("optiloss.models", "optiloss.augment", "optiloss.scoring", "optiloss.settings"),
    }
    # one fresh interpreter per probe, all started at once: each import is single-threaded
    running = {}
    for module, forbidden in probes.items():
        code = (
            f"import sys, {module}; "
            "print(sorted(m for m in sys.modules "
            f"if m.split('.')[:2] in {[f.split('.') for f in forbidden]}))"
        )
        running[module] = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    for module, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        assert out.strip() == "[]", f"{module} imports {out.strip()}"
