"""Single-GPU smoke tests (`pytest -m gpu`; skipped, and reported as skipped, without a GPU).

Each method trains from generated videos decoded by DALI on NVDEC, in bf16: the loss falls, a
relaunch resumes from the checkpoint, and MLflow holds exactly one run with the metrics.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.gpu

STEPS = {"cycletime": 60, "tcc": 60}
RUN_TIMEOUT_S = 300


def train(workdir: Path, method: str, steps: int) -> str:
    command = [
        sys.executable,
        str(REPO / "train/run.py"),
        "--config",
        str(REPO / f"configs/smoke/{method}.yaml"),
        f"trainer.steps={steps}",
        "trainer.precision=bf16",
        "trainer.log_every=20",
        f"trainer.ckpt_every={STEPS[method]}",
        "data.decoder=nvdec",
        "data.batch_size=8" if method == "cycletime" else "data.batch_size=4",
        f"data.root={workdir / 'videos'}",
        f"trainer.run_dir={workdir / 'run'}",
        f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONFAULTHANDLER"] = "1"  # a run stuck past the timeout prints every thread's stack on SIGABRT
    proc = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, _ = proc.communicate()
        pytest.fail(f"train/run.py did not finish in {RUN_TIMEOUT_S}s; its stacks:\n{out[-8000:]}")
    assert proc.returncode == 0, out[-5000:]
    return out


@pytest.mark.parametrize("method", ["cycletime", "tcc"])
def test_trains_on_nvdec_then_resumes_with_one_mlflow_run(tmp_path: Path, method: str) -> None:
    out = train(tmp_path, method, STEPS[method])
    assert "decoder nvdec" in out, out[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cyclecorr").experiment_id])
    assert len(runs) == 1
    loss = sorted((m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "loss"))
    assert loss[-1][1] < loss[0][1], loss
    assert runs[0].data.metrics["gpu_mem_peak_gib"] > 0

    out = train(tmp_path, method, STEPS[method] + 20)
    assert f"at step {STEPS[method]}" in out and "resumed from" in out
    runs = client.search_runs([runs[0].info.experiment_id])
    assert len(runs) == 1 and max(m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")) == (
        STEPS[method] + 20
    )
