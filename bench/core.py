"""Time and memory of the core ops at the sizes the methods use.

    python bench/core.py [--device cuda|cpu] [--quick] [--json OUT] [--chunk 1024]

Cases (fp32 and bf16 inputs each):
- CycleTime sizes (batch 32, 512 channels, 30x30 frame, 10x10 patch): the tracker's affinity + softmax
  (patch positions x frame positions), the affine crop of a 512-channel map, and the weak inlier score.
- Propagation sizes (one 480p DAVIS frame at stride 8 = 60x107 = 6420 queries; 20 context frames + the
  first = 134,820 keys; 512 channels): top-k (k=10) affinity + label propagation (8 label channels), and
  the full soft nearest neighbour, each direct and chunked over query rows.

Reported per case: median forward time and median forward+backward time (after warm-up; CUDA events on
GPU), and on GPU the peak memory *above the inputs* (torch.cuda.max_memory_allocated minus what was
allocated before the call), for the forward alone and for forward+backward. On CPU only times are
measured. A case that runs out of memory prints OOM. `--quick` shrinks every size so that the whole run
takes seconds on a CPU (a smoke test of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script, this file's folder is sys.path[0] and this very file would shadow the `core`
    # package: put the repository root there instead.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from bench.common import free_memory
from core.affine import affine_crop, inlier_score, theta_from_params
from core.correlation import (
    chunked_soft_nearest_neighbour,
    chunked_topk_affinity,
    pairwise_similarity,
    propagate,
    soft_nearest_neighbour,
    softmax_affinity,
    topk_affinity,
)

MIB = 2**20
FULL = {
    "batch": 32,
    "channels": 512,
    "frame": 30,
    "patch": 10,
    "prop_hw": (60, 107),
    "context": 21,
    "prop_channels": 512,
    "k": 10,
    "labels": 8,
}
QUICK = {
    "batch": 4,
    "channels": 64,
    "frame": 30,
    "patch": 10,
    "prop_hw": (12, 20),
    "context": 21,
    "prop_channels": 64,
    "k": 10,
    "labels": 8,
}
TRACKER_TEMPERATURE = 512**-0.5  # CycleTime's affinity temperature
PROP_TEMPERATURE = 0.05  # CRW's propagation temperature


@dataclass
class Case:
    """One benchmarked op: `make(device, dtype)` builds inputs (those to differentiate listed in
    `grads`) and `run(inputs)` returns a scalar loss."""

    name: str
    size: str
    mode: str
    make: Callable[[torch.device, torch.dtype], dict[str, torch.Tensor]]
    run: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    grads: tuple[str, ...]


@dataclass
class Result:
    case: str
    size: str
    mode: str
    dtype: str
    fwd_ms: float | None = None
    fwd_bwd_ms: float | None = None
    fwd_extra_mib: float | None = None
    fwd_bwd_extra_mib: float | None = None
    inputs_mib: float | None = None
    status: str = "ok"


def _randn(device: torch.device, dtype: torch.dtype, *shape: int) -> torch.Tensor:
    return (torch.randn(*shape, device=device) + 0.1).to(dtype)


def _thetas(device: torch.device, B: int) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(0)
    angle = (torch.rand(B, device=device, generator=g) - 0.5) * 1.5
    return theta_from_params(torch.rand(B, device=device, generator=g) - 0.5, 0.1, angle, 1 / 3)


def cycletime_cases(s: dict) -> list[Case]:
    B, C, F, P = s["batch"], s["channels"], s["frame"], s["patch"]
    size = f"B{B} C{C} {F}x{F} frame, {P}x{P} patch"

    def make_affinity(device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {
            "patch": _randn(device, dtype, B, P * P, C),
            "frame": _randn(device, dtype, B, F * F, C),
            "w": _randn(device, torch.float32, B, P * P, F * F),
        }

    def run_affinity(t: dict[str, torch.Tensor]) -> torch.Tensor:
        alpha = softmax_affinity(pairwise_similarity(t["patch"], t["frame"]), TRACKER_TEMPERATURE)
        return (alpha.float() * t["w"]).sum()

    def make_crop(device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        x = _randn(device, dtype, B, C, F, F)
        return {"x": x, "theta": _thetas(device, B), "w": _randn(device, torch.float32, B, C, P, P)}

    def run_crop(t: dict[str, torch.Tensor]) -> torch.Tensor:
        return (affine_crop(t["x"], t["theta"], (P, P)).float() * t["w"]).sum()

    def make_inlier(device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        affinity = torch.softmax(torch.randn(B, F * F, P, P, device=device), dim=1).to(dtype)
        return {"affinity": affinity, "theta": _thetas(device, B)}

    def run_inlier(t: dict[str, torch.Tensor]) -> torch.Tensor:
        return -inlier_score(t["affinity"], t["theta"], (F, F), (P, P)).mean()

    return [
        Case("affinity+softmax", size, "direct", make_affinity, run_affinity, ("patch", "frame")),
        Case("affine_crop", size, "direct", make_crop, run_crop, ("x", "theta")),
        Case("inlier_score", size, "direct", make_inlier, run_inlier, ("affinity", "theta")),
    ]


def propagation_cases(s: dict, chunk: int) -> list[Case]:
    (h, w), T, C, k, D = s["prop_hw"], s["context"], s["prop_channels"], s["k"], s["labels"]
    N, M = h * w, T * h * w
    size = f"N{N} M{M} C{C}"

    def make(device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return {
            "query": _randn(device, dtype, 1, N, C),
            "keys": _randn(device, dtype, 1, M, C),
            "labels": torch.rand(1, M, D, device=device),
            "w": _randn(device, torch.float32, 1, N, D),
            "w_nn": _randn(device, torch.float32, 1, N, C),
        }

    def topk_direct(t: dict[str, torch.Tensor]) -> torch.Tensor:
        weights, index = topk_affinity(t["query"], t["keys"], k, PROP_TEMPERATURE)
        return (propagate(weights, index, t["labels"]) * t["w"]).sum()

    def topk_chunked(t: dict[str, torch.Tensor]) -> torch.Tensor:
        weights, index = chunked_topk_affinity(t["query"], t["keys"], k, PROP_TEMPERATURE, chunk_size=chunk)
        return (propagate(weights, index, t["labels"]) * t["w"]).sum()

    def snn_direct(t: dict[str, torch.Tensor]) -> torch.Tensor:
        return (soft_nearest_neighbour(t["query"], t["keys"], PROP_TEMPERATURE)[0].float() * t["w_nn"]).sum()

    def snn_chunked(t: dict[str, torch.Tensor]) -> torch.Tensor:
        nn = chunked_soft_nearest_neighbour(t["query"], t["keys"], PROP_TEMPERATURE, chunk_size=chunk)
        return (nn.float() * t["w_nn"]).sum()

    grads = ("query", "keys")
    return [
        Case(f"topk{k}+propagate", size, "direct", make, topk_direct, grads),
        Case(f"topk{k}+propagate", size, f"chunk {chunk}", make, topk_chunked, grads),
        Case("soft_nn", size, "direct", make, snn_direct, grads),
        Case("soft_nn", size, f"chunk {chunk}", make, snn_chunked, grads),
    ]


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(err).lower()


def _median_ms(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _extra_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / MIB


def measure(case: Case, device: torch.device, dtype: torch.dtype, warmup: int, repeats: int) -> Result:
    result = Result(case.name, case.size, case.mode, str(dtype).removeprefix("torch."))
    try:
        inputs = case.make(device, dtype)
        result.inputs_mib = sum(t.numel() * t.element_size() for t in inputs.values()) / MIB
        for name in case.grads:
            inputs[name].requires_grad_(True)

        def forward() -> None:
            with torch.no_grad():
                case.run(inputs)

        def forward_backward() -> None:
            for name in case.grads:
                inputs[name].grad = None
            case.run(inputs).backward()

        result.fwd_ms = _median_ms(forward, device, warmup, repeats)
        result.fwd_extra_mib = _extra_mib(forward, device)
        result.fwd_bwd_ms = _median_ms(forward_backward, device, warmup, repeats)
        result.fwd_bwd_extra_mib = _extra_mib(forward_backward, device)
    except (RuntimeError, MemoryError) as err:
        if not _is_oom(err):
            raise
        result.status = "OOM"
    finally:
        inputs = None
        free_memory(device)
    return result


def _cell(value: float | None, status: str) -> str:
    if value is None:
        return "OOM" if status == "OOM" else "-"
    return f"{value:,.2f}"


def print_table(results: list[Result], device: torch.device) -> None:
    header = ("case", "size", "mode", "dtype", "fwd ms", "fwd+bwd ms", "fwd MiB", "fwd+bwd MiB")
    rows = [
        (
            r.case,
            r.size,
            r.mode,
            r.dtype,
            _cell(r.fwd_ms, r.status),
            _cell(r.fwd_bwd_ms, r.status),
            _cell(r.fwd_extra_mib, r.status),
            _cell(r.fwd_bwd_extra_mib, r.status),
        )
        for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for i, row in enumerate([header, *rows]):
        print(
            "  ".join(
                str(x).rjust(wd) if j >= 4 else str(x).ljust(wd)
                for j, (x, wd) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * wd for wd in widths))
    if device.type == "cuda":
        print(
            "MiB: peak memory above the inputs (torch.cuda.max_memory_allocated - memory_allocated before)."
        )
    else:
        print("CPU: times only; memory is not measured.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"]
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke test that runs in seconds on CPU"
    )
    parser.add_argument("--json", default="bench/out/core.json", help="where to write the results (JSON)")
    parser.add_argument(
        "--chunk", type=int, default=None, help="query rows per chunk (default 1024; quick 64)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2; quick 1)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed runs, median kept (default 5; quick 3)"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible; use --device cpu")
    device = torch.device(args.device)
    sizes = QUICK if args.quick else FULL
    chunk = args.chunk or (64 if args.quick else 1024)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    if device.type == "cpu" and not args.quick:
        print("warning: full sizes on CPU take minutes per propagation case; --quick is the CPU check")

    cases = cycletime_cases(sizes) + propagation_cases(sizes, chunk)
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        for case in cases:
            results.append(measure(case, device, dtype, warmup, repeats))
            print(f"done: {case.name} {case.mode} {dtype}", file=sys.stderr, flush=True)
    print_table(results, device)

    meta = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "cpu_threads": torch.get_num_threads(),
        "quick": args.quick,
        "sizes": sizes,
        "chunk": chunk,
        "warmup": warmup,
        "repeats": repeats,
        "memory": "peak above inputs, MiB (CUDA only)",
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
