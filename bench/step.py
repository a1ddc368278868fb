"""Training-step speed of one method at paper settings: the original code's way vs the framework's.

    python bench/step.py --method cycletime [--batch 9,32] [--modes reference,fast] [--json OUT]
    python bench/step.py --method tcc
    python bench/step.py --method cycletime --batch 32 --modes fast --profile /tmp/prof

Modes (same model, same loss, same DeepSpeed engine and Adam; inputs already on the device):
- reference: as the original code runs: fp32 (convolutions in TF32, PyTorch's default, as upstream
  measured), NCHW, CycleTime's tracker in upstream's per-cycle order.
- fast: the framework's defaults: bf16 autocast, channels_last, the batched tracker schedule.
- compiled (`--modes reference,fast,compiled`): fast + `trainer.compile` (torch.compile of the whole
  model, Inductor's default mode), which fuses the encoder's BatchNorm/ReLU/add chains.
Reported: step time, clips/s, peak memory, FLOPs per step (PyTorch's counter plus bilinear sampling),
achieved TFLOP/s, and MFU against a bf16 matrix multiply measured on the same device in the same run.
MFU uses the fast mode's FLOP count for every mode (the work the step needs, not what a mode wastes).
`--profile DIR` then profiles a few more steps of each mode with torch.profiler: it prints the ops
that take the most device time (CPU time on a CPU) and writes a Chrome trace per mode into DIR.
CycleTime's patch is the encoded image in both modes (upstream's compute), so the ratio isolates speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from bench.common import (
    REPO,
    bf16_matmul_tflops,
    count_flops,
    free_memory,
    machine,
    sync,
    table,
    time_steps,
    write_json,
)
from train.config import load_config
from train.engine import DTYPES, build_engine, init_distributed, prepare_model
from train.methods import load_method

MODES: dict[str, list[str]] = {
    "reference": ["trainer.precision=fp32", "trainer.channels_last=false", "trainer.compile=false"],
    "fast": ["trainer.precision=bf16", "trainer.channels_last=true", "trainer.compile=false"],
    "compiled": ["trainer.precision=bf16", "trainer.channels_last=true", "trainer.compile=true"],
}
METHOD_MODES: dict[str, dict[str, list[str]]] = {
    "cycletime": {
        "reference": ["cycletime.tracker_schedule=per_cycle", "cycletime.patch_source=image"],
        "fast": ["cycletime.tracker_schedule=batched", "cycletime.patch_source=image"],
        "compiled": ["cycletime.tracker_schedule=batched", "cycletime.patch_source=image"],
    },
    "tcc": {"reference": [], "fast": [], "compiled": []},
}


def synthetic_batch(
    cfg: Any, spec: Any, device: torch.device, gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """A batch shaped like the loader's, already on the device."""
    clip = spec.clip_spec(cfg.method_cfg)
    B, F, S = cfg.data.batch_size, clip.frames_per_clip, cfg.data.crop
    frames = torch.randn(B, F, 3, S, S, device=device, generator=gen)
    length = 200
    idx = torch.sort(torch.randint(0, length, (B, F), device=device, generator=gen), dim=1).values
    return {"frames": frames, "frame_idx": idx, "video_len": torch.full((B,), length, device=device)}


@dataclasses.dataclass
class Step:
    """One training step of a method, built from its config with the framework's components."""

    cfg: Any
    spec: Any
    engine: Any
    gen: torch.Generator
    dtype: torch.dtype

    def forward_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = self.spec.prepare(batch, self.cfg.method_cfg, self.gen)
        with torch.autocast(self.gen.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.spec.forward(self.engine, inputs)
            return self.spec.loss(out, inputs, self.cfg.method_cfg)[0]

    def __call__(self, batch: dict[str, torch.Tensor]) -> None:
        self.engine.backward(self.forward_loss(batch))
        self.engine.step()


def make_step(method: str, overrides: list[str], dist: Any) -> Step:
    """The paper config of `method` with `overrides`, as a DeepSpeed engine on this process's device."""
    cfg = load_config(REPO / f"configs/{method}.yaml", overrides)
    spec = load_method(method)
    torch.manual_seed(0)
    model = spec.build_model(cfg.method_cfg, cfg.data.crop).to(dist.device)
    model = prepare_model(model, cfg, dist.device)
    engine = build_engine(model, cfg, dist)
    gen = torch.Generator(device=dist.device).manual_seed(0)
    return Step(cfg, spec, engine, gen, DTYPES[cfg.trainer.precision])


def mode_overrides(method: str, mode: str, batch: int) -> list[str]:
    return [f"data.batch_size={batch}", "trainer.zero_stage=0", *MODES[mode], *METHOD_MODES[method][mode]]


def profile_steps(step: Any, device: torch.device, out: Path, steps: int = 3, top: int = 15) -> None:
    """Profile `steps` calls of `step` (already warm); print the top ops, write `out.json` (Chrome trace)."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    out.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(out) + ".json")
    key = "self_cuda_time_total" if on_gpu else "self_cpu_time_total"
    print(f"profile of {steps} steps ({out.name}), top {top} ops by {key}; trace: {out}.json")
    print(prof.key_averages().table(sort_by=key, row_limit=top))


def run_mode(method: str, mode: str, batch: int, args: argparse.Namespace, dist: Any) -> dict[str, Any]:
    step = make_step(method, mode_overrides(method, mode, batch) + args.overrides, dist)
    batch_in = synthetic_batch(step.cfg, step.spec, dist.device, step.gen)
    # The compiled mode does the fast mode's work; counting under torch.compile would trace it twice.
    flops = count_flops(lambda: step.forward_loss(batch_in).backward()) if mode != "compiled" else 0
    step.engine.zero_grad()
    timing = time_steps(lambda: step(batch_in), dist.device, batch, args.warmup, args.steps)
    if args.profile:
        profile_steps(lambda: step(batch_in), dist.device, Path(args.profile) / f"{method}_{mode}_b{batch}")
    return {
        "method": method,
        "mode": mode,
        "batch": batch,
        "flops_per_step": flops,
        **dataclasses.asdict(timing),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("cycletime", "tcc"), required=True)
    parser.add_argument(
        "--batch", default=None, help="clips per GPU, comma-separated (default: cycletime 9,32; tcc 2)"
    )
    parser.add_argument("--modes", default="reference,fast,compiled")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--profile", default=None, help="also profile each mode; Chrome traces go here")
    parser.add_argument(
        "overrides", nargs="*", help="extra config overrides (e.g. cycletime.backbone=resnet18)"
    )
    args = parser.parse_args(argv)
    dist = init_distributed()
    if dist.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    peak = bf16_matmul_tflops(dist.device)
    batches = [int(b) for b in (args.batch or ("9,32" if args.method == "cycletime" else "2")).split(",")]
    rows = []
    for b in batches:
        for mode in args.modes.split(","):
            rows.append(run_mode(args.method, mode, b, args, dist))
            free_memory(dist.device)  # the mode's engine is garbage now: free it before the next
    for b in batches:
        fast = next((r for r in rows if r["batch"] == b and r["mode"] == "fast"), None)
        ref = next((r for r in rows if r["batch"] == b and r["mode"] == "reference"), None)
        model_flops = (fast or ref)["flops_per_step"]
        for r in rows:
            if r["batch"] == b:
                r["tflops"] = model_flops / (r["step_ms"] / 1e3) / 1e12
                # CPUs emulate bf16 (the matmul reference is meaningless there): MFU only on GPUs.
                r["mfu"] = r["tflops"] / peak if dist.device.type == "cuda" else None
                r["speedup"] = r["clips_per_s"] / ref["clips_per_s"] if ref else None
    print(f"{args.method} training step on {machine(dist.device)}; bf16 matmul {peak:.0f} TFLOP/s measured")
    cols = [
        ("mode", "mode", "s"),
        ("batch", "batch", "d"),
        ("step_ms", "ms/step", ".1f"),
        ("clips_per_s", "clips/s", ".1f"),
        ("speedup", "x ref", ".2f"),
        ("tflops", "TFLOP/s", ".1f"),
        ("mfu", "MFU", ".1%"),
        ("peak_gib", "peak GiB", ".1f"),
    ]
    print(table(rows, cols))
    write_json(args.json, {"machine": machine(dist.device), "bf16_matmul_tflops": peak, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
