#!/usr/bin/env bash
# P5 and the GPU side of P1/P2, as one prepared script for a GPU machine (about 5 minutes).
# Usage: bash bench/gpu.sh [CIFAR10_JPEG_ARCHIVE_OR_FOLDER]
# Where optuna, kornia and SQLAlchemy are missing, install carried wheels first (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/_cifar_folder.sh "${1:-}"
export PYTHONPATH=$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OPTILOSS_DATA=${OPTILOSS_DATA:-${TMPDIR:-/tmp}}
ln -sfn "$folder" "$OPTILOSS_DATA/cifar10-jpeg" 2>/dev/null || true
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 bench/gpu_trial.py --dataset "folder:$folder"
python3 bench/gpu_trial.py --dataset "folder:$folder" --compile
python3 bench/gpu_trial.py --dataset "folder:$folder" --set batch_size=512 --set learning_rate=0.006
python3 bench/loss_overhead.py --device cuda --steps 100
python3 bench/trial_throughput.py --device cuda --workers 8 --epochs 4
