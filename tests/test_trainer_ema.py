"""`trainer.ema`: the weight average follows its formula, is what the run evaluates and exports, keeps
the last step's weights beside it, and survives a checkpoint and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_training import tiny_cycletime_config, train_in_process

from train.config import ConfigError
from train.ema import WARMUP, WeightAverage
from train.trainer import Trainer


def test_the_average_follows_its_formula_and_swaps_in_and_out() -> None:
    model = torch.nn.Linear(3, 2)
    start = [p.detach().clone() for p in model.parameters()]
    ema = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()  # first update: d = min(0.5, 2 / (WARMUP + 1)) = 2 / 11
    d = min(0.5, 2 / (WARMUP + 1))
    for a, s in zip(ema.average, start, strict=True):
        torch.testing.assert_close(a, d * s + (1 - d) * (s + 1))
    live = [p.detach().clone() for p in model.parameters()]
    with ema.swapped_in():
        for p, a in zip(model.parameters(), ema.average, strict=True):
            torch.testing.assert_close(p.detach(), a)
    for p, w in zip(model.parameters(), live, strict=True):
        assert torch.equal(p.detach(), w)

    other = WeightAverage(model, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1
    for a, b in zip(other.average, ema.average, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not match"):
        WeightAverage(torch.nn.Linear(4, 2), 0.5).load_state_dict(ema.state_dict())
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, 1.0)


@pytest.mark.slow
def test_a_run_exports_the_average_and_resumes_it(tmp_path: Path) -> None:
    over = ("trainer.ema=0.9", "trainer.ckpt_every=2", "cycletime.eval.davis=null")
    first = Trainer(tiny_cycletime_config(tmp_path, "run", "trainer.steps=2", *over))
    assert train_in_process(first) == 0
    saved = [a.clone() for a in first.ema.average]
    first.loader.close()

    second = Trainer(tiny_cycletime_config(tmp_path, "run", "trainer.steps=4", *over))
    assert second.ema.updates == 2  # resumed from the step-2 checkpoint, average included
    for a, s in zip(second.ema.average, saved, strict=True):
        assert torch.equal(a, s)
    assert train_in_process(second) == 0
    second.loader.close()
    assert second.ema.updates == 4

    final = tmp_path / "run" / "final"
    averaged = torch.load(final / "weights.pt", weights_only=True)
    live = torch.load(final / "weights_live.pt", weights_only=True)
    names = [n for n, p in second.engine.module.named_parameters() if p.requires_grad]
    for name, a in zip(names, second.ema.average, strict=True):
        torch.testing.assert_close(averaged[name], a.cpu())
    assert any(not torch.equal(averaged[n], live[n]) for n in names)


def test_refused_with_zero_3(tmp_path: Path) -> None:
    cfg = tiny_cycletime_config(tmp_path, "run", "trainer.ema=0.9", "trainer.zero_stage=3")
    with pytest.raises(ConfigError, match=r"trainer\.ema"):
        Trainer(cfg)
