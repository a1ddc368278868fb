"""`make demo`: the main job end to end on generated data, with nothing to set up.

1. Generate a small dataset of moving-texture videos (training) and a held-out set with masks in the
   DAVIS layout (evaluation), unless they are already there.
2. Train the smoke CycleTime config through the DeepSpeed launcher: every GPU of this machine, or
   one CPU process over gloo where there is none.
3. The trainer evaluates label propagation (J&F) on the held-out set at the end and logs everything
   to MLflow (sqlite:///mlflow.db unless MLFLOW_TRACKING_URI says otherwise).
4. Print the run id, its figures, and the command that opens the MLflow UI.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from train.config import SyntheticConfig, load_config
from train.local_launch import deepspeed_launcher, free_port
from train.log_setup import setup_logging
from train.tracking import tracking_uri

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs/smoke/cycletime.yaml"
EVAL_SET = SyntheticConfig(
    kind="sprites", videos=8, frames=24, width=160, height=128, codec="h264", seed=1234
)
log = logging.getLogger("demo")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(SMOKE), help="config to train (default: the CycleTime smoke)")
    parser.add_argument(
        "--gpus", type=int, default=None, help="processes to launch (default: all GPUs, or 1)"
    )
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for train/run.py")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    from train.data.synthetic import generate_dataset

    eval_root = Path("data/synthetic/sprites-eval")
    generate_dataset(EVAL_SET, eval_root, davis=True)
    run_name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    gpus = args.gpus or max(torch.cuda.device_count(), 1)
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = "cpu"
    # One list for the launch and for the report's config, so a user override wins in both.
    # A run directory of its own: the smoke config's shared one would make a second demo resume the first
    # (already finished) run and train nothing.
    overrides = [
        f"cycletime.eval.davis={eval_root / 'davis'}",
        f"trainer.run_dir=runs/{run_name}",
        *args.overrides,
    ]
    command = [
        deepspeed_launcher(),
        "--num_gpus",
        str(gpus),
        "--master_port",
        str(free_port()),
        str(REPO / "train/run.py"),
        "--config",
        args.config,
        f"tracking.run_name={run_name}",
        *overrides,
    ]
    log.info("training on %s: %s", "GPU" if torch.cuda.is_available() else "CPU", " ".join(command))
    start = time.monotonic()
    code = subprocess.call(command, env=env)
    log.info("training finished with exit code %d after %.0f s", code, time.monotonic() - start)
    if code != 0:
        return code
    cfg = load_config(args.config, overrides)
    return _report(cfg, run_name)


def _report(cfg, run_name: str) -> int:
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg.tracking)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = (
        client.search_runs([experiment.experiment_id], f"tags.mlflow.runName = '{run_name}'")
        if experiment
        else []
    )
    if not runs:
        log.error("no MLflow run named %s in %s", run_name, uri)
        return 1
    run = runs[0]
    loss = client.get_metric_history(run.info.run_id, "loss")
    metrics = run.data.metrics
    lines = [
        f"MLflow run {run.info.run_id} ({run_name}), status {run.info.status}",
        f"  loss {loss[0].value:.4f} (step {loss[0].step}) -> {loss[-1].value:.4f} (step {loss[-1].step})"
        if loss
        else "  no loss logged",
        f"  throughput {metrics.get('clips_per_s_per_gpu', float('nan')):.2f} clips/s per process",
    ]
    scores = {k: v for k, v in metrics.items() if k.startswith("eval_")}
    if scores:
        lines.append(
            "  label propagation on the held-out set: "
            + ", ".join(f"{k[5:]} {v:.3f}" for k, v in scores.items())
            + f" (raw Lab colour baseline: davis/JF {_lab_baseline(cfg):.3f})"
        )
    lines.append(
        f"  browse: mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000 (launch/mlflow_ui.sh)"
    )
    print("\n".join(lines), flush=True)
    return 0


def _lab_baseline(cfg) -> float:
    """J&F of the raw-colour baseline on the same held-out set and settings: what to read J&F against."""
    from cycletime.encoders import LabEncoder
    from cycletime.evaluate import evaluate_davis

    results = evaluate_davis(LabEncoder(), cfg.method_cfg.eval.davis, cfg.method_cfg.eval, None, "cpu")
    return results["overall"]["J&F"]


if __name__ == "__main__":
    sys.exit(main())
