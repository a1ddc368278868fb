#!/usr/bin/env bash
# One GPU (or the CPU): launch/single_gpu.sh configs/smoke/cycletime.yaml [key=value ...]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
exec deepspeed --num_gpus 1 train/run.py --config "$@"
