"""Throughput and memory as GPUs and nodes are added: the real trainer, launched as users launch it.

    python bench/scaling.py --config configs/cycletime.yaml --data DIR --gpus 1,2 --nodes 2x1 --zero 0,2
    python bench/scaling.py --config configs/tcc.yaml --data DIR --gpus 1,2,4,8 --nodes 2x4 --zero 0,1,2,3

Each configuration is one `deepspeed` launch of train/run.py (bf16 unless overridden) for `--steps`
steps with its own MLflow run: `--gpus N` is one launcher with N processes; `--nodes MxG` is M launchers
with `--no_ssh` on this machine, G processes (and G GPUs) each, as separate nodes would run. Read back
from MLflow: clips/s per GPU (median of the log windows after the first), peak GPU memory per GPU
and the data-wait fraction. Scaling efficiency = total clips/s / (GPUs x the 1-GPU clips/s of the same
ZeRO stage). On a CPU machine the same runs use gloo processes instead of GPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from bench.common import REPO, machine, table, write_json
from train.local_launch import deepspeed_launcher, free_port

# The launcher beside this interpreter (a venv), else the one on PATH (e.g. a --target install).
DEEPSPEED = deepspeed_launcher()


def launch(name: str, nodes: int, per_node: int, zero: int, args: argparse.Namespace, work: Path) -> int:
    """Run one configuration to completion; returns the exit code (its log is work/<name>.log)."""
    train = [
        str(REPO / "train/run.py"),
        "--config",
        str(Path(args.config).resolve()),
        f"data.root={args.data}",
        f"trainer.steps={args.steps}",
        f"trainer.log_every={args.log_every}",
        f"trainer.ckpt_every={10 * args.steps}",
        f"trainer.zero_stage={zero}",
        f"trainer.run_dir={work / name}",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        f"tracking.run_name={name}",
        "tracking.system_metrics=false",
        *args.overrides,
    ]
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    cuda = torch.cuda.is_available()
    if not cuda:
        env["DS_ACCELERATOR"] = "cpu"
    port = str(free_port())
    with open(work / f"{name}.log", "w") as log:
        if nodes == 1:
            command = [DEEPSPEED, "--num_gpus", str(per_node), "--master_port", port, *train]
            return subprocess.call(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        hostfile = work / f"{name}.hosts"
        # On one machine every simulated node sees all its GPUs: each node's slots are all of them
        # and --include gives node i its own ones (slots=G would not hold the indexes of node 1..).
        slots = nodes * per_node if cuda else per_node
        hostfile.write_text("".join(f"node{i} slots={slots}\n" for i in range(nodes)))
        include = []
        if cuda:  # node i owns GPUs i*G .. i*G+G-1, as on separate machines
            spec = "@".join(
                f"node{i}:" + ",".join(str(i * per_node + g) for g in range(per_node)) for i in range(nodes)
            )
            include = ["--include", spec]
        procs = [
            subprocess.Popen(
                [
                    DEEPSPEED,
                    "--hostfile",
                    str(hostfile),
                    *include,
                    "--no_ssh",
                    "--node_rank",
                    str(i),
                    "--master_addr",
                    "127.0.0.1",
                    "--master_port",
                    port,
                    *train,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=work,
            )
            for i in range(nodes)
        ]
        return max(p.wait() for p in procs)


def read_run(name: str, work: Path) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cyclecorr")
    (run,) = client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{name}'")

    def history(key: str) -> list[float]:
        return [
            m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        ]

    speed = history("clips_per_s_per_gpu")
    memory = history("gpu_mem_peak_gib")
    wait = history("data_wait_frac")
    steady = speed[1:] or speed
    return {
        "clips_per_s_per_gpu": statistics.median(steady),
        "peak_gib_per_gpu": max(memory) if memory else None,
        "data_wait": statistics.median(wait[1:] or wait),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs/cycletime.yaml"))
    parser.add_argument("--data", required=True, help="training videos (e.g. DAVIS-2016 train)")
    parser.add_argument("--gpus", default="1,2", help="single-node GPU counts, comma-separated")
    parser.add_argument("--nodes", default="", help="simulated multi-node layouts NODESxGPUS, e.g. 2x1,2x4")
    parser.add_argument("--zero", default="2", help="ZeRO stages, comma-separated")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--work", default=None, help="folder for logs, runs and MLflow (default: a temp dir)")
    parser.add_argument("--json", default=None)
    parser.add_argument("overrides", nargs="*", help="config overrides (default adds trainer.precision=bf16)")
    args = parser.parse_args(argv)
    if not any(o.startswith("trainer.precision=") for o in args.overrides):
        args.overrides.append(
            "trainer.precision=bf16" if torch.cuda.is_available() else "trainer.precision=fp32"
        )
    work = Path(args.work or tempfile.mkdtemp(prefix="scaling-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    layouts = [(1, int(g)) for g in args.gpus.split(",") if g]
    layouts += [tuple(int(x) for x in n.split("x")) for n in args.nodes.split(",") if n]
    rows = []
    for zero in (int(z) for z in args.zero.split(",")):
        for nodes, per_node in layouts:
            name = f"z{zero}-{nodes}x{per_node}"
            code = launch(name, nodes, per_node, zero, args, work)
            row = {
                "layout": f"{nodes} node x {per_node}" if nodes > 1 else f"{per_node} GPU",
                "zero": zero,
                "gpus": nodes * per_node,
                "exit": code,
            }
            if code == 0:
                row |= read_run(name, work)
                row["clips_per_s"] = row["clips_per_s_per_gpu"] * row["gpus"]
            rows.append(row)
            print(f"{name}: exit {code}", flush=True)
    for row in rows:
        single = next(
            (r for r in rows if r["zero"] == row["zero"] and r["gpus"] == 1 and "clips_per_s" in r), None
        )
        if single and "clips_per_s" in row:
            row["speedup"] = row["clips_per_s"] / single["clips_per_s"]
            row["efficiency"] = row["speedup"] / row["gpus"]
    print(
        f"{Path(args.config).name} on {machine(torch.device('cuda' if torch.cuda.is_available() else 'cpu'))}"
    )
    cols = [
        ("layout", "layout", "s"),
        ("zero", "ZeRO", "d"),
        ("clips_per_s_per_gpu", "clips/s/GPU", ".1f"),
        ("clips_per_s", "clips/s", ".1f"),
        ("speedup", "x 1 GPU", ".2f"),
        ("efficiency", "efficiency", ".1%"),
        ("peak_gib_per_gpu", "peak GiB/GPU", ".1f"),
        ("data_wait", "data wait", ".1%"),
        ("exit", "exit", "d"),
    ]
    print(table(rows, cols))
    write_json(
        args.json, {"config": args.config, "overrides": args.overrides, "work": str(work), "rows": rows}
    )
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
