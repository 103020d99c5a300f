"""P5: the default CIFAR-10 trial on a GPU: its time and cross-entropy's validation accuracy.

    python bench/gpu_trial.py --dataset folder:/path/to/cifar10-jpeg [--config TOML] [--compile]
                              [--set KEY=VALUE ...] [--reference RUNS] [--device cpu]

The trial of ``--config`` (default ``studies/cifar10.toml``: the airbench
surrogate) on the 40,000/10,000 train/validation split, trained twice with
cross-entropy: the first run warms up kernels (and compiles with
``--compile``), the second is timed, scoring included (the validation images
and their ten corrupted copies). Goal: at most 3 s with at least 89.5 %
validation accuracy. ``--set`` overrides config keys (``model="cnn"``,
``batch_size=512``, ``epochs=8``). ``--reference RUNS`` also trains airbench94
(the ``airbench`` package, when installed) on the same split and prints the
ratio. ``--device cpu`` tries the script out on a CPU.
"""

from __future__ import annotations

import argparse
import time
import tomllib

import torch

from optiloss.evaluate import LossEvaluator, load_data
from optiloss.genome import screen, zoo
from optiloss.settings import SearchConfig

from airbench_reference import airbench_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", default="studies/cifar10.toml",
                        help='a study TOML; "" for the search defaults (the CNN surrogate)')
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--reference", type=int, default=0, metavar="RUNS",
                        help="also time airbench94 on the same split (RUNS timed runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a search-config key (a TOML value)")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try the script out")
    args = parser.parse_args()
    device = torch.device(args.device)
    overrides = tomllib.loads("\n".join(args.set))
    config = SearchConfig.load(args.config or None, {"dataset": args.dataset, "device": args.device,
                                             "compile": args.compile, **overrides})
    data = load_data(config, progress=False).to(device)
    evaluator = LossEvaluator.for_search(config, data, device)
    loss = screen(zoo()["cross_entropy"]).genome
    augmentation = evaluator.augmentation("base")
    evaluator.evaluate(loss, augmentation, seed=0)  # warm-up: cuDNN tuning, compilation
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    started = time.perf_counter()
    result = evaluator.evaluate(loss, augmentation, seed=1)
    synchronize()
    total = time.perf_counter() - started
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{name}: {args.config or 'the default'} trial ({config.model}, epochs {config.epochs}, width "
          f"{config.model_width}, batch {config.batch_size}, lr {config.learning_rate}, "
          f"compile {args.compile}) on {len(data.train_labels)} images, scored on {len(data.val_labels)} "
          f"validation images and {len(evaluator.corrupted)} corrupted copies")
    print(f"trial {total:.2f} s (training {result.training_seconds:.2f} s, evaluation "
          f"{result.evaluation_seconds:.2f} s), cross-entropy validation accuracy {result.accuracy:.4f}, "
          f"robustness {result.robustness:.4f}")
    if args.reference:
        reference = airbench_reference(config, args.reference)
        if reference is not None:
            print(f"optiloss trial / airbench94: ratio {total / reference[0]:.2f} in seconds; accuracy "
                  f"{100 * (result.accuracy - reference[1]):+.1f} points")


if __name__ == "__main__":
    main()
