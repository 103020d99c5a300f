#!/usr/bin/env bash
# GPU check for transfer: one WRN-28-10 epoch on the full CIFAR-10 per zoo loss, with epoch times.
# Usage: bash bench/gpu_transfer.sh [CIFAR10_JPEG_ARCHIVE_OR_FOLDER]
# On a machine without optuna/kornia, carry wheels and install them first (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/_cifar_folder.sh "${1:-}"
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 python3 bench/gpu_transfer.py --dataset "folder:$folder" --model wrn-28-10 --epochs 1
