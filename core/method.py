"""The contract between a method package and the trainer: two plain dataclasses.

They live in `core` so that `tcc` and `cycletime` can describe themselves without importing
`train`; `train` only ever sees a method through a `MethodSpec`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ClipSpec:
    """Which frames of a video make one training clip; the data pipeline delivers exactly these.

    mode="offsets": a random start s, then the frames s + o for o in `offsets` (CycleTime:
        context frames at a gap, the target, and one more frame to measure motion).
    mode="spread": `num_steps` frames over the whole video (`sampling` "offset_uniform" or
        "stride"), each preceded by `context_steps - 1` causal context frames `context_stride`
        apart, clipped at frame 0 (TCC). Frames are delivered step-major: [step0 context..,
        step0, step1 context.., step1, ...], so a batch reshapes to [B, T, context_steps, C, H, W].
    """

    mode: Literal["offsets", "spread"]
    offsets: tuple[int, ...] = ()
    num_steps: int = 0
    sampling: Literal["offset_uniform", "stride"] = "offset_uniform"
    stride: int = 1
    context_steps: int = 1
    context_stride: int = 1

    @property
    def frames_per_clip(self) -> int:
        """How many frames one clip holds (F of the batch's [B, F, C, H, W])."""
        return len(self.offsets) if self.mode == "offsets" else self.num_steps * self.context_steps

    @property
    def min_length(self) -> int:
        """The shortest video that yields a clip without padding."""
        return max(self.offsets) + 1 if self.mode == "offsets" else self.num_steps


def with_context(steps_T: np.ndarray, context_steps: int, context_stride: int) -> np.ndarray:
    """Each step preceded by its causal context frames, clipped at 0, step-major -> int64 [T * K].

    [t0 - (K-1) s, ..., t0 - s, t0, t1 - (K-1) s, ..., t1, ...]: the training sampler's clips and
    TCC's evaluation embed frames with the same context.
    """
    back_K = context_stride * np.arange(context_steps - 1, -1, -1, dtype=np.int64)
    return np.maximum(np.asarray(steps_T, dtype=np.int64)[:, None] - back_K[None, :], 0).reshape(-1)


Batch = Mapping[str, torch.Tensor]
LossOut = tuple[torch.Tensor, dict[str, torch.Tensor]]


@dataclass(frozen=True)
class MethodSpec:
    """What the trainer needs from a method. `cfg` is the method's own config dataclass.

    build_model(cfg, crop) -> nn.Module            the trainable network
    clip_spec(cfg) -> ClipSpec                     what the data pipeline must deliver
    prepare(batch, cfg, generator) -> dict          model inputs from a data batch, on its device
                                                   (e.g. CycleTime cuts its random patch here)
    forward(model, inputs) -> Any                  one forward pass (the model's output dataclass)
    loss(outputs, inputs, cfg) -> (total, parts)   parts are detached scalars, for logging
    on_step(model, step, cfg) -> None              optional schedule hook (e.g. encoder warm-up)
    evaluate(model, cfg, out_dir) -> dict          optional periodic evaluation -> metrics
    """

    name: str
    build_model: Callable[[Any, int], nn.Module]
    clip_spec: Callable[[Any], ClipSpec]
    prepare: Callable[[Batch, Any, torch.Generator | None], dict[str, torch.Tensor]]
    forward: Callable[[nn.Module, dict[str, torch.Tensor]], Any]
    loss: Callable[[Any, dict[str, torch.Tensor], Any], LossOut]
    on_step: Callable[[nn.Module, int, Any], None] | None = None
    evaluate: Callable[[nn.Module, Any, str], dict[str, float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
