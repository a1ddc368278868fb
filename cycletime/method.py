"""CycleTime as the trainer sees it: the MethodSpec registered under `method: cycletime`."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from core.affine import affine_crop, affine_crops, sample_grid_patches, sample_patch_transforms
from core.method import ClipSpec, MethodSpec
from cycletime.config import Config
from cycletime.loss import cycletime_loss
from cycletime.model import CycleTimeModel, CycleTimeOutput

log = logging.getLogger(__name__)


def build_model(cfg: Config, crop: int) -> nn.Module:
    return CycleTimeModel(cfg, crop)


def clip_spec(cfg: Config) -> ClipSpec:
    """Context frames at a gap, the target, and the frame `motion_gap` after it (to place the patch)."""
    context = tuple(i * cfg.context_gap for i in range(cfg.context_frames))
    return ClipSpec(mode="offsets", offsets=(*context, cfg.target_offset, cfg.target_offset + cfg.motion_gap))


def prepare(
    batch: dict[str, torch.Tensor], cfg: Config, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """Place the random patch of each clip's target frame where it moves most (on the batch's device);
    the patch image is cut only for patch_source "image" (the "features" model crops features at theta)."""
    frames = batch["frames"]  # [B, F+2, 3, S, S], normalised
    Fc = cfg.context_frames
    target, later = frames[:, Fc], frames[:, Fc + 1]
    motion_BSS = (target - later).abs().sum(1)
    theta = sample_patch_transforms(
        motion_BSS,
        generator,
        scale=cfg.patch_scale,
        max_rotation_deg=cfg.max_rotation_deg,
        top=cfg.motion_windows,
        jitter=cfg.jitter,
    )
    inputs = {"context": frames[:, :Fc], "target": target, "theta": theta}
    if cfg.patch_source == "image" and cfg.tracks:
        side = round(frames.shape[-1] * cfg.patch_scale)
        inputs["patch"] = affine_crop(target, theta, (side, side))
    if cfg.w_walk:
        inputs["walk_patches"] = walk_patches(frames[:, : Fc + 1], cfg, generator)
    return inputs


def walk_patches(frames_BTCSS: torch.Tensor, cfg: Config, generator: torch.Generator | None) -> torch.Tensor:
    """CRW's patch grid of every frame, each frame and patch cropped at random -> [B, T, N, 3, Q, Q]."""
    B, T = frames_BTCSS.shape[:2]
    w = cfg.walk
    theta_BTN23 = sample_grid_patches(
        (B, T), generator, grid=w.grid, patch_scale=w.patch_scale, device=frames_BTCSS.device
    )
    crops = affine_crops(frames_BTCSS.flatten(0, 1), theta_BTN23.flatten(0, 1), (w.patch_px, w.patch_px))
    return crops.unflatten(0, (B, T))


def forward(model: Any, inputs: dict[str, torch.Tensor]) -> CycleTimeOutput:
    return model(
        inputs["context"], inputs["target"], inputs.get("patch"), inputs["theta"], inputs.get("walk_patches")
    )


def loss(out: CycleTimeOutput, inputs: dict[str, torch.Tensor], cfg: Config):
    return cycletime_loss(out, inputs["theta"], cfg)


def on_step(model: nn.Module, step: int, cfg: Config) -> None:
    """Encoder warm-up: only the tracker trains for the first `freeze_encoder_steps` steps."""
    frozen = step < cfg.freeze_encoder_steps
    if getattr(model, "encoder_frozen", None) is not frozen:
        if step > 0 or frozen:
            log.info("step %d: encoder %s", step, "frozen (tracker warm-up)" if frozen else "training")
        model.encoder_frozen = frozen
        # requires_grad off, so autograd records nothing for the encoder (no activations kept either).
        # A no_grad block in the forward is not enough: a compiled forward (trainer.compile) still routes a
        # None gradient to every parameter that requires one, and ZeRO-2's gradient hooks fail on it
        # ('NoneType' object has no attribute 'view', seen on an H200 at step 0).
        model.encoder.requires_grad_(not frozen)


def evaluate(model: nn.Module, cfg: Config, out_dir: str) -> dict[str, float]:
    """Label propagation on `cfg.eval.davis` (J, F, J&F); nothing when it is not set."""
    if not cfg.eval.davis:
        return {}
    from cycletime.evaluate import evaluate_davis, headline_metrics

    device = next(model.parameters()).device
    # Propagation L2-normalises whatever it is given, so the bare trunk needs no wrapper.
    encode = model.encoder.trunk if cfg.eval.features == "trunk" else model.encode
    results = evaluate_davis(encode, cfg.eval.davis, cfg.eval, out_dir, device, overlays=False)
    return headline_metrics(results)


SPEC = MethodSpec(
    name="cycletime",
    build_model=build_model,
    clip_spec=clip_spec,
    prepare=prepare,
    forward=forward,
    loss=loss,
    on_step=on_step,
    evaluate=evaluate,
)
