#!/usr/bin/env bash
# GPU call (written 2026-12-03, run 2026-12-04): the CycleTime paper config (configs/cycletime.yaml, patch_source: image) trained
# ALONE on one GPU from DAVIS-2016 train for MIN minutes, evaluated on DAVIS-2016 val (5 sequences,
# evaluator defaults: 480p, context 20, top-k 10, radius 12) every 2 minutes and at the end (MLflow
# eval_davis/JF curve), with the Lab and random-init baselines measured in the same call.
# Run from the repository root on the GPU host after the wheels are installed (../shared/gpu-host/README.md).
#   bash docs/results/gpu-2026-12-03/ct_solo.sh     (OUT: where results go; MIN: minutes; BATCH: clips/step)
set -u
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
D=${DAVIS:-/tmp/data/davis2016}
R=${RESULTS:-/tmp/ct}
MIN=${MIN:-7.5}
OUT=${OUT:-$R/out}
read -r -a extra <<< "${EXTRA:-}"
mkdir -p "$R" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$R/gpu.txt" 2>&1
pack() {  # logs, evaluations and MLflow stores; no checkpoints, weights or images (a host call returns 16 MiB a file)
  tar -czf "$1" -C "$R" --exclude='runs/*/checkpoints' --exclude='runs/*/final' --exclude='*.mp4' --exclude='*.png' .
}
# A host call ends at 600 s: pack what exists shortly before, in case this one runs long.
( sleep "${PACK_AT:-570}"; pack "$OUT/ct_partial.tgz" ) > /dev/null 2>&1 < /dev/null &
dog=$!
disown

# Baselines while the run starts (index, DALI pipelines, DeepSpeed): Lab and random init (ResNet-50).
(
  python -m cycletime.evaluate --baseline lab --davis "$D/val" --no-overlays --out "$R/ev_lab"
  python -m cycletime.evaluate --baseline random-init --davis "$D/val" --no-overlays --out "$R/ev_random_r50"
) > "$R/baselines.log" 2>&1 &

python train/run.py --config configs/cycletime.yaml \
  "data.root=$D/train" "data.batch_size=${BATCH:-32}" data.nvdec_readers=8 data.threads=8 \
  trainer.steps=1000000 "trainer.max_minutes=$MIN" trainer.eval_every_minutes=2 trainer.ckpt_every=1000000 \
  trainer.log_every=25 trainer.compile=false "cycletime.eval.davis=$D/val" "${extra[@]}" \
  "trainer.run_dir=$R/runs/solo" "tracking.uri=sqlite:///$R/mlflow_solo.db" tracking.run_name=ct-solo \
  > "$R/train_solo.log" 2>&1
wait

grep -h "DAVIS overall" "$R"/baselines.log
grep -h "evaluation at step" "$R"/train_solo.log
grep "step .*clips/s" "$R"/train_solo.log | sed -n '1p;$p'
pack "$OUT/ct_results.tgz"
ls -la "$OUT"
kill "$dog" 2>/dev/null
