#!/usr/bin/env bash
# P5 (the studies/cifar10.toml trial, beside airbench94 when the airbench package is installed), the
# GPU side of P1/P2, and P7 (complete trials per hour with 1, 2, 4, 8 workers on the GPU), as one
# prepared script for a GPU machine (about 8 minutes).
# Usage: bash bench/gpu.sh [--device cpu] [CIFAR10_JPEG_ARCHIVE_OR_FOLDER]
#   --device cpu: a try-out of every step on a CPU (P5 on a 4,000-image subset, 2 epochs; no compile;
#   P7 on digits with 1 and 2 workers).
# Where optuna, kornia and SQLAlchemy are missing, install carried wheels first (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
device=cuda
if [ "${1:-}" = "--device" ]; then device=$2; shift 2; fi
source bench/_cifar_folder.sh "${1:-}"
export PYTHONPATH=$PWD:$PWD/bench${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OPTILOSS_DATA=${OPTILOSS_DATA:-${TMPDIR:-/tmp}}
# the CPU benches find the folder at $OPTILOSS_DATA/cifar10-jpeg (unless it already is that folder)
[ "$folder" -ef "$OPTILOSS_DATA/cifar10-jpeg" ] || ln -sfn "$folder" "$OPTILOSS_DATA/cifar10-jpeg" 2>/dev/null || true
if [ "$device" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  tryout=()
else
  tryout=(--device "$device" --set subset=4000 --set epochs=2)
fi
python3 bench/gpu_trial.py --dataset "folder:$folder" --reference 3 "${tryout[@]}"
[ "$device" = cuda ] && python3 bench/gpu_trial.py --dataset "folder:$folder" --compile
python3 bench/gpu_trial.py --dataset "folder:$folder" --config "" --set batch_size=512 \
  --set learning_rate=0.006 "${tryout[@]}"
python3 bench/loss_overhead.py --device "$device" --steps 100
if [ "$device" = cuda ]; then
  python3 bench/loss_overhead.py --device cuda --steps 100 --model airbench --width 64 --batch-size 1024 --compile-genome
else
  python3 bench/loss_overhead.py --device "$device" --steps 4 --model airbench --width 16 --batch-size 256
fi
python3 bench/trial_throughput.py --device "$device" --workers 8 --epochs "$([ "$device" = cuda ] && echo 4 || echo 1)"
if [ "$device" = cuda ]; then
  python3 bench/search_throughput.py --dataset "folder:$folder" --workers 1 2 4 8 --trials 24
else
  python3 bench/search_throughput.py --dataset digits --config studies/digits-demo.toml --workers 1 2 --trials 8 \
    --set "device=\"$device\""
fi
