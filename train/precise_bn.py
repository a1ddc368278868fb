"""BatchNorm statistics recomputed for the weights that are scored and exported (`trainer.precise_bn`).

Why: in training mode BatchNorm normalises with each batch's own statistics and keeps running averages
(momentum 0.1) for evaluation. Those averages mix the last ~10 steps' weights, and with `trainer.ema` the
exported weights are an average over hundreds of steps whose statistics were never measured at all. In
`make demo` (docs/cycletime.md, seventh session) recomputing them from the last 8 training batches raised
the trained model's label propagation from 0.321 to 0.419 J&F with the same parameters: the running
averages, not the weights, were costing the evaluation that much. With a weight average (`trainer.ema:
0.95`) the same demo gained less from it: 0.462 -> 0.466.

`recalibrate` resets every BatchNorm layer's running statistics and runs the model's training forward
(train mode, no gradients, eager even when the model is compiled) over the most recent training batches,
with momentum None so that the statistics become the plain average over those batches. The batches are
references to tensors the loader already made (no copies, no host syncs in the training loop); holding
them keeps `batches` batches of frames alive on the device.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

Batch = dict[str, torch.Tensor]


class RecentBatches:
    """The last `size` training batches, for `recalibrate`."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"precise_bn needs at least one batch, got {size}")
        self._batches: collections.deque[Batch] = collections.deque(maxlen=size)

    def add(self, batch: Batch) -> None:
        self._batches.append(batch)

    def __iter__(self):
        return iter(list(self._batches))

    def __len__(self) -> int:
        return len(self._batches)


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate(model: nn.Module, batches: Iterable[Batch], forward: Callable[[Batch], Any]) -> int:
    """Recompute the running statistics of `model`'s BatchNorm layers as the plain average over
    `forward(batch)` for each batch (`forward` runs `model` on one training batch). Returns how many
    batches were used; with none, or no BatchNorm layer, nothing changes. The model's train/eval mode
    and the layers' momentum are put back afterwards."""
    layers = batchnorm_layers(model)
    batches = list(batches)
    if not layers or not batches:
        return 0
    momenta = [m.momentum for m in layers]
    was_training = model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the forwards below
    model.train()
    try:
        # A compiled model would compile again for no_grad and the new momentum; eager is cheap here.
        with torch.compiler.set_stance("force_eager"):
            for batch in batches:
                forward(batch)
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return len(batches)
