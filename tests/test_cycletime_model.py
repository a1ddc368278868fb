"""CycleTime's model and losses: gradients everywhere, identical tracker schedules, the encoder
warm-up, and learning to track on generated translating textures within a few hundred CPU steps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cycletime import method as M
from cycletime.config import Config
from train.data.synthetic_scenes import make_sprites_video

SMALL = Config(backbone="resnet18", feat_dim=32, context_frames=2, target_offset=5, max_cycle=2)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def random_inputs(cfg: Config, crop: int, batch: int = 2, seed: int = 0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    frames = torch.randn(batch, len(M.clip_spec(cfg).offsets), 3, crop, crop, generator=gen, dtype=dtype)
    return M.prepare({"frames": frames}, cfg, torch.Generator().manual_seed(seed))


def test_clip_spec_is_context_at_a_gap_then_target_then_motion_frame() -> None:
    assert M.clip_spec(Config()).offsets == (0, 2, 4, 6, 15, 17)  # upstream: s, s+2, s+4, s+6; s+15; motion
    assert M.clip_spec(SMALL).offsets == (0, 2, 5, 7)


@pytest.mark.parametrize("patch_source", ["features", "image"])
def test_every_parameter_gets_a_gradient_and_losses_are_finite(patch_source: str) -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, patch_source=patch_source)
    model = M.build_model(cfg, 96)
    inputs = random_inputs(cfg, 96)
    total, parts = M.loss(M.forward(model, inputs), inputs, cfg)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())
    assert set(parts) == {"cycle", "skip", "inlier"}
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_paper_sizes_give_the_paper_grids() -> None:
    model = M.build_model(Config(backbone="resnet18"), 240)
    assert model.frame_hw == (30, 30) and model.patch_hw == (10, 10)  # 240 px -> 30x30, 80 px -> 10x10
    assert model.regressor.fc.in_features == 64 * 4 * 4  # two 4x4 convs on 10x10 -> 1024 features


def test_batched_tracker_schedule_is_upstreams_arithmetic() -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, context_frames=4, target_offset=9, max_cycle=4)
    model = M.build_model(cfg, 96).double().eval()
    inputs = random_inputs(cfg, 96, batch=3, dtype=torch.float64)
    outs = {}
    for schedule in ("batched", "per_cycle"):
        model.schedule = schedule
        outs[schedule] = M.forward(model, inputs)
    assert len(outs["batched"].cycle_thetas) == 4
    for a, b in zip(outs["batched"].cycle_thetas, outs["per_cycle"].cycle_thetas, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_encoder_warm_up_freezes_only_the_encoder() -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, freeze_encoder_steps=5)
    model = M.build_model(cfg, 96)
    M.SPEC.on_step(model, 0, cfg)
    inputs = random_inputs(cfg, 96)
    M.loss(M.forward(model, inputs), inputs, cfg)[0].backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.regressor.parameters())
    M.SPEC.on_step(model, 5, cfg)
    assert model.encoder_frozen is False


def sprite_clips(videos: list[np.ndarray], offsets: tuple[int, ...], batch: int, crop: int, gen):
    """Clips of generated sprite videos (textured sprites translating over a panning texture)."""
    clips = []
    for _ in range(batch):
        video = videos[int(torch.randint(len(videos), (1,), generator=gen))]
        start = int(torch.randint(video.shape[0] - max(offsets), (1,), generator=gen))
        frames = torch.from_numpy(video[[start + o for o in offsets]]).permute(0, 3, 1, 2).float() / 255
        frames = F.interpolate(frames, scale_factor=crop / video.shape[1], mode="bilinear", antialias=True)
        x0 = int(torch.randint(frames.shape[-1] - crop + 1, (1,), generator=gen))
        clips.append((frames[..., :crop, x0 : x0 + crop] - MEAN) / STD)
    return torch.stack(clips)


@pytest.mark.slow
def test_training_on_translating_textures_halves_the_cycle_loss() -> None:
    """A few hundred CPU steps of the full method (paper loss weights, Adam as upstream)."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, feat_dim=64)
    model = M.build_model(cfg, 96)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.5, 0.999))
    videos = [make_sprites_video(0, i, 40, 160, 128).frames_THWC for i in range(12)]
    data_gen, patch_gen = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    offsets = M.clip_spec(cfg).offsets
    cycle = []
    for _ in range(300):
        inputs = M.prepare({"frames": sprite_clips(videos, offsets, 4, 96, data_gen)}, cfg, patch_gen)
        total, parts = M.loss(M.forward(model, inputs), inputs, cfg)
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        cycle.append(parts["cycle"].item())
    first, last = np.mean(cycle[:30]), np.mean(cycle[-30:])
    print(f"cycle loss {first:.3f} -> {last:.3f}")
    assert last <= 0.5 * first, f"cycle loss {first:.3f} -> {last:.3f}"
