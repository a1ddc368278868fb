#!/usr/bin/env bash
# GPU call A (2026-12-02): CycleTime recipes trained side by side on one GPU from DAVIS-2016 train, each
# evaluated on DAVIS-2016 val (5 sequences, evaluator defaults: 480p, context 20, top-k 10, radius 12)
# every few minutes and at the end, with the baselines (Lab, random init) measured in the same call.
# Run from the repository root on the GPU host after the wheels are installed (docs/results/README).
#   bash docs/results/gpu-2026-12-02/ct.sh        (OUT: where results go; MIN: minutes per run)
# A CPU rehearsal shrinks everything: EXTRA="training overrides" EV="evaluator flags" (see its use below).
set -u
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
D=${DAVIS:-/tmp/data/davis2016}
R=${RESULTS:-/tmp/ct}
MIN=${MIN:-5}
read -r -a extra <<< "${EXTRA:-}"
read -r -a ev <<< "${EV:-}"
OUT=${OUT:-$R/out}
mkdir -p "$R" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$R/gpu.txt" 2>&1
# A host call ends at 600 s: pack what exists shortly before, in case this one runs long.
( sleep "${PACK_AT:-565}"; tar -czf "$OUT/ct_partial.tgz" -C "$R" --exclude='runs/*/checkpoints' --exclude='runs/*/final' --exclude='*.mp4' --exclude='*.png' . ) > /dev/null 2>&1 < /dev/null &
dog=$!
disown

# Baselines while the runs start (index, DALI pipelines, DeepSpeed): Lab and random init (ResNet-50).
(
  python -m cycletime.evaluate --baseline lab --davis "$D/val" --no-overlays "${ev[@]}" --out "$R/ev_lab"
  python -m cycletime.evaluate --baseline random-init --davis "$D/val" --no-overlays "${ev[@]}" --out "$R/ev_random_r50"
) > "$R/baselines.log" 2>&1 &

common=(
  "data.root=$D/train" data.batch_size=16 data.nvdec_readers=4 data.threads=4
  trainer.steps=1000000 "trainer.max_minutes=$MIN" trainer.eval_every_minutes=2 trainer.ckpt_every=1000000
  trainer.log_every=25 trainer.compile=false "cycletime.eval.davis=$D/val" "${extra[@]}"
)
walk=(cycletime.w_walk=1 cycletime.w_cycle=0 cycletime.w_skip=0 cycletime.w_inlier=0)
run() {  # name, overrides...
  local name=$1
  shift
  python train/run.py --config configs/cycletime.yaml "${common[@]}" "$@" \
    "trainer.run_dir=$R/runs/$name" "tracking.uri=sqlite:///$R/mlflow_$name.db" "tracking.run_name=ct-$name" \
    > "$R/train_$name.log" 2>&1
}
run features cycletime.patch_source=features &
run official cycletime.patch_source=image &
run walk_r50 "${walk[@]}" &
run walk_r18 "${walk[@]}" cycletime.backbone=resnet18 cycletime.feat_dim=256 &
wait

# Random init of the ResNet-18 model (the walk_r18 run's own config).
python -m cycletime.evaluate --baseline random-init --config "$R/runs/walk_r18/config.yaml" --davis "$D/val" \
  --no-overlays "${ev[@]}" --out "$R/ev_random_r18" > "$R/ev_random_r18.log" 2>&1
# What the trackers learned: real context frames against another clip's.
for name in features official; do
  python bench/tracker.py --run "$R/runs/$name" --data "$D/train" --batches "${BATCHES:-8}" --batch 16 \
    --json "$R/tracker_$name.json" > "$R/tracker_$name.txt" 2>&1
done
# Whether BatchNorm's running statistics hurt: the walk run evaluated with per-frame statistics.
python -m cycletime.evaluate --weights "$R/runs/walk_r50" --davis "$D/val" --no-overlays "${ev[@]}" --batchnorm frames \
  --out "$R/ev_walk_r50_bnframes" > "$R/ev_walk_r50_bnframes.log" 2>&1

grep -h "DAVIS overall" "$R"/baselines.log "$R"/ev_*.log 2>/dev/null
grep -h "evaluation at step" "$R"/train_*.log
tar -czf "$OUT/ct_results.tgz" -C "$R" --exclude='runs/*/checkpoints' --exclude='runs/*/final' \
  --exclude='*.mp4' --exclude='*.png' .
ls -la "$OUT"
pkill -P "$dog" 2>/dev/null; kill "$dog" 2>/dev/null
