#!/usr/bin/env bash
# GPU call (2026-12-04, second session): CycleTime recipes trained SIDE BY SIDE on one GPU from DAVIS-2016
# train (plus, where a recipe says so, more video), evaluated on DAVIS-2016 val (5 sequences, evaluator
# defaults: 480p, context 20, top-k 10, radius 12) every 2 minutes and at the end (MLflow eval_davis/JF),
# with the Lab and random-init baselines measured in the same call (BASELINES=0 skips them; TRUNK=1 adds
# the final weights and random init read at res4, `--features trunk`; PAIRED_BN=1 scores precise_bn runs'
# weights with training's BatchNorm statistics too; KEEP_WEIGHTS="NAME" brings that run's final encoder
# back under $OUT; see below).
# Run from the repository root on the GPU host after the wheels are installed (../shared/gpu-host/README.md):
#   bash docs/results/gpu-2026-12-04b/ct_multi.sh NAME "overrides" [NAME "overrides" ...]
# Every run starts from configs/cycletime_no_inlier.yaml (CONFIG to change) at batch 32, bf16, not compiled,
# NVDEC x8, for MIN minutes; a recipe's overrides come last and win (data.root=..., optim.*, ...).
set -u
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
D=${DAVIS:-/tmp/data/davis2016}
R=${RESULTS:-/tmp/ctm}
MIN=${MIN:-7.75}
OUT=${OUT:-$R/out}
CONFIG=${CONFIG:-configs/cycletime_no_inlier.yaml}
# A GPU host can keep /tmp between sessions: results of an earlier call in $R would be packed with this
# call's (it happened on 2026-12-04, sixth session), so they are moved aside first.
if [ -d "$R" ] && [ -n "$(ls -A "$R")" ]; then
  mv "$R" "$R.old.$(date +%s)"
fi
mkdir -p "$R" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$R/gpu.txt" 2>&1
pack() {  # logs, evaluations and MLflow stores; no checkpoints, weights or images (a host call returns 16 MiB a file)
  tar -czf "$1" -C "$R" --exclude='runs/*/checkpoints' --exclude='runs/*/final' --exclude='*.mp4' --exclude='*.png' \
    --exclude='./out' .
}
# A host call ends at 600 s: pack what exists shortly before, in case this one runs long.
( sleep "${PACK_AT:-570}"; pack "$OUT/ct_partial.tgz" ) > /dev/null 2>&1 < /dev/null &
dog=$!
disown

if [ "${BASELINES:-1}" = 1 ]; then
  (
    python -m cycletime.evaluate --baseline lab --davis "$D/val" --no-overlays --out "$R/ev_lab"
    python -m cycletime.evaluate --baseline random-init --davis "$D/val" --no-overlays --out "$R/ev_random_r50"
    if [ "${TRUNK:-0}" = 1 ]; then
      python -m cycletime.evaluate --baseline random-init --davis "$D/val" --features trunk --no-overlays \
        --out "$R/ev_random_r50_trunk"
    fi
  ) > "$R/baselines.log" 2>&1 &
fi

while [ $# -ge 2 ]; do
  name=$1
  read -r -a over <<< "$2"
  shift 2
  python train/run.py --config "$CONFIG" \
    "data.root=$D/train" "data.batch_size=${BATCH:-32}" data.nvdec_readers=8 data.threads=8 \
    trainer.steps=1000000 "trainer.max_minutes=$MIN" trainer.eval_every_minutes=2 trainer.ckpt_every=1000000 \
    trainer.log_every=25 trainer.compile=false "cycletime.eval.davis=$D/val" "${over[@]}" \
    "trainer.run_dir=$R/runs/$name" "tracking.uri=sqlite:///$R/mlflow_$name.db" "tracking.run_name=ct-$name" \
    > "$R/train_$name.log" 2>&1 &
done
wait

# TRUNK=1: every run's final weights (the average with trainer.ema) read at res4 as well, before the 1x1
# projection (`--features trunk`, CRW's layer); the trainer's own final evaluation reads the projection.
# READ=projection instead reads the projection, for runs whose own evaluations read res4
# (cycletime.eval.features=trunk).
READ=${READ:-trunk}
if [ "${TRUNK:-0}" = 1 ]; then
  for run in "$R"/runs/*/; do
    name=$(basename "$run")
    python -m cycletime.evaluate --weights "$run" --davis "$D/val" --features "$READ" --no-overlays \
      --out "$R/ev_${READ}_$name" > "$R/${READ}_$name.log" 2>&1 &
  done
fi

# PAIRED_BN=1: for runs with trainer.precise_bn, the same final weights are also evaluated with the BatchNorm
# statistics training left (taken from the final checkpoint, saved before they were recomputed): a paired
# comparison of recomputed against training's statistics on one set of parameters, free of seed spread.
# (A periodic evaluation recomputes the live model's statistics too; training then overwrites them within
# some tens of steps. The planned runs evaluate only at the end.)
if [ "${PAIRED_BN:-0}" = 1 ]; then
  for run in "$R"/runs/*/; do
    name=$(basename "$run")
    grep -q "BatchNorm statistics recomputed" "$R/train_$name.log" 2>/dev/null || continue
    (python -c "import glob, sys, torch; run = sys.argv[1]; w = torch.load(run + '/final/weights.pt'); \
ckpt = sorted(glob.glob(run + '/checkpoints/step_*/mp_rank_00_model_states.pt'))[-1]; \
m = torch.load(ckpt, map_location='cpu', weights_only=False)['module']; \
w.update({k: v.float().cpu() for k, v in m.items() if k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))}); \
torch.save(w, run + '/final/weights_runningbn.pt')" "$run" &&
      python -m cycletime.evaluate --weights "$run/final/weights_runningbn.pt" --config "$run/config.yaml" \
        --davis "$D/val" --no-overlays --out "$R/ev_runningbn_$name" > "$R/runningbn_$name.log" 2>&1) &
  done
fi
# The evaluations above run side by side (the GPU has room for them; one after another they took most of a call).
wait
for log in "$R"/"$READ"_*.log; do [ -e "$log" ] && echo "== $(basename "$log" .log): $(grep -h "DAVIS overall" "$log")"; done
for log in "$R"/runningbn_*.log; do
  [ -e "$log" ] && echo "== training's BatchNorm statistics $(basename "$log" .log): $(grep -h "DAVIS overall" "$log")"
done

# KEEP_WEIGHTS="NAME ...": those runs' final encoders (fp32, keys trunk.* and project.*) come back under $OUT
# in 15 MiB parts, so that a later session without a GPU can evaluate them on the CPU. A call returns at most
# 8 files of 16 MiB, 64 MiB in all, and a ResNet-50 encoder is about 36 MB: one run per call. On this side:
# `cat w_NAME.pt.part-* > w_NAME.pt; python -m cycletime.evaluate --weights w_NAME.pt --config
# runs/NAME/config.yaml --davis ... --device cpu` (the config comes back in the results archive).
for name in ${KEEP_WEIGHTS:-}; do
  python -c "import sys, torch; s = torch.load(sys.argv[1], map_location='cpu'); \
torch.save({k.removeprefix('encoder.'): v for k, v in s.items() if k.startswith('encoder.')}, sys.argv[2])" \
    "$R/runs/$name/final/weights.pt" "$R/w_$name.pt" && split -b 15m -d "$R/w_$name.pt" "$OUT/w_$name.pt.part-"
done

grep -h "DAVIS overall" "$R"/baselines.log 2>/dev/null
for log in "$R"/train_*.log; do
  echo "== $log"
  grep -h "evaluation at step" "$log"
  grep "step .*clips/s" "$log" | sed -n '1p;$p'
  grep -h "Error\|error" "$log" | head -3
done
pack "$OUT/ct_results.tgz"
ls -la "$OUT"
kill "$dog" 2>/dev/null
