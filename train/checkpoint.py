"""Checkpoints that are either complete or ignored, automatic resume, and weight export.

Layout under `<run_dir>/checkpoints/`:
    step_00000500/      DeepSpeed's files (every rank writes its shard) + COMPLETE
    latest              the tag of the newest complete checkpoint

DeepSpeed's own `latest` is written by rank 0 before the other ranks finish, so a crash can leave it
pointing at a half-written checkpoint. We never let DeepSpeed write it: every rank saves, all ranks
meet at a barrier, then rank 0 writes `COMPLETE` into the tag and swaps `latest` in with an atomic
rename. Resume reads `latest`, and falls back to the newest tag holding `COMPLETE`; a tag without
it is never loaded. Assumes `run_dir` is on a file system every node sees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from train.engine import barrier

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
META = "client_meta.json"
LATEST = "latest"


class ResumeMismatchError(RuntimeError):
    """The checkpoint in the run directory belongs to a different method or model shape."""


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def model_signature(model: torch.nn.Module) -> str:
    """A short hash of the parameter names and shapes: what a checkpoint must match to load."""
    # Under ZeRO-3 parameters are partitioned; ds_shape keeps the full shape.
    items = [f"{name}:{tuple(getattr(p, 'ds_shape', p.shape))}" for name, p in model.named_parameters()]
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def complete_tags(ckpt_dir: Path) -> list[str]:
    """Tags that hold a COMPLETE marker, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    return sorted(p.name for p in ckpt_dir.glob("step_*") if (p / COMPLETE).is_file())


def latest_complete(ckpt_dir: Path) -> str | None:
    """The tag to resume from: `latest` if it names a complete checkpoint, else the newest complete one."""
    pointer = ckpt_dir / LATEST
    if pointer.is_file():
        tag = pointer.read_text().strip()
        if (ckpt_dir / tag / COMPLETE).is_file():
            return tag
        log.warning(
            "%s names %s, which is incomplete; looking for an older complete checkpoint", pointer, tag
        )
    tags = complete_tags(ckpt_dir)
    return tags[-1] if tags else None


def save(
    engine: Any,
    ckpt_dir: Path,
    step: int,
    client_state: dict[str, Any],
    keep_last: int,
    meta: dict[str, str] | None = None,
) -> str:
    """Collective: every rank calls it. Returns the tag once it is complete on all ranks.

    `meta` (method, model signature) is written beside DeepSpeed's files as JSON, so that `load` can
    refuse a mismatch before touching any tensor.
    """
    tag = tag_for(step)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0 and (ckpt_dir / tag).exists():  # a leftover of a crash at this very step
        shutil.rmtree(ckpt_dir / tag)
    barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    barrier()  # every rank's shard is on disk before the checkpoint is declared complete
    if rank == 0:
        (ckpt_dir / tag / META).write_text(json.dumps(meta or {}, indent=1) + "\n")
        (ckpt_dir / tag / COMPLETE).write_text(json.dumps({"step": step}) + "\n")
        tmp = ckpt_dir / f".{LATEST}.tmp"
        tmp.write_text(tag + "\n")
        os.replace(tmp, ckpt_dir / LATEST)  # atomic: readers see the old or the new tag, never half
        tags = complete_tags(ckpt_dir)
        for old in tags[:-keep_last]:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
        log.info("checkpoint %s saved (%d kept)", tag, min(keep_last, len(tags)))
    barrier()
    return tag


def load(engine: Any, ckpt_dir: Path, tag: str, expect: dict[str, str]) -> dict[str, Any]:
    """Load `tag` into `engine` (weights, optimizer, scheduler) and return the client state.

    `expect` maps client-state keys (method, model signature) to the values this run has; any
    difference raises ResumeMismatchError before anything is loaded.
    """
    meta = _read_client_meta(ckpt_dir / tag)
    for key, value in expect.items():
        found = meta.get(key)
        if found != value:
            raise ResumeMismatchError(
                f"{ckpt_dir / tag} was saved with {key}={found!r}, but this run has {key}={value!r}; "
                f"use another trainer.run_dir (or trainer.resume=never to start over in a new one)"
            )
    path, client = engine.load_checkpoint(
        str(ckpt_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint at {ckpt_dir / tag}")
    return client


def _read_client_meta(tag_dir: Path) -> dict[str, Any]:
    meta_file = tag_dir / META
    return json.loads(meta_file.read_text()) if meta_file.is_file() else {}


def export_weights(engine: Any, ckpt_dir: Path, tag: str, out: Path) -> Path:
    """The trained weights as a plain fp32 state dict (loads with torch.load(weights_only=True)).

    ZeRO shards and bf16/fp16 copies are consolidated from the fp32 master weights saved in
    checkpoint `tag` (buffers such as BatchNorm statistics included). Rank 0 reads and writes;
    every rank calls it (it ends with a barrier).
    """
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        write_weights(_fp32_state_dict(engine, ckpt_dir, tag), out)
    barrier()
    return out


def write_weights(state: dict[str, torch.Tensor], out: Path) -> Path:
    """A state dict as fp32 CPU tensors at `out`, atomically (a crash leaves no half-written file)."""
    state = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out)
    log.info("exported %d tensors to %s", len(state), out)
    return out


def _fp32_state_dict(engine: Any, ckpt_dir: Path, tag: str) -> dict[str, torch.Tensor]:
    if engine.zero_optimization_stage() > 0 or engine.bfloat16_enabled():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        try:
            return get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
        except (FileNotFoundError, ValueError, KeyError) as err:
            log.warning("no fp32 master weights in %s (%s); exporting the module's weights", tag, err)
    return dict(engine.module.state_dict())
