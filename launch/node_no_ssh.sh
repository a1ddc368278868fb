#!/usr/bin/env bash
# One node of a multi-node job without ssh: run this on every node, each with its own NODE_RANK.
#   launch/node_no_ssh.sh HOSTFILE NODE_RANK MASTER_ADDR configs/cycletime.yaml [key=value ...]
# MASTER_ADDR is node 0's address; MASTER_PORT (default 29500) must be free there.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
hostfile=$1 node_rank=$2 master=$3; shift 3
exec deepspeed --hostfile "$hostfile" --no_ssh --node_rank "$node_rank" --master_addr "$master" \
  --master_port "${MASTER_PORT:-29500}" train/run.py --config "$@"
