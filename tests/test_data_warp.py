"""Time-warped copies of a real clip: the right source frames, monotone canonical time, phases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from train.data.synthetic_scenes import make_sprites_video
from train.data.video_io import probe_video, read_video_pyav, write_video
from train.data.warp import WarpSettings, warp_copies


def test_copies_replay_the_source_through_their_warps(tmp_path: Path) -> None:
    source = make_sprites_video(0, 0, 40, 96, 64).frames_THWC
    write_video(tmp_path / "src" / "clip.mp4", source, fps=24)
    settings = WarpSettings(copies=2, frames=16, source_frames=40, short_side=64, seed=3)
    written = warp_copies(tmp_path / "src", tmp_path / "out", settings)
    assert [p.name for p in written] == ["clip_w3_00.mp4", "clip_w3_01.mp4"]
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    decoded_source = read_video_pyav(tmp_path / "src" / "clip.mp4")
    metas = []
    for path in written:
        meta = json.loads(path.with_suffix(".json").read_text())
        metas.append(meta)
        tau = np.array(meta["canonical_time"])
        assert probe_video(path)["frames"] == 16 and len(tau) == 16
        assert np.all(np.diff(tau) > 0) and tau[0] >= 0 and tau[-1] <= 1
        frames = read_video_pyav(path).astype(float)
        expected = decoded_source[meta["source_frames"]].astype(float)
        assert np.abs(frames - expected).mean() < 3  # re-encoding error only
        assert labels[path.stem] == np.minimum((tau * 4).astype(int), 3).tolist()
    assert metas[0]["canonical_time"] != metas[1]["canonical_time"]  # each copy has its own warp
