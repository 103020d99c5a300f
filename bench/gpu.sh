#!/usr/bin/env bash
# P5 (the studies/cifar10.toml trial for cross-entropy and label smoothing over 3 seeds, beside
# airbench94 timed the same way when the airbench package is installed), a breakdown of one epoch,
# the GPU side of P1/P2, and P7 (complete trials per hour with 1, 2, 4, 8 workers on the GPU), as one
# prepared script for a GPU machine (about 8 minutes).
# Usage: bash bench/gpu.sh [--device cpu] [CIFAR10_JPEG_ARCHIVE_OR_FOLDER]
#   --device cpu: a try-out of every step on a CPU (P5 on a 4,000-image subset, 2 epochs, 1 seed;
#   no compile; P7 on digits with 1 and 2 workers).
# A part that fails prints its error and the script goes on; the last line names the failed parts.
# Where optuna, kornia and SQLAlchemy are missing, install carried wheels first (docs/benchmarks.md).
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/_parts.sh
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
  tryout=(--device "$device" --set subset=4000 --set epochs=2 --seeds 1)
fi
part "P5 airbench trial, epoch breakdown, airbench94 reference" \
  python3 bench/gpu_trial.py --dataset "folder:$folder" --breakdown --reference 3 "${tryout[@]}"
if [ "$device" = cuda ]; then
  part "P5 compiled" python3 bench/gpu_trial.py --dataset "folder:$folder" --compile --seeds 1
fi
part "P5 CNN surrogate" python3 bench/gpu_trial.py --dataset "folder:$folder" --config "" \
  --set batch_size=512 --set learning_rate=0.006 --seeds 1 "${tryout[@]}"
part "P2 CNN" python3 bench/loss_overhead.py --device "$device" --steps 100
if [ "$device" = cuda ]; then
  part "P2 airbench" python3 bench/loss_overhead.py --device cuda --steps 100 --model airbench --width 64 \
    --batch-size 1024 --compile-genome
else
  part "P2 airbench" python3 bench/loss_overhead.py --device "$device" --steps 4 --model airbench --width 16 \
    --batch-size 256
fi
part "P1 trial throughput" python3 bench/trial_throughput.py --device "$device" --workers 8 \
  --epochs "$([ "$device" = cuda ] && echo 4 || echo 1)"
if [ "$device" = cuda ]; then
  part "P7 workers" python3 bench/search_throughput.py --dataset "folder:$folder" --workers 1 2 4 8 --trials 24
else
  part "P7 workers" python3 bench/search_throughput.py --dataset digits --config studies/digits-demo.toml \
    --workers 1 2 --trials 8 --set "device=\"$device\""
fi
parts_summary
