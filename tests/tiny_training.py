"""In-process training runs of the CycleTime smoke config for tests: tiny data, fp32, logged every step."""

from __future__ import annotations

import signal
from pathlib import Path

from train.config import Config, load_config
from train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def tiny_cycletime_config(tmp_path: Path, run: str, *overrides: str) -> Config:
    """configs/smoke/cycletime.yaml on 2 generated videos of 24 frames (under tmp_path/videos), batch 2,
    fp32, a log step per step; run folder tmp_path/<run>, MLflow store tmp_path/<run>.db."""
    return load_config(
        REPO / "configs/smoke/cycletime.yaml",
        [
            f"data.root={tmp_path / 'videos'}",
            "data.generate.videos=2",
            "data.generate.frames=24",
            "data.batch_size=2",
            "trainer.precision=fp32",
            "trainer.log_every=1",
            f"trainer.run_dir={tmp_path / run}",
            f"tracking.uri=sqlite:///{tmp_path / run}.db",
            "tracking.system_metrics=false",
            *overrides,
        ],
    )


def train_in_process(trainer: Trainer) -> int:
    """`trainer.train()`, then the SIGTERM/SIGINT handlers it installs are put back (pytest's own)."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return trainer.train()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
