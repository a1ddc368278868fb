"""Truncated torchvision ResNets, cut where the two methods need them; random initialisation by default.

Legend: B batch, C channels, H x W input size.

Cuts (output stride = input size / feature size):
- "res4_os8" (CycleTime): stem + layer1 + layer2 + layer3 with layer3's stride set to 1 (no dilation, as
  upstream's resnet_res4s1), no layer4: output stride 8, so 240 px -> 30 x 30; 1024 channels for
  resnet50, 256 for resnet18.
- "conv4" (TCC): stem + layer1 + layer2 + the first 3 blocks of layer3 for resnet50 (Keras'
  conv4_block3: 1024 channels, 14 x 14 at 224 px); all of layer3 for resnet18 (256 channels). Output
  stride 16. (torchvision's blocks stride in the 3x3 conv, Keras' ResNet50 in the first 1x1: same shapes.)

The trunk keeps torchvision's module names, so its state-dict keys are torchvision's (conv1.weight,
layer3.2.bn1.running_mean, ...) and a torchvision ResNet state dict loads into it (see `build_trunk`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
import torchvision
from torch import nn

from core.runfiles import summary

log = logging.getLogger(__name__)

# The per-channel normalisation of the ImageNet-trained torchvision ResNets (RGB, pixels in [0, 1]):
# every pipeline that feeds these trunks normalises with it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESNETS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet50": torchvision.models.resnet50,
}


def _res4_os8(resnet: torchvision.models.ResNet) -> tuple[nn.Sequential, int]:
    # layer3's only stride-2 convolutions are in its first block (the 3x3 conv or conv1, and the
    # downsample shortcut): setting them to 1 keeps the map at stride 8.
    for module in resnet.layer3[0].modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)
    return resnet.layer3, 8


def _conv4(resnet: torchvision.models.ResNet) -> tuple[nn.Sequential, int]:
    # Keras' conv4_block3 is the third block of ResNet-50's res4; ResNet-18's res4 has only two blocks.
    blocks = 3 if isinstance(resnet.layer3[0], torchvision.models.resnet.Bottleneck) else len(resnet.layer3)
    return nn.Sequential(*list(resnet.layer3)[:blocks]), 16


_CUTS: dict[str, Callable[[torchvision.models.ResNet], tuple[nn.Sequential, int]]] = {
    "res4_os8": _res4_os8,
    "conv4": _conv4,
}


class ResNetTrunk(nn.Module):
    """A ResNet up to (part of) layer3. forward: [B, 3, H, W] -> [B, out_channels, H/stride, W/stride]
    (H, W multiples of the stride; otherwise the ceil of each halving). channels_last inputs and
    activations (`set_channels_last`) are supported."""

    def __init__(self, resnet: torchvision.models.ResNet, layer3: nn.Sequential, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, layer3
        last = layer3[-1]
        self.out_channels: int = (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features
        self.stride: int = stride
        self.channels_last = False  # set_channels_last(): NHWC activations

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            # NHWC activations run on tensor cores; the weights stay NCHW (DeepSpeed's broadcast and
            # ZeRO's flat buffers need contiguous parameters), cuDNN follows the input's layout.
            x_BCHW = x_BCHW.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x_BCHW))))
        return self.layer3(self.layer2(self.layer1(x)))


def set_channels_last(model: nn.Module, enabled: bool = True) -> int:
    """Run every ResNet trunk inside `model` on NHWC activations; returns how many trunks it set."""
    trunks = [m for m in model.modules() if isinstance(m, ResNetTrunk)]
    for trunk in trunks:
        trunk.channels_last = enabled
    return len(trunks)


def _load_weights(trunk: ResNetTrunk, full_keys: set[str], path: str, name: str, cut: str) -> None:
    """Strict load of the kept layers from a torchvision-keyed state dict; keys of the layers the cut
    drops (layer4, fc, the rest of layer3) are ignored, anything else must match exactly."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"backbone weights file {path} does not exist (give a local state-dict file)")
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path} must hold a plain state dict (parameter name -> tensor) with torchvision "
            f"ResNet keys; save one with torch.save(model.state_dict(), path)"
        )
    kept = trunk.state_dict()
    missing = set(kept) - set(state)
    unexpected = set(state) - full_keys
    if missing or unexpected:
        parts = [
            f"missing keys: {summary(sorted(missing), 8)}" if missing else "",
            f"unexpected keys: {summary(sorted(unexpected), 8)}" if unexpected else "",
        ]
        raise ValueError(
            f"weights {path} do not fit {name} cut {cut!r} (torchvision key names expected); "
            + "; ".join(p for p in parts if p)
        )
    wrong = {k for k in kept if state[k].shape != kept[k].shape}
    if wrong:
        k = sorted(wrong)[0]
        raise ValueError(
            f"weights {path} have wrong shapes for {name} cut {cut!r}: {summary(sorted(wrong), 8)} "
            f"(e.g. {k}: file {list(state[k].shape)}, model {list(kept[k].shape)})"
        )
    trunk.load_state_dict({k: state[k] for k in kept}, strict=True)
    dropped = len(set(state) - set(kept))
    log.info("loaded %s (%s) weights from %s; ignored %d keys of dropped layers", name, cut, path, dropped)


def build_trunk(
    name: Literal["resnet18", "resnet50"] = "resnet18",
    cut: Literal["res4_os8", "conv4"] = "res4_os8",
    weights: str | None = None,
) -> ResNetTrunk:
    """A torchvision ResNet trunk (never downloads): randomly initialised (torchvision's init) unless
    `weights` names a local state-dict file with torchvision ResNet keys. Every kept parameter and buffer
    must be in the file with the right shape, and the file may only add keys of the dropped layers;
    otherwise a ValueError names the missing/unexpected keys (never a partial load)."""
    if name not in _RESNETS:
        raise ValueError(f"backbone {name!r} is unknown; use one of {sorted(_RESNETS)}")
    if cut not in _CUTS:
        raise ValueError(f"backbone cut {cut!r} is unknown; use one of {sorted(_CUTS)}")
    resnet = _RESNETS[name](weights=None)
    full_keys = set(resnet.state_dict())
    layer3, stride = _CUTS[cut](resnet)
    trunk = ResNetTrunk(resnet, layer3, stride)
    if weights is not None:
        _load_weights(trunk, full_keys, weights, name, cut)
    return trunk
