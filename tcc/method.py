"""TCC as the trainer sees it: the MethodSpec registered under `method: tcc`."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from core.backbones import IMAGENET_STD  # the data pipeline's normalisation
from core.method import ClipSpec, MethodSpec
from tcc.config import Config
from tcc.loss import cycle_consistency_loss, gather_embeddings
from tcc.model import Embedder, TCCOutput, video_embeddings


def build_model(cfg: Config, crop: int) -> nn.Module:
    return Embedder(cfg)


def clip_spec(cfg: Config) -> ClipSpec:
    return ClipSpec(
        mode="spread",
        num_steps=cfg.num_frames,
        sampling=cfg.sampling,
        stride=cfg.sampling_stride,
        context_steps=cfg.context_steps,
        context_stride=cfg.context_stride,
    )


def prepare(
    batch: dict[str, torch.Tensor], cfg: Config, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """Colour jitter per video (upstream: brightness +-32/255, contrast 0.5-1.5), the step indices."""
    frames = batch["frames"]  # [B, T*K, 3, H, W], normalised per channel
    B = frames.shape[0]
    rand_B2 = torch.rand(B, 2, generator=generator, device=frames.device, dtype=frames.dtype)
    # Brightness is an offset in pixel units: divide by the loader's normalisation std per channel.
    # Python-float divisors: no host->device copy of the std every step.
    offset_B = (2 * rand_B2[:, 0] - 1) * cfg.brightness
    brightness = torch.stack([offset_B / s for s in IMAGENET_STD], dim=1).view(B, 1, 3, 1, 1)
    low, high = cfg.contrast
    contrast = (low + rand_B2[:, 1] * (high - low)).view(B, 1, 1, 1, 1)
    mean = frames.mean(dim=(-2, -1), keepdim=True)  # per frame and channel, as tf.image.adjust_contrast
    frames = (frames - mean) * contrast + mean + brightness
    steps = batch["frame_idx"].unflatten(1, (cfg.num_frames, cfg.context_steps))[..., -1]
    return {"frames": frames, "steps": steps, "seq_lens": batch["video_len"]}


def forward(model: Any, inputs: dict[str, torch.Tensor]) -> TCCOutput:
    return model(inputs["frames"])


def loss(out: TCCOutput, inputs: dict[str, torch.Tensor], cfg: Config):
    embs, steps, seq_lens = video_embeddings(out.embs, cfg), inputs["steps"], inputs["seq_lens"]
    if cfg.loss.all_gather:
        embs, steps, seq_lens = gather_embeddings(embs, steps, seq_lens)
    options = {
        f.name: getattr(cfg.loss, f.name) for f in dataclasses.fields(cfg.loss) if f.name != "all_gather"
    }
    return cycle_consistency_loss(embs, steps, seq_lens, **options)


def evaluate(model: nn.Module, cfg: Config, out_dir: str) -> dict[str, float]:
    """Alignment metrics on `cfg.eval.videos` (Kendall's tau, ...); nothing when it is not set."""
    if not cfg.eval.videos:
        return {}
    from tcc.evaluate import evaluate_videos

    return evaluate_videos(model, cfg, out_dir)


SPEC = MethodSpec(
    name="tcc",
    build_model=build_model,
    clip_spec=clip_spec,
    prepare=prepare,
    forward=forward,
    loss=loss,
    evaluate=evaluate,
)
