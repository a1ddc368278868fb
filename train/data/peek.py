"""`python -m train.data peek`: decode one batch the way training would, and show it.

Prints shapes, dtype, device and decoder, and writes a contact sheet (rows = clips, columns = frames,
un-normalised) so the clips, crops and flips can be checked by eye.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from core.method import ClipSpec
from train.config.schema import DataConfig
from train.data.loader import build_loader
from train.data.pipeline import MEAN_RGB, STD_RGB

log = logging.getLogger(__name__)

# Upstream clips when no config is given (ANCHORS): CycleTime's 4 context frames at gap 2, the
# target at +15 and the motion frame 2 after it; TCC's 20 offset_uniform steps with 2 context
# frames 15 apart.
DEFAULT_CLIPS = {
    "cycletime": ClipSpec(mode="offsets", offsets=(0, 2, 4, 6, 15, 17)),
    "tcc": ClipSpec(
        mode="spread", num_steps=20, sampling="offset_uniform", context_steps=2, context_stride=15
    ),
}
DEFAULT_SIZES = {"cycletime": (256, 240), "tcc": (224, 224)}  # (short_side, crop)


def clip_from_method_config(method: str, method_cfg: object) -> ClipSpec:
    """The ClipSpec a method's settings ask for: its SPEC.clip_spec when the method package has one,
    else the same mapping spelled out here (for method packages without method.py yet)."""
    try:
        spec = importlib.import_module(f"{method}.method").SPEC
        return spec.clip_spec(method_cfg)
    except ImportError:
        log.debug("%s.method is not importable: using the built-in clip mapping", method)
    cfg = method_cfg
    if method == "cycletime":
        context = tuple(i * cfg.context_gap for i in range(cfg.context_frames))
        motion = cfg.target_offset + getattr(cfg, "motion_gap", 2)
        return ClipSpec(mode="offsets", offsets=(*context, cfg.target_offset, motion))
    if method == "tcc":
        return ClipSpec(
            mode="spread",
            num_steps=cfg.num_frames,
            sampling=cfg.sampling,
            stride=cfg.sampling_stride,
            context_steps=cfg.context_steps,
            context_stride=cfg.context_stride,
        )
    raise ValueError(f"no clip mapping for method {method!r} (allowed: {', '.join(DEFAULT_CLIPS)})")


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
    if config is not None:
        from train.config import load_config

        cfg = load_config(config)
        if cfg.method != method:
            raise ValueError(f"--method {method} but {config} is a {cfg.method} config")
        clip = clip_from_method_config(method, cfg.method_cfg)
        data_cfg = dataclasses.replace(cfg.data, root=str(root), generate=None)
    else:
        if method not in DEFAULT_CLIPS:
            raise ValueError(f"--method must be one of {', '.join(DEFAULT_CLIPS)}, got {method!r}")
        clip = DEFAULT_CLIPS[method]
        short_side, crop = DEFAULT_SIZES[method]
        data_cfg = DataConfig(root=str(root), batch_size=4, short_side=short_side, crop=crop)
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
