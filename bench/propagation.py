"""Label propagation cost per DAVIS sequence: seconds and peak GPU memory at 480p (CRW's protocol).

    python bench/propagation.py --davis ROOT [--weights RUN_OR_FILE | --baseline random-init]
                                [--size 480] [--context 20] [--topk 10] [--precision fp32,bf16] [--json OUT]

Each sequence is propagated from its first mask (20 context frames + the first, top-10 over all
context positions, radius 12, temperature 0.05, at `--size`), timed from the first frame read to the
last mask written, with the peak memory the evaluator records per sequence. `bf16` runs the encoder
under bf16 autocast (the affinities and top-k stay fp32). The J&F of each run is printed beside its cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from bench.common import machine, table, write_json
from cycletime.config import PropagationConfig
from cycletime.encoders import load_encoder
from cycletime.evaluate import evaluate_davis

GIB = 2**30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", required=True)
    parser.add_argument("--weights", default=None, help="a run directory or weights file")
    parser.add_argument(
        "--baseline", default=None, help="random-init or lab (default: random-init without weights)"
    )
    parser.add_argument("--config", default=None, help="model config when --weights is a file outside a run")
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--context", type=int, default=20)
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--precision", default="fp32,bf16")
    parser.add_argument("--out", default=None, help="where predictions go (default: a temp dir)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    baseline = args.baseline or (None if args.weights else "random-init")
    encoder, _ = load_encoder(args.weights, baseline, args.config)
    encoder = encoder.to(device).eval()
    cfg = PropagationConfig(davis=args.davis, size=args.size, context=args.context, topk=args.topk)
    rows, summary = [], {}
    for precision in args.precision.split(","):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32

        def encode(frames: torch.Tensor, dtype: torch.dtype = dtype) -> torch.Tensor:
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                return encoder(frames).float()

        out = Path(args.out or tempfile.mkdtemp(prefix="propagation-")) / precision
        results = evaluate_davis(encode, args.davis, cfg, out, device, overlays=False)
        for name, seq in results["sequences"].items():
            peak = seq.get("peak_cuda_allocated_bytes")  # the evaluator's info is merged into seq
            rows.append(
                {
                    "precision": precision,
                    "sequence": name,
                    "frames": seq["frames"],
                    "seconds": seq["seconds"],
                    "per_frame_ms": 1e3 * seq["seconds"] / seq["frames"],
                    "peak_gib": peak / GIB if peak else None,
                    "JF": seq.get("J&F"),
                }
            )
        mine = [r for r in rows if r["precision"] == precision]
        summary[precision] = {
            "mean_seconds": statistics.mean(r["seconds"] for r in mine),
            "max_peak_gib": max((r["peak_gib"] or 0) for r in mine),
            "J&F": results["overall"]["J&F"],
        }
    print(
        f"propagation at {args.size}p, context {args.context}+1, top-{args.topk}, {machine(device)}; "
        f"encoder {args.weights or baseline}"
    )
    print(
        table(
            rows,
            [
                ("precision", "precision", "s"),
                ("sequence", "sequence", "s"),
                ("frames", "frames", "d"),
                ("seconds", "s/seq", ".2f"),
                ("per_frame_ms", "ms/frame", ".0f"),
                ("peak_gib", "peak GiB", ".2f"),
                ("JF", "J&F", ".3f"),
            ],
        )
    )
    for precision, s in summary.items():
        print(
            f"{precision}: mean {s['mean_seconds']:.2f} s per sequence, peak {s['max_peak_gib']:.2f} GiB, "
            f"J&F {s['J&F']:.3f}"
        )
    write_json(
        args.json, {"machine": machine(device), "settings": vars(args), "rows": rows, "summary": summary}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
