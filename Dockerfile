# cyclecorr training image: CUDA 13, pinned torch / DALI / DeepSpeed / MLflow (requirements/pins.txt,
# the same pins `make` installs), the project installed, `train/run.py` as the command.
#   docker build -t cyclecorr .
#   docker run --gpus all --ipc=host -v $PWD/runs:/workspace/cyclecorr/runs cyclecorr \
#       deepspeed --num_gpus 8 train/run.py --config configs/cycletime.yaml data.root=/data/vlog
# devel: nvcc for DeepSpeed ops built on first use; torch wheels bring their own CUDA runtime and cuDNN.
FROM nvidia/cuda:13.0.0-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TORCH_CUDA_ARCH_LIST="8.0;9.0" \
    NCCL_NVLS_ENABLE=0 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# pdsh + ssh: DeepSpeed's multi-node launcher; git: the run's git sha in MLflow.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential ninja-build \
        git pdsh openssh-client openssh-server ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /workspace/cyclecorr

# The same three install steps as the Makefile's, with the same constraints file.
COPY requirements/pins.txt requirements/pins.txt
RUN python3 -m venv /opt/venv \
 && pip install --upgrade pip \
 && pip install -c requirements/pins.txt torch torchvision
COPY pyproject.toml README.md ./
COPY core core
COPY tcc tcc
COPY cycletime cycletime
COPY train train
COPY bench bench
RUN pip install -c requirements/pins.txt -e '.[dev]'
COPY configs configs
COPY launch launch
COPY tests tests

CMD ["python", "train/run.py", "--config", "configs/smoke/cycletime.yaml"]
