#!/usr/bin/env bash
# All GPUs of this machine: launch/multi_gpu.sh NUM_GPUS configs/cycletime.yaml [key=value ...]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
gpus=$1; shift
exec deepspeed --num_gpus "$gpus" train/run.py --config "$@"
