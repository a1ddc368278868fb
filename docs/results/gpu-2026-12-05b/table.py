"""Per-sequence DAVIS-2016 val J&F of this folder's runs: `python docs/results/gpu-2026-12-05b/table.py`.

Baselines and the projection readings come from the evaluations' results.json; the trainer's own final
evaluation (res4 here, `cycletime.eval.features: trunk`) from its log's per-sequence lines (the last ones)."""

import json
import re
from pathlib import Path

HERE = Path(__file__).parent
SEQ = ["blackswan", "car-shadow", "dog", "kite-surf", "drift-chicane"]
LINE = re.compile(r"cycletime.evaluate: (\S+): J [\d.]+ F [\d.]+ J&F ([\d.]+)")
OVERALL = re.compile(r"evaluation at step \d+: .*'davis/JF': ([\d.]+)")


def scores(path: Path) -> dict[str, float]:
    """J&F per sequence and overall from an evaluation's results.json or a training log's last evaluation."""
    if path.suffix == ".json":
        davis = json.loads(path.read_text())["davis"]
        return {s: davis["sequences"][s]["J&F"] for s in SEQ} | {"overall": davis["overall"]["J&F"]}
    out = {}
    for line in path.read_text().splitlines():
        if (m := LINE.search(line)) and m.group(1) in SEQ:
            out[m.group(1)] = float(m.group(2))
        if m := OVERALL.search(line):
            out["overall"] = float(m.group(1))
    return out


base, r18b = HERE / "call1_baselines_oom", HERE / "call3_r18_s0_s5/r18_baselines"
rows = [
    ("Lab colour", base / "ev_lab/results.json"),
    ("ResNet-50 random init, projection", base / "ev_random_r50/results.json"),
    ("ResNet-50 random init, res4", base / "ev_random_r50_trunk/results.json"),
    ("ResNet-18 random init, projection", r18b / "ev_rand_r18_projection/results.json"),
    ("ResNet-18 random init, res4", r18b / "ev_rand_r18_trunk/results.json"),
    ("ResNet-50 b64 s0, 650 steps, res4", HERE / "call2_b64_s0/train_b64t_s0.log"),
    ("ResNet-50 b64 s0, 650 steps, projection", HERE / "call2_b64_s0/ev_projection_b64t_s0/results.json"),
]
C3, C4 = "call3_r18_s0_s5", "call4_r18_s3_s4"
for call, s in ((C3, 0), (C4, 3), (C4, 4), (C3, 5)):
    rows += [
        (f"ResNet-18 b64 s{s}, 650 steps, res4", HERE / call / f"train_r18_s{s}.log"),
        (f"ResNet-18 b64 s{s}, 650 steps, projection", HERE / call / f"ev_projection_r18_s{s}/results.json"),
    ]
for s in (1, 2):
    log = HERE / f"call5_r18_300_s1_s2/train_r18_300_s{s}.log"
    rows.append((f"ResNet-18 b64 s{s}, 300 steps, res4", log))
print("| weights, reading | " + " | ".join(SEQ) + " | overall |")
print("|---|" + "---:|" * (len(SEQ) + 1))
for name, path in rows:
    v = scores(path)
    print(f"| {name} | " + " | ".join(f"{v[s]:.3f}" for s in SEQ) + f" | {v['overall']:.3f} |")
