#!/usr/bin/env bash
# GPU call (2026-12-04, second session): TCC on one GPU.
# 1. Throughput at the paper's 20 frames x 2 context, 224 px crops of 256 px warps, ResNet-50, batch 16 videos,
#    bf16, frame cache on (bench/pipeline.py --mode fast): batches assembled on a background thread
#    (data.batch_thread, the new default) and on the training thread (data.batch_thread=false), back to back.
# 2. Learning across pitchers (28 train / 7 validation, as docs/evaluation-tcc.md) with the CPU probe's
#    recipe at scale (sharp similarities: temperature 0.001, per-video centring), ResNet-50 and ResNet-18
#    side by side for MIN minutes, evaluated on the validation pitchers every 1.5 minutes and at the end;
#    random init of each model on the same pitchers.
#   bash docs/results/gpu-2026-12-04b/tcc_call.sh      (OUT: results; MIN: minutes per learning run)
set -u
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
P=${PITCH:-/tmp/data/tcc_pitch/train}
R=${RESULTS:-/tmp/tcc}
MIN=${MIN:-4.5}
OUT=${OUT:-$R/out}
read -r -a bench <<< "${BENCH:---steps 150 --warmup 30}"
mkdir -p "$R" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$R/gpu.txt" 2>&1
pack() {
  tar -czf "$1" -C "$R" --exclude='runs/*/checkpoints' --exclude='runs/*/final' --exclude='*.mp4' \
    --exclude='./train*' --exclude='./val' --exclude='./out' .
}
( sleep "${PACK_AT:-570}"; pack "$OUT/tcc_partial.tgz" ) > /dev/null 2>&1 < /dev/null &
dog=$!
disown

ls "$P"/pitch_[0-3]?.mp4 > "$R/train.txt"
ls "$P"/pitch_4?.mp4 > "$R/val.txt"
warp() { python -m train.data warp "$@" --frames 80 --source-frames 121 >> "$R/warp.log" 2>&1; }
warp "$R/train.txt" "$R/train256" --copies 1 --short-side 256 --seed 0 &
warp "$R/train.txt" "$R/train" --copies 6 --short-side 128 --seed 0 &
warp "$R/val.txt" "$R/val" --copies 1 --short-side 128 --seed 1 &
wait

b() {  # name, overrides...
  local name=$1
  shift
  python bench/pipeline.py --method tcc --data "$R/train256" --batch 16 --mode fast "${bench[@]}" \
    --json "$R/$name.json" data.short_side=256 data.crop=224 data.frame_cache_gib=8 data.threads=12 \
    data.prefetch=4 "$@" > "$R/$name.txt" 2>&1
  echo "== $name"
  tail -6 "$R/$name.txt" | grep -v Warning
}
b px224_batch_thread
b px224_training_thread data.batch_thread=false

data=("data.root=$R/train" data.short_side=128 data.crop=112 data.frame_cache_gib=4 data.threads=6 data.batch_size=16)
evals=("tcc.eval.videos=$R/val" "tcc.eval.warps=$R/val" "tcc.eval.labels=$R/val/labels.json" tcc.eval.size=112)
sharp=(tcc.loss.temperature=0.001 tcc.center_per_video=true)
run() {  # name, overrides...
  local name=$1
  shift
  python train/run.py --config configs/tcc.yaml "${data[@]}" "${evals[@]}" trainer.steps=1000000 \
    "trainer.max_minutes=$MIN" trainer.eval_every_minutes=1.5 trainer.ckpt_every=1000000 trainer.log_every=20 \
    "$@" "trainer.run_dir=$R/runs/$name" "tracking.uri=sqlite:///$R/mlflow_$name.db" "tracking.run_name=tcc-$name" \
    > "$R/train_$name.log" 2>&1
}
run r50_sharp "${sharp[@]}" &
run r18_sharp "${sharp[@]}" tcc.backbone=resnet18 &
wait
for name in r50_sharp r18_sharp; do
  python -m tcc.evaluate --baseline random-init --config "$R/runs/$name/config.yaml" --out "$R/ev_random_$name" \
    > "$R/ev_random_$name.log" 2>&1
done
for log in "$R"/train_*.log; do
  echo "== $log"
  grep -h "evaluation at step" "$log"
  grep "step .*clips/s" "$log" | sed -n '1p;$p'
done
grep -h "tau" "$R"/ev_random_*.log | tail -4
pack "$OUT/tcc_results.tgz"
ls -la "$OUT"
kill "$dog" 2>/dev/null
