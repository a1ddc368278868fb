"""core.backbones: output shapes and strides of both cuts and depths, weights round trip, clear errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from core.backbones import build_trunk

EXPECTED = {  # (name, cut) -> (channels, stride)
    ("resnet18", "res4_os8"): (256, 8),
    ("resnet50", "res4_os8"): (1024, 8),
    ("resnet18", "conv4"): (256, 16),
    ("resnet50", "conv4"): (1024, 16),
}


def _image(size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) + 0.1


@pytest.mark.parametrize(("name", "cut"), list(EXPECTED))
def test_shapes_and_strides(name: str, cut: str) -> None:
    torch.manual_seed(0)
    trunk = build_trunk(name, cut).eval()
    channels, stride = EXPECTED[(name, cut)]
    assert (trunk.out_channels, trunk.stride) == (channels, stride)
    size = 240 if cut == "res4_os8" else 224  # CycleTime: 240 -> 30; TCC: 224 -> 14
    with torch.no_grad():
        out = trunk(_image(size))
    assert out.shape == (1, channels, size // stride, size // stride)
    assert not any(n.startswith(("layer4", "fc")) for n, _ in trunk.named_parameters())
    assert all(m.dilation == (1, 1) for m in trunk.modules() if isinstance(m, nn.Conv2d))
    blocks = len(trunk.layer3)
    assert blocks == {"resnet18": 2, "resnet50": 6 if cut == "res4_os8" else 3}[name]


def test_every_parameter_gets_a_gradient_and_channels_last() -> None:
    torch.manual_seed(1)
    trunk = build_trunk("resnet18", "res4_os8")
    x = _image(64)
    trunk(x).square().mean().backward()
    for name, p in trunk.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    trunk.eval()
    with torch.no_grad():
        ref = trunk(x)
        trunk_cl = trunk.to(memory_format=torch.channels_last)
        out = trunk_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cut", ["res4_os8", "conv4"])
def test_weights_round_trip(tmp_path, cut: str) -> None:
    torch.manual_seed(2)
    source = build_trunk("resnet50", cut).eval()
    with torch.no_grad():  # make running statistics non-trivial so buffers are checked too
        for m in source.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "trunk.pt"
    torch.save(source.state_dict(), path)
    loaded = build_trunk("resnet50", cut, weights=str(path)).eval()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        torch.testing.assert_close(loaded(_image(64)), source(_image(64)))


def test_full_torchvision_state_dict_loads_kept_layers(tmp_path) -> None:
    torch.manual_seed(3)
    full = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18_full.pt"
    torch.save(full.state_dict(), path)  # includes layer4 and fc: ignored, as the cut drops them
    trunk = build_trunk("resnet18", "conv4", weights=str(path))
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, full.state_dict()[key]), key


def test_mismatched_weights_raise_clear_errors(tmp_path) -> None:
    torch.manual_seed(4)
    good = build_trunk("resnet18", "res4_os8").state_dict()

    def save(state: object, name: str) -> str:
        path = tmp_path / name
        torch.save(state, path)
        return str(path)

    with pytest.raises(ValueError, match=r"resnet50 .*missing keys: layer1\.0\.bn3"):
        build_trunk("resnet50", "res4_os8", weights=save(good, "r18.pt"))
    missing = {k: v for k, v in good.items() if k != "layer2.1.bn2.running_var"}
    with pytest.raises(ValueError, match=r"missing keys: layer2\.1\.bn2\.running_var"):
        build_trunk("resnet18", "res4_os8", weights=save(missing, "missing.pt"))
    extra = {**good, "head.weight": torch.ones(3)}
    with pytest.raises(ValueError, match=r"unexpected keys: head\.weight"):
        build_trunk("resnet18", "res4_os8", weights=save(extra, "extra.pt"))
    prefixed = {f"module.{k}": v for k, v in good.items()}
    with pytest.raises(ValueError, match="missing keys"):
        build_trunk("resnet18", "res4_os8", weights=save(prefixed, "prefixed.pt"))
    wrong = {**good, "conv1.weight": torch.zeros(64, 3, 3, 3)}
    with pytest.raises(ValueError, match=r"wrong shapes.*conv1\.weight"):
        build_trunk("resnet18", "res4_os8", weights=save(wrong, "wrong.pt"))
    with pytest.raises(ValueError, match="plain state dict"):
        build_trunk("resnet18", "res4_os8", weights=save({"state_dict": good}, "wrapped.pt"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_trunk("resnet18", "res4_os8", weights=str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="unknown"):
        build_trunk("resnet34", "res4_os8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        build_trunk("resnet18", "conv5")  # type: ignore[arg-type]
