"""The DeepSpeed config is derived from ours, with explicit clipping and precision; the LR schedule."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from train.config import load_config
from train.engine import deepspeed_config, lr_factor, resolve_precision

REPO = Path(__file__).resolve().parents[1]


def cfg_with(*overrides: str):
    return load_config(REPO / "configs/smoke/cycletime.yaml", list(overrides))


def test_batch_sizes_precision_zero_and_clipping_come_from_the_config() -> None:
    cfg = cfg_with(
        "data.batch_size=3",
        "trainer.grad_accum=2",
        "trainer.zero_stage=2",
        "trainer.grad_clip=7.5",
        "trainer.precision=bf16",
    )
    ds = deepspeed_config(cfg, world_size=4)
    assert ds["train_micro_batch_size_per_gpu"] == 3
    assert ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 3 * 2 * 4
    assert ds["gradient_clipping"] == 7.5  # explicit: DeepSpeed >= 0.19.3 would default to 1.0
    assert ds["zero_optimization"]["stage"] == 2
    assert ds["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert "bf16" not in ds and "fp16" not in ds  # fp32 master weights; autocast computes in bf16


def test_fp16_autocasts_and_fp32_does_not() -> None:
    fp16 = deepspeed_config(cfg_with("trainer.precision=fp16"), 1)
    assert fp16["torch_autocast"]["dtype"] == "float16"  # DeepSpeed adds a GradScaler: dynamic loss scaling
    assert "torch_autocast" not in deepspeed_config(cfg_with("trainer.precision=fp32"), 1)


def test_explicit_deepspeed_block_is_merged_over_the_generated_one() -> None:
    cfg = cfg_with(
        "trainer.precision=fp32",
        "deepspeed={zero_optimization: {reduce_bucket_size: 1000}, wall_clock_breakdown: true}",
    )
    ds = deepspeed_config(cfg, 1)
    assert ds["zero_optimization"]["reduce_bucket_size"] == 1000
    assert ds["zero_optimization"]["stage"] == cfg.trainer.zero_stage  # kept
    assert ds["wall_clock_breakdown"] is True


def test_lr_schedule_warmup_then_decay() -> None:
    opt = cfg_with("optim.warmup_steps=10", "optim.schedule=cosine", "optim.min_lr_ratio=0.1").optim
    factors = [lr_factor(s, opt, 110) for s in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[9:]))  # monotone decay
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)
    const = cfg_with().optim
    assert {lr_factor(s, const, 50) for s in range(50)} == {1.0}


def test_auto_precision_is_bf16_on_gpus_and_fp32_on_cpus() -> None:
    assert resolve_precision("auto", torch.device("cuda", 0)) == "bf16"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"  # explicit settings are kept
    with pytest.raises(ValueError, match="auto"):
        deepspeed_config(cfg_with("trainer.precision=auto"), 1)
