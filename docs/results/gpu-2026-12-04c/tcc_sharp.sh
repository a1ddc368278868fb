#!/usr/bin/env bash
# GPU call (2026-12-04, third session): TCC across pitchers with the similarity sharpened and each video's
# embeddings centred (the only recipe that closed the cycle in the CPU probe, docs/evaluation-tcc.md), at
# the GPU's scale. Same split as docs/results/gpu-2026-12-02/tcc.sh: 28 pitchers train (6 warps each),
# 7 others validate; random init of each recipe's model scored on the same validation pitchers.
#   bash docs/results/gpu-2026-12-04c/tcc_sharp.sh      (MIN: minutes per run; RESULTS, OUT: where)
set -u
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
P=${PITCH:-/tmp/data/tcc_pitch/train}
R=${RESULTS:-/tmp/tccs}
MIN=${MIN:-4}
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
ls "$P"/pitch_[0-3]?.mp4 > "$R/train.txt"
ls "$P"/pitch_4?.mp4 > "$R/val.txt"
python -m train.data warp "$R/train.txt" "$R/train" --copies 6 --frames 80 --source-frames 121 \
  --short-side 128 --seed 0 > "$R/warp.log" 2>&1
python -m train.data warp "$R/val.txt" "$R/val" --copies 1 --frames 80 --source-frames 121 \
  --short-side 128 --seed 1 >> "$R/warp.log" 2>&1

common=(
  "data.root=$R/train" data.short_side=128 data.crop=112 data.frame_cache_gib=4 data.threads=4
  data.batch_size=16 "tcc.eval.videos=$R/val" "tcc.eval.warps=$R/val" "tcc.eval.labels=$R/val/labels.json"
  tcc.eval.size=112 tcc.loss.temperature=0.001 tcc.center_per_video=true
  trainer.steps=1000000 "trainer.max_minutes=$MIN" trainer.eval_every_minutes=1.5 trainer.ckpt_every=1000000
  trainer.log_every=20
)
run() {  # name, overrides...
  local name=$1
  shift
  python train/run.py --config configs/tcc.yaml "${common[@]}" "$@" \
    "trainer.run_dir=$R/runs/$name" "tracking.uri=sqlite:///$R/mlflow_$name.db" "tracking.run_name=tcc-$name" \
    > "$R/train_$name.log" 2>&1
  python -m tcc.evaluate --baseline random-init --config "$R/runs/$name/config.yaml" --out "$R/ev_random_$name" \
    > "$R/ev_random_$name.log" 2>&1
}
for recipe in ${RECIPES:-sharp_r50:optim.lr=0.0001 sharp_r18:tcc.backbone=resnet18,optim.lr=0.001}; do
  IFS=, read -r -a over <<< "${recipe#*:}"
  run "${recipe%%:*}" "${over[@]}" &
done
wait
for name in "$R"/train_*.log; do echo "== $name"; grep -h "evaluation at step" "$name"; done
grep -h "tau " "$R"/ev_random_*.log
tar -czf "$OUT/tcc_results.tgz" -C "$R" --exclude='runs/*/checkpoints' --exclude='runs/*/final' \
  --exclude='*.mp4' --exclude='./train' --exclude='./val' --exclude='./out' .
