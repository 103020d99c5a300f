#!/usr/bin/env bash
# P5 (the studies/cifar10.toml trial, beside airbench94 when the airbench package is installed) and the
# GPU side of P1/P2, as one prepared script for a GPU machine (about 6 minutes).
# Usage: bash bench/gpu.sh [--device cpu] [CIFAR10_JPEG_ARCHIVE_OR_FOLDER]
#   --device cpu: a try-out of every step on a CPU (P5 on a 4,000-image subset, 2 epochs; no compile).
# Where optuna, kornia and SQLAlchemy are missing, install carried wheels first (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
device=cuda
if [ "${1:-}" = "--device" ]; then device=$2; shift 2; fi
source bench/_cifar_folder.sh "${1:-}"
export PYTHONPATH=$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OPTILOSS_DATA=${OPTILOSS_DATA:-${TMPDIR:-/tmp}}
ln -sfn "$folder" "$OPTILOSS_DATA/cifar10-jpeg" 2>/dev/null || true
if [ "$device" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  tryout=()
else
  tryout=(--device "$device" --set subset=4000 --set epochs=2)
fi
python3 bench/gpu_trial.py --dataset "folder:$folder" --reference 3 "${tryout[@]}"
[ "$device" = cuda ] && python3 bench/gpu_trial.py --dataset "folder:$folder" --compile
python3 bench/gpu_trial.py --dataset "folder:$folder" --set 'model="cnn"' --set batch_size=512 \
  --set learning_rate=0.006 "${tryout[@]}"
python3 bench/loss_overhead.py --device "$device" --steps 100
python3 bench/trial_throughput.py --device "$device" --workers 8 --epochs "$([ "$device" = cuda ] && echo 4 || echo 1)"
