#!/usr/bin/env bash
# Several nodes from one command over passwordless ssh (pdsh), every node seeing this repository
# at the same path: launch/multi_node.sh HOSTFILE configs/cycletime.yaml [key=value ...]
# HOSTFILE lines: "<host> slots=<gpus>" (see launch/hostfile.example).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
hostfile=$1; shift
write_deepspeed_env
nodes=$(grep -cvE '^\s*(#|$)' "$hostfile")
exec deepspeed --hostfile "$hostfile" --num_nodes "$nodes" --launcher pdsh train/run.py --config "$@"
