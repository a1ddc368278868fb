"""The trainer end to end through the real DeepSpeed launcher on CPU (gloo): 2 ranks, 2 simulated
nodes, MLflow, kill -9 and resume, SIGTERM, an unreachable tracking server.

Each run trains the smoke CycleTime config (made smaller still) on generated videos.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from train import checkpoint
from train.local_launch import deepspeed_launcher, free_port

REPO = Path(__file__).resolve().parents[1]
DEEPSPEED = deepspeed_launcher()
SMALL = [
    "data.batch_size=2",
    "data.generate.videos=4",
    "data.generate.frames=24",
    "trainer.precision=fp32",
    "trainer.log_every=2",
    "tracking.system_metrics=false",
]
STEPS = 16  # of the reference and the killed runs
pytestmark = pytest.mark.slow


def env_for(workdir: Path) -> dict[str, str]:
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def launch(workdir: Path, steps: int, *extra: str, ranks: int = 2) -> subprocess.Popen:
    command = [
        DEEPSPEED,
        "--num_gpus",
        str(ranks),
        "--master_port",
        str(free_port()),
        str(REPO / "train/run.py"),
        "--config",
        str(REPO / "configs/smoke/cycletime.yaml"),
        *SMALL,
        f"trainer.steps={steps}",
        f"trainer.run_dir={workdir / 'run'}",
        f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
        f"data.root={workdir.parent / 'videos'}",  # one generated dataset shared by the tests
        *extra,
    ]
    return subprocess.Popen(
        command,
        cwd=workdir,
        env=env_for(workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def runs_of(workdir: Path):
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("cyclecorr")
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


def last_loss(workdir: Path) -> tuple[int, float]:
    client, runs = runs_of(workdir)
    history = client.get_metric_history(runs[0].info.run_id, "loss")
    last = max(history, key=lambda m: m.step)
    return last.step, last.value


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def reference(base: Path) -> Path:
    """An uninterrupted 2-rank run of STEPS steps, checkpoints every 4."""
    workdir = base / "reference"
    workdir.mkdir()
    proc = launch(workdir, STEPS, "trainer.ckpt_every=4")
    out = finish(proc)
    assert proc.returncode == 0, out[-4000:]
    return workdir


def test_two_ranks_train_checkpoint_export_and_log_one_run(reference: Path) -> None:
    ckpt = reference / "run" / "checkpoints"
    # keep_last=3 (the default): the oldest checkpoint (step 4) was pruned.
    assert checkpoint.complete_tags(ckpt) == [checkpoint.tag_for(s) for s in (8, 12, 16)]
    assert (reference / "run" / "final" / "weights.pt").is_file()
    client, runs = runs_of(reference)
    assert len(runs) == 1  # rank 0 owns the run: not one run per rank
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["world_size"] == "2" and run.data.tags["method"] == "cycletime"
    assert run.data.params["data.batch_size"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(
        range(2, STEPS + 1, 2)
    )
    assert "clips_per_s_per_gpu" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "weights"} <= artifacts


def test_kill_9_one_rank_then_resume_matches_uninterrupted(base: Path, reference: Path) -> None:
    workdir = base / "killed"
    workdir.mkdir()
    proc = launch(workdir, STEPS, "trainer.ckpt_every=4")
    marker = workdir / "run" / "checkpoints" / checkpoint.tag_for(4) / checkpoint.COMPLETE
    deadline = time.monotonic() + 900
    while not marker.exists():
        assert proc.poll() is None, finish(proc)[-4000:]
        assert time.monotonic() < deadline, "no checkpoint at step 4"
        time.sleep(0.1)
    # Kill as soon as step 4 is saved: no fixed sleep, so a fast machine cannot finish the run
    # first (12 steps remain). Which checkpoint is then the latest depends on timing; resuming
    # from it must reproduce the reference either way.
    victim = _rank_pid(proc.pid, rank=1)
    os.kill(victim, signal.SIGKILL)
    out = finish(proc)
    assert proc.returncode != 0, out[-3000:]
    latest = checkpoint.latest_complete(workdir / "run" / "checkpoints")
    assert latest in [checkpoint.tag_for(s) for s in (4, 8, 12)], latest
    resumed_at = int(latest.rsplit("_", 1)[1])

    again = launch(workdir, STEPS, "trainer.ckpt_every=4")
    out = finish(again)
    assert again.returncode == 0, out[-4000:]
    assert "resumed from" in out and f"at step {resumed_at}" in out
    step, loss = last_loss(workdir)
    ref_step, ref_loss = last_loss(reference)
    assert step == ref_step == STEPS
    # Same data position, RNG streams and optimizer state: the same loss up to float reassociation.
    assert loss == pytest.approx(ref_loss, rel=1e-4, abs=1e-6)
    _, runs = runs_of(workdir)
    assert len(runs) == 1  # the relaunch continued the same MLflow run


def _rank_pid(launcher_pid: int, rank: int) -> int:
    """The PID of training rank `rank` among the launcher's descendants (by its RANK variable)."""
    import psutil

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in psutil.Process(launcher_pid).children(recursive=True):
            try:
                if "train/run.py" in " ".join(child.cmdline()) and child.environ().get("RANK") == str(rank):
                    return child.pid
            except psutil.Error:
                continue
        time.sleep(0.5)
    raise AssertionError(f"no process of rank {rank}")


def test_two_simulated_nodes_no_ssh(base: Path) -> None:
    workdir = base / "nodes"
    workdir.mkdir()
    env = env_for(workdir) | {"MASTER_PORT": str(free_port())}
    command = [
        str(REPO / "launch/simulate_nodes.sh"),
        "2",
        str(REPO / "configs/smoke/cycletime.yaml"),
        *SMALL,
        "trainer.steps=2",
        f"trainer.run_dir={workdir / 'run'}",
        f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
        f"data.root={base / 'videos'}",
    ]
    proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    _, runs = runs_of(workdir)
    assert len(runs) == 1 and runs[0].data.tags["world_size"] == "2"


def test_sigterm_checkpoints_and_stops_then_resumes(base: Path) -> None:
    workdir = base / "sigterm"
    workdir.mkdir()
    proc = launch(workdir, 40, "trainer.ckpt_every=100", ranks=1)
    log_seen = False
    lines = []
    for line in proc.stdout:  # wait until training runs
        lines.append(line)
        if "step 2/40" in line:
            log_seen = True
            break
    assert log_seen, "".join(lines)[-3000:]
    # As Ctrl-C or a scheduler does: the rank and the launcher are both signalled, and the launcher
    # passes a second SIGTERM on to the rank (then kills it after 30 s).
    import psutil

    rank = _rank_pid(proc.pid, rank=0)
    launcher = psutil.Process(rank).parent()  # deepspeed.launcher.launch, under the `deepspeed` runner
    os.kill(rank, signal.SIGTERM)
    for line in proc.stdout:  # the rank has taken the first signal ...
        lines.append(line)
        if "will checkpoint and stop" in line:
            break
    launcher.send_signal(signal.SIGTERM)  # ... before the launcher passes its own on
    out = "".join(lines) + finish(proc)
    assert "will checkpoint and stop" in out
    tags = checkpoint.complete_tags(workdir / "run" / "checkpoints")
    assert tags, out[-3000:]
    stopped_at = int(tags[-1].split("_")[1])
    assert 2 <= stopped_at < 40

    again = launch(workdir, 40, "trainer.ckpt_every=100", ranks=1)
    out = finish(again)
    assert again.returncode == 0, out[-4000:]
    assert f"at step {stopped_at}" in out


def test_unreachable_tracking_server_does_not_stop_training(base: Path) -> None:
    workdir = base / "no-server"
    workdir.mkdir()
    proc = launch(workdir, 2, f"tracking.uri=http://127.0.0.1:{free_port()}", "tracking.retries=0", ranks=1)
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "MLflow unavailable" in out
    assert (workdir / "run" / "final" / "weights.pt").is_file()
