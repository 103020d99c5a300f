# Sourced by the GPU scripts: sets $folder to the absolute CIFAR-10 JPEG folder, given the archive or
# the folder (bench/gpu_run.py's preflight: the archive unpacked once, through a temporary folder).
folder=$("${PYTHON:-python3}" -c '
import sys
sys.path.insert(0, "bench")
from gpu_run import PreflightError, locate_data, prepare_data
try:
    print(prepare_data(locate_data(sys.argv[1] or None)))
except PreflightError as error:
    sys.exit(f"{sys.argv[0]}: {error}")
' "${1:-}") || exit 2
