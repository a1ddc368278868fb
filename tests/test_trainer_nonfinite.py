"""Non-finite losses: skipped and counted, the run stops after `trainer.max_nonfinite` in a row, and
the last good checkpoint stays the one a relaunch resumes from (never one written after a NaN)."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import pytest
import torch

from train import checkpoint
from train.config import load_config
from train.trainer import EXIT_NONFINITE, Trainer

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _train_with_nan_from_step(tmp_path: Path, first_nan_step: int, *overrides: str) -> tuple[int, Trainer]:
    cfg = load_config(
        REPO / "configs/smoke/cycletime.yaml",
        [
            f"data.root={tmp_path / 'videos'}",
            "data.generate.videos=2",
            "data.generate.frames=24",
            "data.batch_size=2",
            "trainer.precision=fp32",
            "trainer.steps=8",
            "trainer.ckpt_every=2",
            "trainer.log_every=1",
            "trainer.max_nonfinite=2",
            f"trainer.run_dir={tmp_path / 'run'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.system_metrics=false",
            *overrides,
        ],
    )
    trainer = Trainer(cfg)
    real_loss = trainer.spec.loss

    def loss_nan_later(outputs, inputs, mcfg):
        total, parts = real_loss(outputs, inputs, mcfg)
        nan = trainer.state.step + 1 >= first_nan_step  # the step being computed, counted from 1
        return (total * float("nan"), parts) if nan else (total, parts)

    trainer.spec = dataclasses.replace(trainer.spec, loss=loss_nan_later)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return trainer.train(), trainer
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def test_skipped_nonfinite_steps_are_counted_then_stop_without_a_new_checkpoint(tmp_path: Path) -> None:
    code, trainer = _train_with_nan_from_step(tmp_path, 3)
    assert code == EXIT_NONFINITE
    assert trainer.state.nonfinite_total == 2 and trainer.state.step == 4  # steps 3 and 4 skipped
    ckpt = trainer.ckpt_dir
    assert checkpoint.latest_complete(ckpt) == checkpoint.tag_for(2)
    client = torch.load(next((ckpt / checkpoint.tag_for(2)).glob("*model_states.pt")), weights_only=False)
    assert all(torch.isfinite(v).all() for v in client["module"].values() if v.is_floating_point())


def test_without_skipping_a_nan_update_is_never_checkpointed(tmp_path: Path) -> None:
    code, trainer = _train_with_nan_from_step(tmp_path, 3, "trainer.skip_nonfinite=false")
    assert code == EXIT_NONFINITE
    assert trainer.state.step == 3  # seen at the log step of the NaN step
    assert checkpoint.complete_tags(trainer.ckpt_dir) == [checkpoint.tag_for(2)]
