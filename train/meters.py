"""Metrics accumulated on the device between log steps, read with one host sync per log step."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from train.engine import multi_rank


class LossMeter:
    """Sums of detached loss components, kept on the device: adding one costs no host sync."""

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        for name, value in parts.items():
            value = value.detach().float()
            self._sums[name] = self._sums.get(name, 0) + value  # out of place: never aliases the input
        self._count += 1

    def read(self) -> dict[str, float]:
        """Means over the window and over all ranks, then reset. The one sync of a log step."""
        if not self._sums:
            return {}
        names = sorted(self._sums)
        stacked = torch.stack([self._sums[n] for n in names]) / self._count
        if multi_rank():
            dist.all_reduce(stacked)
            stacked /= dist.get_world_size()
        values = stacked.tolist()
        self._sums.clear()
        self._count = 0
        return dict(zip(names, values, strict=True))


class Throughput:
    """Clips per second per rank and the share of wall time spent waiting for data, per log window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._start = time.perf_counter()
        self._data_wait = 0.0
        self._clips = 0

    def waited(self, seconds: float, clips: int) -> None:
        self._data_wait += seconds
        self._clips += clips

    def read(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        out = {"clips_per_s_per_gpu": self._clips / elapsed, "data_wait_frac": self._data_wait / elapsed}
        self.reset()
        return out


def device_memory(device: torch.device) -> dict[str, float]:
    """Peak GPU memory in GiB since the last call (empty on CPU)."""
    if device.type != "cuda":
        return {}
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return {"gpu_mem_peak_gib": peak}
