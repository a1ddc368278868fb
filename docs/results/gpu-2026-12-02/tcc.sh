#!/usr/bin/env bash
# GPU call B (2026-12-02): TCC on real baseball pitches across pitchers. 28 pitchers train, 7 others
# validate (rows 0-3 / row 4 of the grid), each clip's first 121 frames (one pitch; the files loop it
# three times) replayed through random time warps. Throughput measured alone first, then TCC recipes
# trained side by side on the GPU, evaluated on the validation pitchers every few minutes and at the end.
#   bash docs/results/gpu-2026-12-02/tcc.sh     (OUT: where results go; MIN: minutes per run)
# A CPU rehearsal shrinks everything: EXTRA="training overrides" BENCH="bench/pipeline.py flags".
set -u
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
P=${PITCH:-/tmp/data/tcc_pitch/train}
R=${RESULTS:-/tmp/tcc}
MIN=${MIN:-4}
OUT=${OUT:-$R/out}
COPIES=${COPIES:-6}
read -r -a extra <<< "${EXTRA:-}"
read -r -a bench <<< "${BENCH:---steps 40 --warmup 5}"
mkdir -p "$R" "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$R/gpu.txt" 2>&1
# A host call ends at 600 s: pack what exists shortly before, in case this one runs long.
( sleep "${PACK_AT:-565}"; tar -czf "$OUT/tcc_partial.tgz" -C "$R" --exclude='runs/*/checkpoints' --exclude='runs/*/final' --exclude='*.mp4' --exclude='./train' --exclude='./val' --exclude='./out' . ) > /dev/null 2>&1 < /dev/null &
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

# Throughput alone on the GPU: the paper's 20 frames x 2 context, ResNet-50, batch 16 videos.
for mode in ${MODES:-fast compiled}; do
  python bench/pipeline.py --method tcc --data "$R/train" --batch 16 --mode "$mode" "${bench[@]}" \
    --json "$R/pipeline_$mode.json" "${data[@]}" "${extra[@]}" > "$R/pipeline_$mode.txt" 2>&1
done

common=(
  "${data[@]}" "${evals[@]}" trainer.steps=1000000 "trainer.max_minutes=$MIN" trainer.eval_every_minutes=1.5
  trainer.ckpt_every=1000000 trainer.log_every=20 "${extra[@]}"
)
run() {  # name, overrides...
  local name=$1
  shift
  python train/run.py --config configs/tcc.yaml "${common[@]}" "$@" \
    "trainer.run_dir=$R/runs/$name" "tracking.uri=sqlite:///$R/mlflow_$name.db" "tracking.run_name=tcc-$name" \
    > "$R/train_$name.log" 2>&1
}
run paper_b2 data.batch_size=2 &
run r50_b16 data.batch_size=16 &
run r50_b16_centred data.batch_size=16 "${centred[@]}" &
run r18_b16_centred data.batch_size=16 "${centred[@]}" tcc.backbone=resnet18 optim.lr=0.0003 &
# A ResNet-50 trunk trained by CycleTime in call A (self-supervised, DAVIS), as torchvision keys.
CT=${CT_WEIGHTS:-/tmp/ct/runs/walk_r50/final/weights.pt}
TRUNK=$R/ct_trunk.pt
if [ -f "$CT" ]; then
  python -c "import sys, torch; s = torch.load(sys.argv[1], weights_only=True); p = 'encoder.trunk.'; \
torch.save({k[len(p):]: v for k, v in s.items() if k.startswith(p)}, sys.argv[2])" "$CT" "$TRUNK"
fi
if [ -f "$TRUNK" ]; then
  run r50_b16_ctrunk data.batch_size=16 "tcc.weights=$TRUNK" &
fi
wait

# Random initialisation of each recipe's model, on the same validation pitchers.
for name in paper_b2 r50_b16_centred r18_b16_centred; do
  python -m tcc.evaluate --baseline random-init --config "$R/runs/$name/config.yaml" --out "$R/ev_random_$name" \
    > "$R/ev_random_$name.log" 2>&1
done
grep -h "clips/s\|data wait\|real / resident" "$R"/pipeline_*.txt
grep -h "evaluation at step" "$R"/train_*.log
grep -h "tau " "$R"/ev_random_*.log
tar -czf "$OUT/tcc_results.tgz" -C "$R" --exclude='runs/*/checkpoints' --exclude='runs/*/final' \
  --exclude='*.mp4' --exclude='./train' --exclude='./val' --exclude='./out' .
ls -la "$OUT"
pkill -P "$dog" 2>/dev/null; kill "$dog" 2>/dev/null
