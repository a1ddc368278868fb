"""Checkpoints with a real DeepSpeed engine (one rank, gloo): complete-or-ignored, resume, export."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from train import checkpoint
from train.config import load_config
from train.engine import build_engine, init_distributed

REPO = Path(__file__).resolve().parents[1]


class Tiny(torch.nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, width)
        self.bn = torch.nn.BatchNorm1d(width)  # a buffer (running stats) must survive the export
        self.out = torch.nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.bn(self.fc(x))))


@pytest.fixture(scope="module")
def dist_info():
    return init_distributed()


def make_engine(dist_info, precision: str, zero: int, width: int = 8):
    torch.manual_seed(0)
    cfg = load_config(
        REPO / "configs/smoke/cycletime.yaml",
        [
            f"trainer.precision={precision}",
            f"trainer.zero_stage={zero}",
            "data.batch_size=4",
            "optim.lr=0.01",
        ],
    )
    return build_engine(Tiny(width), cfg, dist_info)


def train_steps(engine, n: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(4, 4, generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=engine.torch_autocast_enabled()):
            loss = engine(x).float().pow(2).mean()
        engine.backward(loss)
        engine.step()


@pytest.mark.parametrize(("precision", "zero"), [("fp32", 0), ("bf16", 0), ("bf16", 2), ("fp32", 3)])
def test_save_resume_and_export(dist_info, tmp_path: Path, precision: str, zero: int) -> None:
    ckpt = tmp_path / "checkpoints"
    engine = make_engine(dist_info, precision, zero)
    train_steps(engine, 3)
    tag = checkpoint.save(
        engine, ckpt, step=3, client_state={"hello": 1}, keep_last=2, meta={"method": "tiny"}
    )
    assert (ckpt / tag / checkpoint.COMPLETE).is_file()
    assert checkpoint.latest_complete(ckpt) == tag

    out = checkpoint.export_weights(engine, ckpt, tag, tmp_path / "weights.pt")
    weights = torch.load(out, weights_only=True)
    module_state = engine.module.state_dict()
    assert set(weights) == set(module_state)  # buffers included
    for key, value in weights.items():
        assert value.dtype == torch.float32
        if zero < 3:
            torch.testing.assert_close(value, module_state[key].float(), atol=1e-2, rtol=1e-2)

    train_steps(engine, 2, seed=2)
    expected = {k: v.detach().float().clone() for k, v in engine.module.state_dict().items()}
    fresh = make_engine(dist_info, precision, zero)
    client = checkpoint.load(fresh, ckpt, tag, expect={"method": "tiny"})
    assert client["hello"] == 1
    train_steps(fresh, 2, seed=2)  # optimizer state restored too: the same two steps, the same weights
    if zero < 3:
        for key, value in fresh.module.state_dict().items():
            torch.testing.assert_close(value.float(), expected[key], atol=1e-3, rtol=1e-3)


def test_incomplete_checkpoint_is_never_loaded(dist_info, tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    engine = make_engine(dist_info, "fp32", 0)
    good = checkpoint.save(engine, ckpt, step=1, client_state={}, keep_last=3)
    # A crash mid-write: a newer tag whose files are there in part and which never got COMPLETE,
    # even with `latest` (as DeepSpeed would have it) already naming it.
    partial = ckpt / checkpoint.tag_for(2)
    shutil.copytree(ckpt / good, partial)
    (partial / checkpoint.COMPLETE).unlink()
    for f in partial.glob("*.pt"):
        f.write_bytes(f.read_bytes()[:100])
    (ckpt / checkpoint.LATEST).write_text(partial.name)
    assert checkpoint.latest_complete(ckpt) == good


def test_keep_last_prunes_old_checkpoints(dist_info, tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    engine = make_engine(dist_info, "fp32", 0)
    for step in range(1, 5):
        checkpoint.save(engine, ckpt, step=step, client_state={}, keep_last=2)
    assert checkpoint.complete_tags(ckpt) == [checkpoint.tag_for(3), checkpoint.tag_for(4)]


def test_refuses_another_method_or_model_shape(dist_info, tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    engine = make_engine(dist_info, "fp32", 0)
    sig = checkpoint.model_signature(engine.module)
    meta = {"method": "cycletime", "model_signature": sig}
    tag = checkpoint.save(engine, ckpt, step=1, client_state={}, keep_last=2, meta=meta)
    wider = make_engine(dist_info, "fp32", 0, width=16)
    with pytest.raises(checkpoint.ResumeMismatchError, match=r"method='cycletime'.*method='tcc'"):
        checkpoint.load(wider, ckpt, tag, {"method": "tcc", "model_signature": sig})
    with pytest.raises(checkpoint.ResumeMismatchError, match="model_signature"):
        checkpoint.load(wider, ckpt, tag, {"method": "cycletime", "model_signature": "other"})
