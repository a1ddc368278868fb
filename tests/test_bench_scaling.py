"""bench/scaling.py runs any number of processes and simulated nodes (here: gloo on the CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from train.config import SyntheticConfig
from train.data.synthetic import generate_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_one_process_and_two_simulated_nodes(tmp_path: Path) -> None:
    generate_dataset(SyntheticConfig(kind="sprites", videos=2, frames=24), tmp_path / "videos")
    out = tmp_path / "scaling.json"
    command = [
        sys.executable, str(REPO / "bench/scaling.py"),
        "--config", str(REPO / "configs/smoke/cycletime.yaml"),
        "--data", str(tmp_path / "videos"), "--gpus", "1", "--nodes", "2x1", "--zero", "0", "--steps", "4",
        "--log-every", "2", "--work", str(tmp_path / "work"), "--json", str(out), "data.batch_size=2",
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["layout"], r["gpus"], r["exit"]) for r in rows] == [("1 GPU", 1, 0), ("2 node x 1", 2, 0)]
    assert all(r["clips_per_s_per_gpu"] > 0 for r in rows)
    assert rows[0]["efficiency"] == pytest.approx(1.0) and rows[1]["efficiency"] > 0
