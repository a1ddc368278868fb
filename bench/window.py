"""Label propagation's top-k per target frame: the windowed op against the masked full op, side by side.

    python bench/window.py [--device cuda|cpu] [--hw 60x107] [--channels 512] [--context 20]
                           [--radius 12] [--tiles 4,8,12,16] [--repeats 3] [--quick] [--json OUT]

One target frame of CRW's protocol (the evaluator's defaults: a 480p DAVIS frame at stride 8 is 60x107
cells, the first frame unrestricted plus 20 recent frames limited to cells closer than 12, top-10,
temperature 0.05) on random unit features:
- `masked full`: `core.correlation.chunked_topk_affinity` with `window_mask_fn`, the evaluator's path
  before the windowed op (scores every context cell, then masks), chunks of 2**25 // M query rows;
- `window T`: `core.correlation.local_topk_affinity` with query tiles of T x T cells (the evaluator
  uses `cycletime.propagation.QUERY_TILE`).
Printed per row: the median milliseconds per target frame, the ratio to the masked full op, and
whether its picks equal the masked full op's (indices identical, weights within 1e-5). `--quick` uses a
small grid, a check that the script runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch
import torch.nn.functional as F

from bench.common import machine, table, write_json
from core.correlation import chunked_topk_affinity, local_topk_affinity, window_mask_fn
from cycletime.propagation import strict_radius

TEMPERATURE = 0.05  # CRW's propagation temperature
TOPK = 10


def _timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up, and the output to compare
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hw", default="60x107", help="feature grid, HxW (480p DAVIS at stride 8)")
    parser.add_argument("--channels", type=int, default=512, help="512: the projection; 1024: res4")
    parser.add_argument("--context", type=int, default=20)
    parser.add_argument("--radius", type=float, default=12.0)
    parser.add_argument("--tiles", default="4,8,12,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a 12x20 grid and 64 channels: seconds on a CPU")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    h, w = (12, 20) if args.quick else tuple(int(x) for x in args.hw.split("x"))
    C = 64 if args.quick else args.channels
    S = args.context
    radius = strict_radius(args.radius)
    g = torch.Generator().manual_seed(0)
    query = F.normalize(torch.randn(h, w, C, generator=g), dim=-1).to(device)
    keys = F.normalize(torch.randn((1 + S) * h * w, C, generator=g), dim=-1).to(device)
    free, local = keys[: h * w], keys[h * w :].view(S, h, w, C)
    mask_fn = window_mask_fn(h, w, radius, frames=1 + S, unrestricted_frames=(0,), device=device)
    chunk = max(1, 2**25 // keys.shape[0])

    def full():
        return chunked_topk_affinity(
            query.view(-1, C), keys, TOPK, TEMPERATURE, "dot", chunk_size=chunk, mask_fn=mask_fn
        )

    print(f"{machine(device)}; grid {h}x{w}, {C} channels, 1 + {S} context frames, radius {args.radius}")
    base_ms, (base_w, base_i) = _timed(full, device, args.repeats)
    rows = [{"op": "masked full", "ms_per_frame": base_ms, "speedup": 1.0, "same_picks": True}]
    for tile in (int(t) for t in args.tiles.split(",")):
        ms, (wt, ix) = _timed(
            lambda tile=tile: local_topk_affinity(query, free, local, TOPK, TEMPERATURE, radius, tile=tile),
            device,
            args.repeats,
        )
        same = bool(torch.equal(ix, base_i) and torch.allclose(wt, base_w, atol=1e-5, rtol=0))
        rows.append({"op": f"window {tile}", "ms_per_frame": ms, "speedup": base_ms / ms, "same_picks": same})
    columns = [("op", "op", ""), ("ms_per_frame", "ms/frame", ",.1f"), ("speedup", "x masked full", ".2f")]
    print(table(rows, [*columns, ("same_picks", "same picks", "")]))
    if args.json:
        write_json(args.json, {"machine": machine(device), "grid": [h, w], "channels": C, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
