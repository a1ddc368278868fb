"""What CycleTime's tracker has learned: its losses on real clips against clips whose context frames come
from another video.

    python bench/tracker.py --run runs/<name> [--data DIR] [--batches 8] [--batch 8] [--json OUT]
    python bench/tracker.py --config configs/cycletime.yaml --data DIR      # random initialisation

For each batch the losses of the run's objective are computed twice on the same targets and patches:
with each clip's own context frames, and with the context frames of the next clip in the batch (another
video, rolled by one). A tracker that follows what the patch shows does much worse on the mismatched
context; one that only needs *where* the patch was (features that encode absolute position, so that
"the same place" in any frame cycles back exactly) scores about the same on both. The ratio
mismatched / real of the cycle loss is printed per run: near 1 is that shortcut.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from bench.common import machine, table, write_json
from core.runfiles import load_state_dict_strict
from train.config import load_config
from train.data.loader import build_loader
from train.methods import load_method


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="training run directory (config.yaml, final/weights.pt)")
    parser.add_argument(
        "--config", default=None, help="config without trained weights: random initialisation"
    )
    parser.add_argument("--data", default=None, help="folder of videos (default: the config's data.root)")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", default=None)
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    if (args.run is None) == (args.config is None):
        parser.error("give --run RUN_DIR or --config FILE (one of them)")
    config = Path(args.run) / "config.yaml" if args.run else Path(args.config)
    overrides = [*args.overrides, f"data.batch_size={args.batch}", "data.generate=null"]
    if args.data:
        overrides.append(f"data.root={args.data}")
    cfg = load_config(str(config), overrides)
    if cfg.method != "cycletime":
        parser.error(f"{config} trains {cfg.method}; this diagnostic is CycleTime's")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec, mcfg = load_method(cfg.method), cfg.method_cfg
    torch.manual_seed(0)
    model = spec.build_model(mcfg, cfg.data.crop)
    if args.run:
        weights = Path(args.run) / "final" / "weights.pt"
        state = torch.load(weights, map_location="cpu", weights_only=True)
        load_state_dict_strict(model, state, f"the CycleTime model of {args.run}")
    if not mcfg.tracks:
        parser.error(f"{config} trains no tracker (every tracker loss weight is 0)")
    model.to(device).train()  # the training objective's own BatchNorm mode
    generator = torch.Generator(device=device).manual_seed(0)
    loader = build_loader(cfg.data, spec.clip_spec(mcfg), rank=0, world_size=1, local_rank=0, device=device)
    sums: dict[str, dict[str, float]] = {"real": {}, "mismatched": {}}
    batches = iter(loader)
    with torch.no_grad():
        for _ in range(args.batches):
            inputs = spec.prepare(next(batches), mcfg, generator)
            shuffled = dict(inputs, context=inputs["context"].roll(1, dims=0))
            for name, case in (("real", inputs), ("mismatched", shuffled)):
                _, parts = spec.loss(spec.forward(model, case), case, mcfg)
                for key, value in parts.items():
                    sums[name][key] = sums[name].get(key, 0.0) + float(value) / args.batches
    loader.close()
    keys = [k for k in ("cycle", "skip", "inlier") if k in sums["real"]]
    rows = [{"context": name, **sums[name]} for name in sums]
    rows.append(
        {"context": "mismatched / real", **{k: sums["mismatched"][k] / sums["real"][k] for k in keys}}
    )
    print(f"# {machine(device)}; {args.run or 'random init'}; {args.batches} batches of {args.batch}")
    print(table(rows, [("context", "context", "s"), *((k, k, ".4f") for k in keys)]))
    if args.json:
        write_json(args.json, {"run": args.run, "config": str(config), "losses": sums})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
