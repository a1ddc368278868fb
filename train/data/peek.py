"""`python -m train.data peek`: decode one batch the way training would, and show it.

Prints shapes, dtype, device and decoder, and writes a contact sheet (rows = clips, columns = frames,
un-normalised) so the clips, crops and flips can be checked by eye.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from train.data.loader import build_loader
from train.data.pipeline import MEAN_RGB, STD_RGB

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
METHODS = ("cycletime", "tcc")


def contact_sheet(
    frames_BFCHW: torch.Tensor, frame_idx_BF: torch.Tensor, video_id_B: torch.Tensor
) -> Image.Image:
    """Un-normalise a batch into one image: a row per clip, a column per frame, indices written on."""
    mean = torch.tensor(MEAN_RGB).view(1, 1, 3, 1, 1) * 255
    std = torch.tensor(STD_RGB).view(1, 1, 3, 1, 1) * 255
    pixels = (frames_BFCHW.detach().float().cpu() * std + mean).clamp(0, 255).round().to(torch.uint8)
    B, F, _, H, W = pixels.shape
    gap = 2
    sheet = np.full((B * (H + gap), F * (W + gap), 3), 32, dtype=np.uint8)
    for b in range(B):
        for f in range(F):
            sheet[b * (H + gap) : b * (H + gap) + H, f * (W + gap) : f * (W + gap) + W] = (
                pixels[b, f].permute(1, 2, 0).numpy()
            )
    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    for b in range(B):
        for f in range(F):
            label = f"v{int(video_id_B[b])} f{int(frame_idx_BF[b, f])}"
            draw.text((f * (W + gap) + 3, b * (H + gap) + 2), label, fill=(255, 255, 0))
    return image


def peek(
    method: str,
    root: str | Path,
    *,
    config: str | Path | None = None,
    out: str | Path | None = "peek.png",
    batch_size: int | None = None,
    device: str | None = None,
    cache_dir: str | None = None,
) -> tuple[dict[str, torch.Tensor], str]:
    """Decode one batch of `root` for `method` (clip and data settings from `config` when given)
    -> (the batch, a report of shapes, dtypes, device and decoder)."""
    from train.config import load_config
    from train.methods import load_method

    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    # Without --config: the paper settings of the method (configs/<method>.yaml), 4 clips.
    cfg = load_config(config or REPO / "configs" / f"{method}.yaml")
    if cfg.method != method:
        raise ValueError(f"--method {method} but {config} is a {cfg.method} config")
    clip = load_method(method).clip_spec(cfg.method_cfg)
    data_cfg = dataclasses.replace(cfg.data, root=str(root), generate=None)
    if config is None:
        data_cfg = dataclasses.replace(data_cfg, batch_size=4)
    if batch_size is not None:
        data_cfg = dataclasses.replace(data_cfg, batch_size=batch_size)
    if cache_dir is not None:
        data_cfg = dataclasses.replace(data_cfg, cache_dir=cache_dir)
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    start = time.perf_counter()
    with build_loader(data_cfg, clip, rank=0, world_size=1, local_rank=0, device=torch_device) as loader:
        batch = next(iter(loader))
        elapsed = time.perf_counter() - start
        frames = batch["frames"]
        lines = [
            f"method {method}: {clip}",
            f"decoder {loader.decoder}; device {frames.device}; first batch in {elapsed:.2f}s",
            *(f"  {k:<10} {tuple(v.shape)} {v.dtype}" for k, v in batch.items()),
            f"frame_idx[0] {batch['frame_idx'][0].tolist()}",
            f"stats {loader.stats()}",
        ]
    if out is not None:
        contact_sheet(frames, batch["frame_idx"], batch["video_id"]).save(out)
        lines.append(f"contact sheet: {out}")
    return batch, "\n".join(lines)
