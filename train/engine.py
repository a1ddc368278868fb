"""DeepSpeed from the config tree: the generated DeepSpeed config, optimizer, LR schedule, engine.

Each setting lives once in our config; `deepspeed_config` derives DeepSpeed's JSON from it and an
explicit `deepspeed:` block may extend or override the result (merged key by key).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from core.backbones import set_channels_last
from core.config import merge
from train.config import Config, OptimConfig
from train.local_launch import free_port

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
AUTOCAST_NAMES = {"bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (from the launcher's environment)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def multi_rank() -> bool:
    """Whether this process is one of several in a process group (so collectives are needed)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank; nothing to wait for in a group of one."""
    if multi_rank():
        dist.barrier()


def init_distributed() -> DistInfo:
    """Join the process group the launcher described (NCCL on GPUs, gloo on CPUs); single process ok."""
    import deepspeed

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if "MASTER_ADDR" not in os.environ:  # a plain `python train/run.py`: a group of one
        # An in-process store, not a TCP one: a port picked here can be taken by another process
        # before the store binds it (seen in CI while DeepSpeed compiled its CPU comm op for 90 s).
        # MASTER_ADDR/PORT are still set because DeepSpeed's CPU shm op names its segment after them.
        port = os.environ.get("MASTER_PORT") or str(free_port())
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        if not torch.distributed.is_initialized():
            store = torch.distributed.HashStore()
            torch.distributed.init_process_group(backend, store=store, rank=0, world_size=1)
    deepspeed.init_distributed(dist_backend=backend, verbose=False)
    return DistInfo(rank, world, local_rank, device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> bf16 on a GPU, fp32 on a CPU (most CPUs emulate bf16: measured ~20x slower here)."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" else "fp32"


def deepspeed_config(cfg: Config, world_size: int) -> dict[str, Any]:
    """DeepSpeed's config derived from ours (precision already resolved), then `cfg.deepspeed` over it."""
    t = cfg.trainer
    if t.precision == "auto":
        raise ValueError("resolve trainer.precision=auto with resolve_precision() first")
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": cfg.data.batch_size * t.grad_accum * world_size,
        # DeepSpeed >= 0.19.3 clips at 1.0 unless told otherwise: always say it explicitly.
        "gradient_clipping": float(t.grad_clip),
        "zero_optimization": {
            "stage": t.zero_stage,
            "overlap_comm": t.zero_stage > 0,
            "contiguous_gradients": t.zero_stage > 0,
        },
        # torch.optim.Adam/AdamW are on DeepSpeed's ZeRO list; SGD is not, but works.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,  # we log ourselves
        "wall_clock_breakdown": False,
    }
    if t.precision != "fp32":
        # Mixed precision as torch AMP: fp32 master weights, bf16/fp16 compute under autocast. DeepSpeed's
        # own bf16/fp16 modes cast every parameter (BatchNorm's too) but not the buffers, which breaks
        # BatchNorm; under autocast it stays fp32. fp16 gets dynamic loss scaling (a GradScaler, per
        # ZeRO stage); gradients of Linear/Conv layers are reduced in the low precision.
        ds["torch_autocast"] = {"enabled": True, "dtype": AUTOCAST_NAMES[t.precision]}
    return merge(ds, cfg.deepspeed)


def build_optimizer(
    params: list[nn.Parameter], opt: OptimConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The torch optimizer DeepSpeed wraps (fused kernels on CUDA, foreach elsewhere)."""
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay, **fast)
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay, **fast)
    return torch.optim.SGD(
        params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay, foreach=True
    )


def lr_factor(step: int, opt: OptimConfig, total_steps: int) -> float:
    """Multiplier of `opt.lr` at optimizer step `step` (0-based): linear warm-up, then the decay."""
    if opt.warmup_steps and step < opt.warmup_steps:
        return (step + 1) / opt.warmup_steps
    if opt.schedule == "constant":
        return 1.0
    span = max(1, total_steps - opt.warmup_steps)
    progress = min(1.0, (step - opt.warmup_steps) / span)
    if opt.schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        decay = 1 - progress
    return opt.min_lr_ratio + (1 - opt.min_lr_ratio) * decay


def prepare_model(model: nn.Module, cfg: Config, device: torch.device) -> nn.Module:
    """The model as the engine gets it: channels_last on GPUs, compiled when `trainer.compile` (in place:
    parameter names, so checkpoints and exported weights, stay the same)."""
    if cfg.trainer.channels_last and device.type == "cuda":
        set_channels_last(model)
    if cfg.trainer.compile:
        model.compile()
    return model


def build_engine(model: nn.Module, cfg: Config, dist: DistInfo) -> Any:
    """Wrap `model` in a DeepSpeed engine with our optimizer and schedule."""
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg.optim, dist.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.optim, cfg.trainer.steps)
    )
    ds_cfg = deepspeed_config(cfg, dist.world_size)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_cfg, dist_init_required=False
    )
    log.info(
        "DeepSpeed: %s, ZeRO stage %d, micro-batch %d x accumulation %d x %d ranks, clip %.3g",
        cfg.trainer.precision,
        cfg.trainer.zero_stage,
        cfg.data.batch_size,
        cfg.trainer.grad_accum,
        dist.world_size,
        cfg.trainer.grad_clip,
    )
    return engine
