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


@pytest.mark.parametrize("fast", [True, False])
def test_the_model_runs_in_bf16_only_when_fast_and_it_pays(fast):
    data = load_dataset("digits")
    model = create_model("surrogate", 10, width=8)
    seen = []
    model.head.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    cross_entropy = screen(zoo()["cross_entropy"]).genome
    result = train(model, data.train_images, data.train_labels, cross_entropy, build_augmentation("base", (8, 8), 10),
                   TrainSettings(epochs=4, fast=fast))
    expected = torch.bfloat16 if fast and bf16_pays_off(torch.device("cpu")) else torch.float32
    assert seen and set(seen) == {expected}
    assert result.diverged is None and result.history[-1]["train_accuracy"] > 0.4  # chance is 0.1
