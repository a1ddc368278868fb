"""Non-finite losses: skipped and counted, the run stops after `trainer.max_nonfinite` in a row, and
the last good checkpoint stays the one a relaunch resumes from (never one written after a NaN)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from tiny_training import tiny_cycletime_config, train_in_process

from train import checkpoint
from train.trainer import EXIT_NONFINITE, Trainer

pytestmark = pytest.mark.slow


def _train_with_nan_from_step(tmp_path: Path, first_nan_step: int, *overrides: str) -> tuple[int, Trainer]:
    cfg = tiny_cycletime_config(
        tmp_path,
        "run",
        "trainer.steps=8",
        "trainer.ckpt_every=2",
        "trainer.max_nonfinite=2",
        *overrides,
    )
    trainer = Trainer(cfg)
    real_loss = trainer.spec.loss

    def loss_nan_later(outputs, inputs, mcfg):
        total, parts = real_loss(outputs, inputs, mcfg)
        nan = trainer.state.step + 1 >= first_nan_step  # the step being computed, counted from 1
        return (total * float("nan"), parts) if nan else (total, parts)

    trainer.spec = dataclasses.replace(trainer.spec, loss=loss_nan_later)
    return train_in_process(trainer), trainer


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


def test_a_skipped_step_leaves_batchnorm_statistics_as_they_were(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """NaN frames make the forward write NaN into BatchNorm's running statistics before the loss is
    checked; the skip must put them back, or every later evaluation (eval-mode BatchNorm) is NaN. The
    warning names the skipped step's clips, so a bad video can be found."""
    cfg = tiny_cycletime_config(tmp_path, "run", "trainer.steps=4", "trainer.ckpt_every=100")
    trainer = Trainer(cfg)
    real_prepare = trainer.spec.prepare
    seen = {}

    def nan_frames_at_step_3(batch, mcfg, generator):
        inputs = real_prepare(batch, mcfg, generator)
        if trainer.state.step + 1 == 3:
            seen["before"] = {k: v.clone() for k, v in trainer.engine.module.named_buffers()}
            inputs = {k: v * float("nan") if k == "context" else v for k, v in inputs.items()}
        return inputs

    trainer.spec = dataclasses.replace(trainer.spec, prepare=nan_frames_at_step_3)
    bn = [m for m in trainer.engine.module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn  # the tiny model has BatchNorm, so the check below means something
    assert train_in_process(trainer) == 0
    assert trainer.state.nonfinite_total == 1 and trainer.state.step == 4
    buffers = dict(trainer.engine.module.named_buffers())
    assert all(torch.isfinite(b).all() for b in buffers.values() if b.is_floating_point())
    # Step 3's forward left no trace: num_batches_tracked advanced by step 4's forward only.
    tracked = [k for k in buffers if k.endswith("num_batches_tracked")]
    assert tracked and all(int(buffers[k]) == int(seen["before"][k]) + 1 for k in tracked)
    warning = next(
        r.getMessage() for r in caplog.records if "non-finite loss, step skipped" in r.getMessage()
    )
    assert warning.startswith("step 3: ") and "(1 skipped so far)" in warning
    assert any(f"{v.name} [" in warning for v in trainer.loader.index.videos)
