"""P5: the default CIFAR-10 surrogate trial on a GPU: its time and cross-entropy's validation accuracy.

    python bench/gpu_trial.py --dataset folder:/path/to/cifar10-jpeg [--compile] [--set KEY=VALUE ...]

The default search config (studies' defaults) on the full 40,000/10,000
train/validation split, trained twice with cross-entropy: the first run warms
up kernels (and compiles with ``--compile``), the second is timed. Goal: at
most 5 s per trial with at least 90 % validation accuracy. ``--set`` overrides
search-config keys (``batch_size=512``, ``learning_rate=0.004``, ``epochs=8``)
to try other defaults in the same run.
"""

from __future__ import annotations

import argparse
import time
import tomllib

import torch

from optiloss.evaluate import LossEvaluator, load_data
from optiloss.genome import screen, zoo
from optiloss.search import make_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a search-config key (a TOML value)")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try the script out")
    args = parser.parse_args()
    device = torch.device(args.device)
    overrides = tomllib.loads("\n".join(args.set))
    config = make_config({"dataset": args.dataset, "device": args.device, "compile": args.compile,
                          **overrides})
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
    print(f"{name}: default surrogate trial (epochs {config.epochs}, width "
          f"{config.model_width}, batch {config.batch_size}, lr {config.learning_rate}, "
          f"compile {args.compile}) on {len(data.train_labels)} images")
    print(f"trial {total:.2f} s (training {result.training_seconds:.2f} s, evaluation "
          f"{result.evaluation_seconds:.2f} s), cross-entropy validation accuracy {result.accuracy:.4f}, "
          f"robustness {result.robustness:.4f}")


if __name__ == "__main__":
    main()
