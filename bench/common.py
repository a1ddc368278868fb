"""Shared pieces of the benchmarks: the bf16 matmul reference rate, FLOP counting, one training step of
a method through the framework's own components, timing, tables and JSON."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]


def machine(device: torch.device) -> str:
    """What ran the benchmark, for the table header and the JSON."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()}, torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    """Collect what the last case left (its engine, its tensors) and return the cached GPU memory."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bf16_matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """The dense bf16 matrix-multiply rate of this device, measured now: the MFU denominator."""
    if device.type != "cuda":
        n = 1024
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of `fn` (forward and backward as it runs them): PyTorch's counter covers matmuls and
    convolutions (the affinity einsum included); bilinear grid sampling is added at 8 FLOPs per
    output element forward and 16 backward."""
    # Bilinear sampling: 4 neighbours, a multiply and an add each, per output element and channel.
    # The counter hands custom formulas shapes, not tensors (`grad` is the gradient's shape).
    aten = torch.ops.aten
    custom = {
        # Keyed by overload packet: the counter looks formulas up by `func._overloadpacket`.
        aten.grid_sampler_2d: lambda *a, out_shape, **k: 8 * math.prod(out_shape),
        aten.grid_sampler_2d_backward: lambda grad, *a, **k: 16 * math.prod(grad),
    }
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        fn()
    return counter.get_total_flops()


@dataclasses.dataclass
class Timing:
    step_ms: float
    clips_per_s: float
    peak_gib: float | None


def time_steps(step: Callable[[], Any], device: torch.device, batch: int, warmup: int, steps: int) -> Timing:
    """Median-free wall time of `steps` steps after `warmup` (synchronised at both ends), peak memory."""
    for _ in range(warmup):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return Timing(seconds * 1e3, batch / seconds, peak)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """Rows of dicts -> a text table; columns are (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(k) is None else format(row[k], f) for k, _, f in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str | Path | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")
