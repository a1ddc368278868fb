"""Per-sequence DAVIS-2016 val J&F of this folder's runs: `python docs/results/gpu-2026-12-05/table.py`.

Reads the evaluations' results.json and, for the trainer's own final evaluation (the exported weights read
through the projection), its log's per-sequence lines."""

import json
import re
from pathlib import Path

HERE = Path(__file__).parent
A, B, C = HERE / "call1_precise_bn", HERE / "call2_batch64_s0_s5", HERE / "call3_batch64_s3_s4"
SEQ = ["blackswan", "car-shadow", "dog", "kite-surf", "drift-chicane"]


def from_json(path: Path) -> dict[str, float]:
    davis = json.loads(path.read_text())["davis"]
    return {s: davis["sequences"][s]["J&F"] for s in SEQ} | {"overall": davis["overall"]["J&F"]}


def from_log(path: Path) -> dict[str, float]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.search(r"cycletime.evaluate: (\S+): J [\d.]+ F [\d.]+ J&F ([\d.]+)", line)
        if m and m.group(1) in SEQ:
            out[m.group(1)] = float(m.group(2))
        m = re.search(r"evaluation at step \d+: .*'davis/JF': ([\d.]+)", line)
        if m:
            out["overall"] = float(m.group(1))
    return out


rows = [
    ("Lab colour", from_json(A / "ev_lab/results.json")),
    ("random init, projection (evaluator default)", from_json(A / "ev_random_r50/results.json")),
    ("random init, res4", from_json(A / "ev_random_r50_trunk/results.json")),
]
for s in (0, 3, 4, 5):
    rows += [
        (
            f"batch 32 s{s}, projection, training's BN statistics",
            from_json(A / f"ev_runningbn_pbn_s{s}/results.json"),
        ),
        (f"batch 32 s{s}, projection, precise_bn (exported)", from_log(A / f"train_pbn_s{s}.log")),
        (f"batch 32 s{s}, res4, precise_bn", from_json(A / f"ev_trunk_pbn_s{s}/results.json")),
    ]
for folder, s in ((B, 0), (C, 3), (C, 4), (B, 5)):
    rows += [
        (f"batch 64 s{s}, projection (exported)", from_log(folder / f"train_b64_s{s}.log")),
        (f"batch 64 s{s}, res4", from_json(folder / f"ev_trunk_b64_s{s}/results.json")),
    ]
print("| weights, reading | " + " | ".join(SEQ) + " | overall |")
print("|---|" + "---:|" * (len(SEQ) + 1))
for name, v in rows:
    print(f"| {name} | " + " | ".join(f"{v[s]:.3f}" for s in SEQ) + f" | {v['overall']:.3f} |")
