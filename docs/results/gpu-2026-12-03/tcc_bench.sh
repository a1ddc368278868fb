#!/usr/bin/env bash
# GPU call (written 2026-12-03, run 2026-12-04): TCC training throughput alone on one GPU at the paper's 20 frames x 2 context
# frames, ResNet-50, batch 16 videos, decoded-frame cache on: 112 px crops (128 px warps) with the default
# prefetch and with a deeper queue, and the paper's 224 px crops (256 px warps); then decode threads and
# queue depth varied (on 2026-12-04 these three ran in a second call on the same warps).
#   bash docs/results/gpu-2026-12-03/tcc_bench.sh      (OUT: results; BENCH: bench/pipeline.py step counts)
set -u
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
P=${PITCH:-/tmp/data/tcc_pitch/train}
R=${RESULTS:-/tmp/tccb}
OUT=${OUT:-$R/out}
read -r -a bench <<< "${BENCH:---steps 150 --warmup 30}"
mkdir -p "$R" "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
ls "$P"/pitch_[0-3]?.mp4 > "$R/train.txt"
for side in 128 256; do
  python -m train.data warp "$R/train.txt" "$R/train$side" --copies 1 --frames 80 --source-frames 121 \
    --short-side $side --seed 0 > "$R/warp$side.log" 2>&1 &
done
wait
b() {  # name, short side, crop, overrides...
  local name=$1 side=$2 crop=$3
  shift 3
  python bench/pipeline.py --method tcc --data "$R/train$side" --batch 16 --mode fast "${bench[@]}" \
    --json "$OUT/$name.json" data.short_side=$side data.crop=$crop data.frame_cache_gib=8 "$@" \
    > "$OUT/$name.txt" 2>&1
  echo "== $name"
  tail -6 "$OUT/$name.txt" | grep -v Warning
}
b px112_prefetch2 128 112 data.threads=12
b px112_prefetch4 128 112 data.threads=12 data.prefetch=4
b px224_prefetch4 256 224 data.threads=12 data.prefetch=4
b px224_t16_p8 256 224 data.threads=16 data.prefetch=8
b px112_t16_p8 128 112 data.threads=16 data.prefetch=8
b px224_t6_p4 256 224 data.threads=6 data.prefetch=4
