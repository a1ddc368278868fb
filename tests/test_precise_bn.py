"""`trainer.precise_bn`: BatchNorm statistics become the plain average over the most recent training
batches for the weights that are exported, without touching the parameters or the training's data and
random streams."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_training import tiny_cycletime_config, train_in_process

from train.config import ConfigError
from train.precise_bn import RecentBatches, recalibrate
from train.trainer import Trainer


def test_recalibrate_gives_the_plain_average_and_puts_mode_and_momentum_back() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
    model.eval()
    bn = model[1]
    g = torch.Generator().manual_seed(0)
    batches = [{"x": torch.randn(4, 2, 5, 5, generator=g) * (i + 1) + i} for i in range(3)]
    recent = RecentBatches(2)
    for batch in batches:
        recent.add(batch)  # only the last two are kept
    assert len(recent) == 2

    used = recalibrate(model, recent, lambda batch: model(batch["x"]))

    assert used == 2
    with torch.no_grad():
        outs = [model[0](b["x"]) for b in batches[1:]]
    means = torch.stack([o.mean((0, 2, 3)) for o in outs])
    variances = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outs])
    torch.testing.assert_close(bn.running_mean, means.mean(0))
    torch.testing.assert_close(bn.running_var, variances.mean(0))
    assert int(bn.num_batches_tracked) == 2
    assert bn.momentum == 0.1 and not model.training
    with pytest.raises(ValueError, match="at least one batch"):
        RecentBatches(0)


@pytest.mark.slow
def test_a_run_exports_recalibrated_statistics_and_the_same_parameters(tmp_path: Path) -> None:
    over = ("trainer.steps=6", "cycletime.eval.davis=null")
    plain = Trainer(tiny_cycletime_config(tmp_path, "plain", *over))
    assert train_in_process(plain) == 0
    plain.loader.close()
    calibrated = Trainer(tiny_cycletime_config(tmp_path, "pbn", *over, "trainer.precise_bn=2"))
    assert train_in_process(calibrated) == 0
    calibrated.loader.close()

    a = torch.load(tmp_path / "plain/final/weights.pt", weights_only=True)
    b = torch.load(tmp_path / "pbn/final/weights.pt", weights_only=True)
    assert a.keys() == b.keys()
    counts = [k for k in a if k.endswith("num_batches_tracked")]
    stats = [k for k in a if k.endswith(("running_mean", "running_var"))]
    assert counts and stats
    # The recent batches are references: the training's data, patches and updates are those of the
    # plain run, so every parameter is identical.
    for key in a.keys() - set(counts) - set(stats):
        assert torch.equal(a[key], b[key]), key
    # Each BatchNorm layer now counts the forwards of exactly the last 2 batches (6 in training).
    for key in counts:
        assert int(b[key]) * 6 == int(a[key]) * 2, key
    assert any(not torch.equal(a[k], b[k]) for k in stats)


def test_precise_bn_is_refused_under_zero_3(tmp_path: Path) -> None:
    cfg = tiny_cycletime_config(tmp_path, "run", "trainer.precise_bn=2", "trainer.zero_stage=3")
    with pytest.raises(ConfigError, match="precise_bn"):
        Trainer(cfg)


@pytest.mark.slow
def test_with_ema_both_exports_get_statistics_of_their_own_weights(tmp_path: Path) -> None:
    over = ("trainer.steps=4", "trainer.ema=0.5", "trainer.precise_bn=2", "cycletime.eval.davis=null")
    trainer = Trainer(tiny_cycletime_config(tmp_path, "run", *over))
    assert train_in_process(trainer) == 0
    trainer.loader.close()
    average = torch.load(tmp_path / "run/final/weights.pt", weights_only=True)
    live = torch.load(tmp_path / "run/final/weights_live.pt", weights_only=True)
    counts = [k for k in average if k.endswith("num_batches_tracked")]
    for key in counts:  # both recomputed over the same 2 recent batches
        assert int(average[key]) == int(live[key]) > 0, key
    means = [k for k in average if k.endswith("running_mean")]
    assert any(not torch.equal(average[k], live[k]) for k in means)  # measured with different weights
