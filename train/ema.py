"""An exponential moving average of a model's weights (`trainer.ema`), evaluated and exported in its place.

Why: CycleTime's cycle loss oscillates at a constant lr and its label-propagation score moves +-0.05
between identical runs (docs/cycletime.md); the average of the recent weights is a smoother model than
the last step's, without lowering the lr (a decayed lr measured worse there).

Only parameters are averaged; buffers (BatchNorm running statistics) are the live model's, which
track the same recent window. The average is kept in fp32 on the parameters' device and updated with
one fused `_foreach_lerp_` per optimizer step (no host sync). Under ZeRO-3 a rank holds only a shard
of each parameter, so the trainer refuses `trainer.ema` there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

# Early in a run the average would mostly hold the random initialisation: the effective decay ramps
# up as (1 + n) / (WARMUP + n) until it reaches the configured one (n = averaged updates).
WARMUP = 10


class WeightAverage:
    """EMA of `module`'s parameters: `update()` after each optimizer step, `swapped_in()` to use it."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self._live = [p for p in module.parameters() if p.requires_grad]
        self.average = [p.detach().float().clone() for p in self._live]

    def update(self) -> None:
        """average <- d * average + (1 - d) * weights, d = min(decay, (1 + n) / (WARMUP + n))."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (WARMUP + self.updates))
        torch._foreach_lerp_(self.average, [p.detach().float() for p in self._live], 1.0 - d)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own weights again after it."""
        kept = [p.detach().clone() for p in self._live]
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in self._live], self.average)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self._live], kept)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "average": [a.cpu() for a in self.average]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["average"]
        if len(saved) != len(self.average) or any(
            s.shape != a.shape for s, a in zip(saved, self.average, strict=True)
        ):
            raise ValueError("the checkpoint's weight average does not match this model's parameters")
        self.updates = int(state["updates"])
        for a, s in zip(self.average, saved, strict=True):
            a.copy_(s)
