#!/usr/bin/env bash
# N simulated nodes on this machine, each its own DeepSpeed launcher (--no_ssh), as on a real cluster.
#   launch/simulate_nodes.sh NODES configs/smoke/cycletime.yaml [key=value ...]
# CPU: each node runs PROCS_PER_NODE (default 1) processes over gloo. GPUs: node i gets GPU i
# (one GPU per simulated node), so NODES must not exceed the GPU count.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
nodes=$1; shift
procs=${PROCS_PER_NODE:-1}
port=${MASTER_PORT:-29600}
hostfile=$(mktemp)
include=()
slots=$procs
if [ "${DS_ACCELERATOR:-}" != cpu ]; then
  # One machine: every simulated node lists all the GPUs, --include gives node i GPU i.
  slots=$nodes
  spec=$(for ((i = 0; i < nodes; i++)); do printf 'node%d:%d@' "$i" "$i"; done)
  include=(--include "${spec%@}")
fi
for ((i = 0; i < nodes; i++)); do echo "node$i slots=$slots" >> "$hostfile"; done
pids=()
for ((i = 0; i < nodes; i++)); do
  deepspeed --hostfile "$hostfile" "${include[@]}" --no_ssh --node_rank "$i" --master_addr 127.0.0.1 \
    --master_port "$port" train/run.py --config "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
rm -f "$hostfile"
exit "$status"
