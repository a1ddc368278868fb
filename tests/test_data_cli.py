"""`python -m train.data` commands: transcode, peek, generate (index: tests/test_data_index.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.data.__main__ import main as data_main
from train.data.cpu_decode import decode_frames
from train.data.index import build_index
from train.data.transcode import output_size
from train.data.video_io import read_video_pyav, write_video


def _frames(T: int, H: int, W: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.stack(
        [np.stack([x * 2 + 4 * t, y * 3 + t, np.full_like(x, 100 + t)], -1) for t in range(T)]
    ).astype(np.uint8)


def test_output_size_is_even_with_the_short_side() -> None:
    assert output_size(456, 256, 128) == (228, 128)
    assert output_size(640, 480, 256) == (340, 256)  # 341.33 -> 341 -> even 340
    assert output_size(101, 77, None) == (100, 76)


def test_transcode_short_gop_size_and_skip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "src"
    written = _frames(24, 48, 80)
    write_video(src / "a.mp4", written, 24, codec="h264", gop=24, bframes=True)
    write_video(src / "deep" / "b.webm", _frames(10, 40, 40), 12, codec="vp9", gop=10)
    dst = tmp_path / "dst"
    assert (
        data_main(["transcode", str(src), str(dst), "--short-side", "32", "--gop", "4", "--workers", "2"])
        == 0
    )
    assert "transcoded 2 files (34 frames)" in capsys.readouterr().out
    index = build_index(dst)
    by_name = {Path(v.path).name: v for v in index.videos}
    a, b = by_name["a.mp4"], by_name["b.mp4"]
    assert (a.frames, a.width, a.height, a.codec, a.keyframes, a.fps) == (24, 52, 32, "h264", 6, 24.0)
    assert (b.frames, b.width, b.height, b.keyframes) == (10, 32, 32, 3)
    assert (dst / "deep" / "b.mp4").is_file()
    # Frames stay in order: random access into the copy finds the frames of a full decode (up to the
    # RGB conversion: swscale there, numpy in read_video_pyav), and those follow the frames written.
    full = read_video_pyav(dst / "a.mp4").astype(float)
    picked = decode_frames(str(dst / "a.mp4"), np.array([17, 3, 9])).astype(float)
    for frame, t in zip(picked, [17, 3, 9], strict=True):
        err_T = np.abs(full - frame).mean(axis=(1, 2, 3))
        assert int(np.argmin(err_T)) == t and err_T[t] < 2
    assert np.abs(full.mean(axis=(1, 2, 3)) - written.mean(axis=(1, 2, 3))).max() < 3
    assert data_main(["transcode", str(src), str(dst)]) == 0
    assert "transcoded 0 files (0 frames) in" in (again := capsys.readouterr().out)
    assert "2 already done" in again


def test_transcode_resamples_the_frame_rate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_video(tmp_path / "src" / "a.mp4", _frames(24, 32, 32), 24, codec="h264")
    args = ["transcode", str(tmp_path / "src"), str(tmp_path / "dst"), "--short-side", "0", "--fps", "12"]
    assert data_main(args) == 0
    (video,) = build_index(tmp_path / "dst").videos
    assert (video.frames, video.fps, video.width) == (12, 12.0, 32)


@pytest.mark.parametrize("method", ["cycletime", "tcc"])
def test_peek_prints_shapes_and_writes_a_sheet(
    tmp_path: Path, method: str, capsys: pytest.CaptureFixture
) -> None:
    for i in range(2):
        write_video(tmp_path / "v" / f"{i}.mp4", _frames(40, 48, 64), 24, codec="h264")
    sheet = tmp_path / "sheet.png"
    argv = ["peek", "--method", method, str(tmp_path / "v"), "--out", str(sheet), "--batch-size", "2"]
    assert data_main([*argv, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    frames = 6 if method == "cycletime" else 40
    crop = 240 if method == "cycletime" else 224
    assert f"frames     ({2}, {frames}, 3, {crop}, {crop}) torch.float32" in out
    assert "decoder pyav; device cpu" in out
    assert Image.open(sheet).size == (frames * (crop + 2), 2 * (crop + 2))


def test_peek_takes_the_clip_from_a_config(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_video(tmp_path / "v" / "0.webm", _frames(30, 48, 64), 24, codec="vp9")
    config = tmp_path / "run.yaml"
    config.write_text(
        "method: cycletime\ncycletime: {target_offset: 9}\n"
        "data: {root: unused, batch_size: 1, short_side: 48, crop: 48}\n"
    )
    argv = ["peek", "--method", "cycletime", str(tmp_path / "v"), "--config", str(config), "--out", ""]
    assert data_main([*argv, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "offsets=(0, 2, 4, 6, 9, 11)" in out and "frames     (1, 6, 3, 48, 48)" in out
    assert "decoder dali-cpu" in out


def test_generate_delegates_to_the_synthetic_generator(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    argv = ["generate", "--kind", "sprites", "--out", str(out), "--videos", "1", "--frames", "6"]
    assert data_main([*argv, "--width", "32", "--height", "32"]) == 0
    assert [v.frames for v in build_index(out).videos] == [6]
