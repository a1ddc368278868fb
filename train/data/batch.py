"""The batch dict the loader yields: decoded frames plus what the sampler knows about each clip.

Letters: B clips per batch, F frames per clip, C = 3 channels, H = W = data.crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from train.data.sampling import Sample


def collate(
    samples: Sequence[Sample],
    frames_BFCHW: torch.Tensor,
    lengths_V: np.ndarray,
    labels_V: Sequence[np.ndarray | None] | None,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """frames [B, F, C, H, W] float32, frame_idx [B, F] int64, video_len [B] int64, video_id [B] int64,
    valid [B] bool, and labels [B, F] int64 (-1 where a video has none) when `labels_V` is given;
    everything on `device` (the small tensors copied from pinned memory without blocking)."""
    frame_idx_BF = np.stack([s.frame_idx for s in samples])
    video_id_B = np.array([s.video_id for s in samples], dtype=np.int64)
    host = {
        "frame_idx": frame_idx_BF,
        "video_len": lengths_V[video_id_B],
        "video_id": video_id_B,
        "valid": np.array([s.valid for s in samples], dtype=bool),
    }
    if labels_V is not None:
        labels_BF = np.full(frame_idx_BF.shape, -1, dtype=np.int64)
        for b, s in enumerate(samples):
            labels = labels_V[s.video_id]
            if labels is not None:
                labels_BF[b] = labels[s.frame_idx]
        host["labels"] = labels_BF
    out = {"frames": frames_BFCHW}
    for key, value in host.items():
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        if device.type == "cuda":
            tensor = tensor.pin_memory().to(device, non_blocking=True)
        out[key] = tensor
    return out
