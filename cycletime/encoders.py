"""The encoders label propagation compares: a trained CycleTime encoder, and the baselines every
number is read against (raw Lab colour at stride 8; the CycleTime encoder at random initialisation).

Each maps ImageNet-normalised frames [B, 3, H, W] to features [B, C, H/8, W/8].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.runfiles import (
    build_seeded,
    load_state_dict_strict,
    read_method_config,
    weights_and_config,
)
from cycletime.config import Config
from cycletime.model import build_encoder
from cycletime.propagation import IMAGENET_MEAN, IMAGENET_STD, STRIDE

BASELINES = ("lab", "random-init")
RANDOM_INIT_SEED = 0  # the random-init baseline is one fixed draw, so its numbers reproduce

# sRGB (D65) -> CIE XYZ, and the D65 white point (IEC 61966-2-1 / CIE 15).
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_D65_WHITE = (0.950456, 1.0, 1.088754)


def srgb_to_lab(rgb_B3HW: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> CIE L*a*b* (L in [0, 100]) [B, 3, H, W], the D65 conversion of skimage.rgb2lab."""
    rgb = rgb_B3HW.float().clamp(0, 1)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = torch.tensor(_RGB_TO_XYZ, device=rgb.device)
    white = torch.tensor(_D65_WHITE, device=rgb.device).view(1, 3, 1, 1)
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear) / white
    eps = (6 / 29) ** 3
    f = torch.where(xyz > eps, xyz.clamp_min(eps) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


class LabEncoder(nn.Module):
    """The colour baseline: Lab of each pixel average-pooled over 8x8 cells.

    L is centred ((L - 50, a, b) / 50) because the propagation L2-normalises features: with L in
    [0, 100] every grey would point the same way, centred dark and light greys point apart.
    """

    def forward(self, frames_B3HW: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(IMAGENET_MEAN, device=frames_B3HW.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=frames_B3HW.device).view(1, 3, 1, 1)
        lab = srgb_to_lab(frames_B3HW * std + mean)
        lab = (lab - torch.tensor([50.0, 0.0, 0.0], device=lab.device).view(1, 3, 1, 1)) / 50
        return F.avg_pool2d(lab, STRIDE)


def load_encoder(
    weights: str | None, baseline: str | None, config: str | None = None
) -> tuple[nn.Module, Config]:
    """The encoder to evaluate and the CycleTime settings it was built with.

    `baseline` "lab" or "random-init" (built from `config` or the defaults), or `weights`: a run
    directory or a weights file (a run's final/weights.pt, the whole model's state dict, or the
    encoder's alone), loaded strictly; the model shape comes from the run's config.yaml or `config`.
    """
    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"--baseline {baseline!r} is unknown; use one of {BASELINES}")
    if (baseline is None) == (weights is None):
        raise ValueError("give --weights PATH_OR_RUN or --baseline lab|random-init (one of them)")
    path, config = weights_and_config(weights, config)
    cfg = read_method_config(config, "cycletime", Config) if config else Config()
    if baseline == "lab":
        return LabEncoder(), cfg
    encoder = build_seeded(lambda: build_encoder(cfg), RANDOM_INIT_SEED)
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if any(k.startswith("encoder.") for k in state):  # the whole model: keep the encoder's part
            state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        load_state_dict_strict(
            encoder, state, f"the CycleTime encoder ({cfg.backbone}, {cfg.feat_dim} channels)"
        )
    return encoder, cfg
