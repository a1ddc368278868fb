"""Does the GPU wait for data? The same training step fed by the real video pipeline and by tensors
already on the device, side by side in one run.

    python bench/pipeline.py --method cycletime --data DIR [--batch 32] [--mode compiled] [--steps 40]

The real path is the trainer's: dataset index, sampler, DALI (NVDEC on a GPU), augmentation, batch.
Reported: clips/s both ways, and the data-wait fraction: the share of wall time the step loop spent
blocked in `next(loader)` (the DALI queue holds `data.prefetch` batches decoded ahead).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from bench.common import machine, sync, table, time_steps, write_json
from bench.step import make_step, mode_overrides, synthetic_batch
from train.data.loader import build_loader
from train.engine import init_distributed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("cycletime", "tcc"), default="cycletime")
    parser.add_argument("--data", required=True, help="folder of training videos (e.g. DAVIS-2016 train)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--mode", default="compiled", choices=("fast", "compiled"), help="step of bench/step.py to feed"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--json", default=None)
    parser.add_argument("overrides", nargs="*", help="extra config overrides (data.threads=8, ...)")
    args = parser.parse_args(argv)
    dist = init_distributed()
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    overrides = [
        *mode_overrides(args.method, args.mode, args.batch),
        f"data.root={args.data}",
        *args.overrides,
    ]
    step = make_step(args.method, overrides, dist)

    on_device = synthetic_batch(step.cfg, step.spec, dist.device, step.gen)
    resident = time_steps(lambda: step(on_device), dist.device, args.batch, args.warmup, args.steps)

    loader = build_loader(
        step.cfg.data,
        step.spec.clip_spec(step.cfg.method_cfg),
        rank=dist.rank,
        world_size=dist.world_size,
        local_rank=dist.local_rank,
        device=dist.device,
        seed=0,
    )
    batches = iter(loader)
    for _ in range(args.warmup):
        step(next(batches))
    sync(dist.device)
    waited, start = 0.0, time.perf_counter()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - t0
        step(batch)
    sync(dist.device)
    total = time.perf_counter() - start
    real = {"clips_per_s": args.batch * args.steps / total, "step_ms": 1e3 * total / args.steps}
    rows = [
        {
            "feed": "tensors on the device",
            "clips_per_s": resident.clips_per_s,
            "step_ms": resident.step_ms,
            "wait": 0.0,
        },
        {"feed": f"video pipeline ({loader.decoder})", **real, "wait": waited / total},
    ]
    print(f"{args.method} step ({args.mode}, batch {args.batch}) on {machine(dist.device)}, data {args.data}")
    print(
        table(
            rows,
            [
                ("feed", "fed by", "s"),
                ("step_ms", "ms/step", ".1f"),
                ("clips_per_s", "clips/s", ".1f"),
                ("wait", "data wait", ".1%"),
            ],
        )
    )
    print(f"real / resident throughput: {real['clips_per_s'] / resident.clips_per_s:.3f}")
    write_json(
        args.json,
        {
            "machine": machine(dist.device),
            "data": args.data,
            "rows": rows,
            "decoder": loader.decoder,
            "loader_stats": loader.stats(),
        },
    )
    loader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
