"""The GPU benchmark script on a CPU: its parts go on after a failure, and the airbench94 reference
runs as far as a machine without CUDA allows (everything but airbench's training on the GPU)."""

import subprocess
import sys

import pytest
import torch

from optiloss.data import load_dataset

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

from airbench_reference import airbench_loaders, timed_runs  # noqa: E402


def test_a_failing_part_of_a_gpu_script_leaves_the_rest_running(tmp_path):
    script = tmp_path / "parts.sh"
    script.write_text(
        f'set -uo pipefail\nsource "{ROOT}/bench/_parts.sh"\n'
        'part first echo "first ran"\n'
        'part broken python3 -c "raise SystemExit(3)"\n'
        'part last echo "last ran"\n'
        "parts_summary\n"
    )
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "first ran" in lines and "last ran" in lines
    assert "== broken FAILED (exit status 3); going on with the next part" in lines
    assert lines[-1] == "== 1 part(s) failed: broken"


def test_the_airbench_reference_reads_the_p5_split_through_airbenchs_own_loaders(cifar10_sample, tmp_path):
    airbench = pytest.importorskip("airbench")
    data = load_dataset(f"folder:{cifar10_sample}", validation_fraction=0.25, progress=False)
    train_loader, test_loader = airbench_loaders(airbench, data, tmp_path, device="cpu", batch_size=50)
    expected = data.train_images.float() / 255
    assert len(train_loader) == len(data.train_labels) // 50
    batches = list(train_loader)  # epoch 0: flipped once at random, reflect-padded, translated by <= 2 px
    images = torch.cat([batch for batch, _ in batches])
    labels = torch.cat([label for _, label in batches])
    assert images.shape == (450, 3, 32, 32) and images.dtype == torch.float16
    assert sorted(labels.tolist()) == sorted(data.train_labels.tolist())
    assert torch.allclose(test_loader.images.float(), data.val_images.float() / 255, atol=1e-3)
    assert torch.equal(test_loader.labels, data.val_labels)
    # the normalised images are the ones of the split (class means survive the translations)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    restored = images.float() * std + mean
    assert abs(restored.mean().item() - expected.mean().item()) < 0.01


def test_timed_runs_warm_up_once_then_time_each_run_between_synchronisations():
    calls, synchronised = [], []
    seconds, accuracies = timed_runs(
        lambda run: calls.append(run) or 0.5 + run / 10, 3, lambda: synchronised.append(len(calls))
    )
    assert calls == [-1, 1, 2, 3] and accuracies == [0.6, 0.7, 0.8]
    assert len(seconds) == 3 and all(second >= 0 for second in seconds)
    assert synchronised == [1, 2, 2, 3, 3, 4]
