"""A run that raises mid-training (here: out of GPU memory in the loss) keeps what it did: the MLflow run
ends as FAILED with every metric logged before the crash, the log names the last completed step, what to
lower and the checkpoint a relaunch resumes from, and `train/run.py` exits with its own code instead of a
traceback."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from tiny_training import REPO, tiny_cycletime_config, train_in_process

from train import checkpoint
from train.run import main
from train.trainer import EXIT_OUT_OF_MEMORY, Trainer

pytestmark = pytest.mark.slow

OOM_TEXT = "CUDA out of memory. Tried to allocate 564.00 MiB."  # torch's own wording, from an H200 run


def test_out_of_memory_mid_run_ends_mlflow_run_failed_with_its_metrics(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_cycletime_config(tmp_path, "run", "trainer.steps=8", "trainer.ckpt_every=2")
    trainer = Trainer(cfg)
    real_loss = trainer.spec.loss

    def loss_out_of_memory_at_step_4(outputs, inputs, mcfg):
        if trainer.state.step + 1 == 4:
            raise torch.OutOfMemoryError(OOM_TEXT)
        return real_loss(outputs, inputs, mcfg)

    trainer.spec = dataclasses.replace(trainer.spec, loss=loss_out_of_memory_at_step_4)
    with caplog.at_level(logging.ERROR, logger="train.trainer"), pytest.raises(torch.OutOfMemoryError):
        train_in_process(trainer)

    message = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "training failed after step 3" in message and OOM_TEXT in message
    assert "data.batch_size 2" in message and "trainer.grad_accum" in message
    assert f"resume from {checkpoint.tag_for(2)}" in message
    assert checkpoint.latest_complete(trainer.ckpt_dir) == checkpoint.tag_for(2)

    client = MlflowClient(f"sqlite:///{tmp_path / 'run'}.db")
    run = client.get_run(trainer.tracker.run_id)
    assert run.info.status == "FAILED"
    logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss"))
    assert logged == [1, 2, 3]  # every step before the crash reached the store


def test_run_py_exits_with_the_out_of_memory_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import train.trainer

    def out_of_memory(cfg):
        raise torch.OutOfMemoryError(OOM_TEXT)

    monkeypatch.setattr(train.trainer, "run_training", out_of_memory)
    config = REPO / "configs/smoke/cycletime.yaml"
    code = main(["--config", str(config), f"trainer.run_dir={tmp_path / 'run'}"])
    assert code == EXIT_OUT_OF_MEMORY
