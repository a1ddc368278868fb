#!/usr/bin/env bash
# GPU call B (2026-12-03): TCC trained across pitchers for MIN minutes with the GPU shared by two recipes
# only (the 2026-12-02 call split it five ways: 500 steps at batch 16). 28 train pitchers (pitch_0?-3?),
# 7 validation pitchers (pitch_4?) never trained on; each clip's first 121 frames warped to 80 frames at
# 128 px, 112 px crops. Periodic evaluation (tau, alignment error, phases, aligned grid) goes to MLflow;
# random init of both recipes is measured in the same call.
#   bash docs/results/gpu-2026-12-03/tcc_solo.sh     (OUT: results; MIN: minutes; COPIES: warps per clip)
set -u
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
P=${PITCH:-/tmp/data/tcc_pitch/train}
R=${RESULTS:-/tmp/tcc}
MIN=${MIN:-6.5}
OUT=${OUT:-$R/out}
COPIES=${COPIES:-6}
read -r -a extra <<< "${EXTRA:-}"
mkdir -p "$R" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$R/gpu.txt" 2>&1
pack() {  # the archive leaves out videos, checkpoints and weights (a host call returns at most 16 MiB a file)
  tar -czf "$1" -C "$R" --exclude='runs/*/checkpoints' --exclude='runs/*/final' --exclude='*.mp4' \
    --exclude='*.pt' --exclude='./train' --exclude='./val' --exclude='./out' .
}
( sleep "${PACK_AT:-570}"; pack "$OUT/tcc_partial.tgz" ) > /dev/null 2>&1 < /dev/null &
dog=$!
disown

ls "$P"/pitch_[0-3]?.mp4 > "$R/train.txt"
ls "$P"/pitch_4?.mp4 > "$R/val.txt"
python -m train.data warp "$R/train.txt" "$R/train" --copies "$COPIES" --frames 80 --source-frames 121 \
  --short-side 128 --seed 0 > "$R/warp.log" 2>&1
python -m train.data warp "$R/val.txt" "$R/val" --copies 1 --frames 80 --source-frames 121 \
  --short-side 128 --seed 1 >> "$R/warp.log" 2>&1

data=("data.root=$R/train" data.short_side=128 data.crop=112 data.frame_cache_gib=4 data.threads=6)
evals=("tcc.eval.videos=$R/val" "tcc.eval.warps=$R/val" "tcc.eval.labels=$R/val/labels.json" tcc.eval.size=112)
centred=(tcc.center_per_video=true tcc.normalize_embeddings=true tcc.loss.divide_by_dim=false)
common=(
  "${data[@]}" "${evals[@]}" data.batch_size=16 trainer.steps=1000000 "trainer.max_minutes=$MIN"
  trainer.eval_every_minutes=2 trainer.ckpt_every=1000000 trainer.log_every=50 "${extra[@]}"
)
run() {  # name, overrides...
  local name=$1
  shift
  python train/run.py --config configs/tcc.yaml "${common[@]}" "$@" \
    "trainer.run_dir=$R/runs/$name" "tracking.uri=sqlite:///$R/mlflow_$name.db" "tracking.run_name=tcc-$name" \
    > "$R/train_$name.log" 2>&1
}
run paper_b16 &
run r18_b16_centred "${centred[@]}" tcc.backbone=resnet18 optim.lr=0.0003 &
wait

for name in paper_b16 r18_b16_centred; do
  python -m tcc.evaluate --baseline random-init --config "$R/runs/$name/config.yaml" --out "$R/ev_random_$name" \
    > "$R/ev_random_$name.log" 2>&1
done
for name in paper_b16 r18_b16_centred; do
  echo "== $name"
  grep "step .*clips/s" "$R/train_$name.log" | sed -n '2p;$p'
  grep -h "evaluation at step" "$R/train_$name.log"
  grep -h "tau" "$R/ev_random_$name.log" | tail -3
done
pack "$OUT/tcc_results.tgz"
# The last aligned grid of each recipe (the reference pitcher and the others at its nearest frames).
for name in paper_b16 r18_b16_centred; do
  grid=$(ls "$R"/runs/$name/eval/*/aligned.mp4 2>/dev/null | tail -1)
  [ -n "$grid" ] && cp "$grid" "$OUT/aligned_$name.mp4"
done
ls -la "$OUT"
kill "$dog" 2>/dev/null
