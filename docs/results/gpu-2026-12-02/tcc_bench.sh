#!/usr/bin/env bash
# GPU call D (2026-12-03): TCC training throughput alone on the GPU (call B's table did not come back):
# the paper's 20 frames x 2 context frames, ResNet-50, batch 16 videos, 112 px crops from 128 px warps of
# the 28 training pitchers, decoded-frame cache on.   bash docs/results/gpu-2026-12-02/tcc_bench.sh
set -u
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
P=${PITCH:-/tmp/data/tcc_pitch/train}
R=${RESULTS:-/tmp/tccb}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
ls "$P"/pitch_[0-3]?.mp4 > "$R/train.txt"
python -m train.data warp "$R/train.txt" "$R/train" --copies 1 --frames 80 --source-frames 121 \
  --short-side 128 --seed 0 > "$OUT/warp.log" 2>&1
python bench/pipeline.py --method tcc --data "$R/train" --batch 16 --mode fast ${BENCH:---steps 40 --warmup 5} \
  --json "$OUT/pipeline_tcc_fast.json" data.short_side=128 data.crop=112 data.frame_cache_gib=4 data.threads=12 \
  > "$OUT/pipeline_tcc_fast.txt" 2>&1
tail -15 "$OUT/pipeline_tcc_fast.txt"
