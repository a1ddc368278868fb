# Sourced by every launch script: NCCL, threading and DeepSpeed settings live here, in one place.
# The DeepSpeed launcher forwards variables starting with NCCL, MLFLOW and PYTHON to other nodes;
# write_deepspeed_env below adds the rest through .deepspeed_env (read by the pdsh launcher).

export PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}            # per rank; DALI and torch bring their own pools
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}          # NVLink multicast off (shared hosts)
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}  # a dead rank aborts, not hangs
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # "9.0a" breaks DeepSpeed's op builder
# export NCCL_SOCKET_IFNAME=eth0                         # pin the interface on multi-homed nodes
# export NCCL_IB_HCA=mlx5                                # InfiniBand adapters

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export REPO
if [ -x "$REPO/.venv/bin/deepspeed" ]; then export PATH="$REPO/.venv/bin:$PATH"; fi

# No GPU: DeepSpeed on the CPU over gloo.
if ! python3 -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  export DS_ACCELERATOR=cpu
fi

write_deepspeed_env() {  # forward the variables above to pdsh-launched nodes
  env | grep -E '^(OMP_NUM_THREADS|TORCH_NCCL_ASYNC_ERROR_HANDLING|TORCH_CUDA_ARCH_LIST|DS_ACCELERATOR)=' \
    > "$REPO/.deepspeed_env"
}
