"""P2: time of a training step with a 5-node genome loss over the same step with F.cross_entropy.

    python bench/loss_overhead.py [--steps 60] [--model cnn|airbench] [--width 32] [--batch-size 128]
                                  [--compile-genome] [--device cpu|cuda]

Same surrogate, same real CIFAR-10 batches (from the shared JPEG archive), the
losses interleaved step by step so drift hits both. The genome is focal loss
written as a genome (all five nodes active). The step is the training loop's:
bf16 autocast and channels-last where :func:`bf16_pays_off` says so.
``--compile-genome`` adds a third contender, the genome wrapped in
``torch.compile`` (its pointwise nodes fused into one kernel forward and one
backward), and prints what compiling it cost: a search compiles once per
distinct genome, so that cost is paid by every trial. The last lines give
the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from optiloss.data import load_dataset
from optiloss.genome import BASELINE, screen, zoo
from optiloss.models import create_model
from optiloss.train import bf16_pays_off, to_float

from _shared import cifar10_jpeg_folder, report_figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", default="cnn", help="a surrogate: cnn or airbench")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--compile-genome", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = load_dataset(f"folder:{cifar10_jpeg_folder()}", progress=False)
    images, labels = data.train_images[:10_000].to(device), data.train_labels[:10_000].to(device)
    genome = screen(zoo()["focal"]).genome
    assert len(genome.active_nodes) == 5
    losses = {
        BASELINE: lambda logits, index: F.cross_entropy(logits.float(), labels[index]),
        "genome": lambda logits, index: genome(
            F.one_hot(labels[index], 10).float(), torch.softmax(logits.float(), 1)
        ),
    }
    torch.manual_seed(0)
    model = create_model(args.model, 10, width=args.width).to(device)
    if args.compile_genome:
        compiled = torch.compile(genome, dynamic=False)
        losses["genome_compiled"] = lambda logits, index: compiled(
            F.one_hot(labels[index], 10).float(), torch.softmax(logits.float(), 1)
        )
    fast = bf16_pays_off(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times: dict[str, list[float]] = {name: [] for name in losses}

    def step(name: str, index: torch.Tensor) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            batch = to_float(images[index])
            logits = model(batch.contiguous(memory_format=torch.channels_last) if fast else batch)
        loss = losses[name](logits, index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    compile_seconds = None
    for warm_up in range(5):
        for name in losses:
            seconds = step(name, torch.arange(args.batch_size, device=device))
            if name == "genome_compiled" and warm_up == 0:
                compile_seconds = seconds
    for number in range(args.steps):
        index = torch.randint(0, len(images), (args.batch_size,), device=device)
        for name in losses if number % 2 == 0 else reversed(list(losses)):
            times[name].append(step(name, index))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(
            f"{name:16s} median {1000 * value:.2f} ms per step ({args.model} width {args.width}, "
            f"{args.batch_size} images, {device}, bf16 {fast})"
        )
    if compile_seconds is not None:
        print(f"compiling the genome (first step): {compile_seconds:.2f} s, paid once per distinct genome")
    for name in medians:
        if name != BASELINE:
            print(f"{name} step / cross-entropy step: ratio {medians[name] / medians[BASELINE]:.3f}")
    report_figures(
        step_ms={name: 1000 * value for name, value in medians.items()},
        ratio={name: medians[name] / medians[BASELINE] for name in medians if name != BASELINE},
        compile_s=compile_seconds,
    )


if __name__ == "__main__":
    main()
