#!/usr/bin/env bash
# One GPU call that measures (bench/gpu_run.py): a preflight that refuses within seconds, then P5
# airbench (breakdown, profile, airbench94 reference), P2 airbench, P7 and P5 compiled, each under its
# own time limit, 8 minutes in all; --all adds the CNN P5, P2 CNN and P1; --device cpu is the try-out;
# --plan prints the parts and limits. With $OUT (or --out DIR) set, DIR gets gpu.log and results.jsonl.
# Usage: bash bench/gpu.sh [--device cuda|cpu] [--plan] [--all] [--out DIR] [CIFAR10_JPEG_ARCHIVE_OR_FOLDER]
# Where optuna, kornia and SQLAlchemy are missing, install carried wheels first (docs/benchmarks.md).
set -uo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/gpu_run.py "$@"
