"""The dataset index (train/data/index.py): probing, validation, caching, bad files, labels, CLI."""

from __future__ import annotations

import json
import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from train.data.__main__ import main as data_main
from train.data.index import build_index, cache_file, format_index
from train.data.video_io import write_video


def _frames(T: int, H: int = 48, W: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (1, H, W, 3))
    return np.clip(base + 3 * np.arange(T)[:, None, None, None], 0, 255).astype(np.uint8)


def _write_mpeg4(path: Path, T: int = 6) -> None:
    """An MPEG-4 Part 2 video: a codec none of our decoders is set up for."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for t, img in enumerate(_frames(T)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.fixture
def videos(tmp_path: Path) -> Path:
    root = tmp_path / "videos"
    write_video(root / "a.mp4", _frames(20), 24, codec="h264", gop=4)
    write_video(root / "sub" / "b.webm", _frames(16, seed=1), 12, codec="vp9", gop=8)
    write_video(root / "c.avi", _frames(10, H=32, W=32, seed=2), 30, codec="mjpeg")
    write_video(root / "d.mkv", _frames(12, seed=3), 25, codec="hevc", gop=6)
    return root


def test_index_reports_frames_fps_size_codec(videos: Path) -> None:
    index = build_index(videos)
    got = {Path(v.path).name: v for v in index.videos}
    assert list(got) == ["a.mp4", "c.avi", "d.mkv", "b.webm"]  # sorted by path (sub/ after d.mkv)
    a, b, c, d = got["a.mp4"], got["b.webm"], got["c.avi"], got["d.mkv"]
    assert (a.frames, a.fps, a.width, a.height, a.codec, a.pix_fmt) == (20, 24.0, 64, 48, "h264", "yuv420p")
    assert (b.frames, b.fps, b.codec) == (16, 12.0, "vp9")
    assert (c.frames, c.fps, c.width, c.height, c.codec, c.pix_fmt) == (10, 30.0, 32, 32, "mjpeg", "yuvj420p")
    assert (d.frames, d.fps, d.codec) == (12, 25.0, "hevc")
    assert a.keyframes == 5 and c.keyframes == 10  # GOP 4; MJPEG is all keyframes
    assert a.duration == pytest.approx(20 / 24)
    assert index.bad == [] and index.lengths().tolist() == [20, 10, 12, 16]
    assert Path(index.cache_path) == videos / ".cyclecorr-index.json"


def test_cache_reused_and_invalidated_per_file(videos: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="train.data.index")
    build_index(videos)
    assert "probing 4 of 4" in caplog.text
    caplog.clear()
    again = build_index(videos)
    assert "probing" not in caplog.text  # nothing re-probed
    assert [v.frames for v in again.videos] == [20, 10, 12, 16]
    write_video(videos / "a.mp4", _frames(9), 24, codec="h264")  # the file changes: size and mtime
    caplog.clear()
    changed = build_index(videos)
    assert "probing 1 of 4" in caplog.text
    assert changed.videos[0].frames == 9
    cached = json.loads((videos / ".cyclecorr-index.json").read_text())
    assert cached["files"][str((videos / "a.mp4").resolve())]["entry"]["frames"] == 9


def test_bad_files_are_reported_with_reasons(videos: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (videos / "corrupt.mp4").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (videos / "empty.mkv").write_bytes(b"")
    whole = (videos / "a.mp4").read_bytes()
    (videos / "half.mp4").write_bytes(whole[: len(whole) // 2])
    webm = (videos / "sub" / "b.webm").read_bytes()
    (videos / "half.webm").write_bytes(webm[: len(webm) // 2])
    _write_mpeg4(videos / "mpeg4.avi")
    (videos / "notes.txt").write_text("not a video")  # not a video suffix: not even considered
    index = build_index(videos)
    reasons = {Path(b.path).name: b.reason for b in index.bad}
    assert set(reasons) == {"corrupt.mp4", "empty.mkv", "half.mp4", "half.webm", "mpeg4.avi"}
    assert reasons["empty.mkv"] == "empty file (0 bytes)"
    assert reasons["corrupt.mp4"].startswith("cannot read")
    assert "no complete video packets" in reasons["half.mp4"] or "truncated" in reasons["half.mp4"]
    assert reasons["half.webm"].startswith("truncated: the header promises 16 frames")
    assert reasons["mpeg4.avi"].startswith("unsupported codec 'mpeg4'")
    assert len(index.videos) == 4
    table = format_index(index)
    assert "4 readable videos" in table and "5 left out" in table and "corrupt.mp4: cannot read" in table
    bad_again = build_index(videos).bad  # bad files are cached too
    assert [b.reason for b in bad_again] == [b.reason for b in index.bad]


def test_list_file_and_missing_entries(videos: Path, tmp_path: Path) -> None:
    listing = videos / "train.txt"
    listing.write_text("# train split\na.mp4\nsub/b.webm\n\nmissing.mp4\n")
    index = build_index(listing)
    assert [Path(v.path).name for v in index.videos] == ["a.mp4", "b.webm"]
    assert [(Path(b.path).name, b.reason) for b in index.bad] == [("missing.mp4", "listed but missing")]
    assert Path(index.cache_path) == videos / ".train.cyclecorr-index.json"
    with pytest.raises(FileNotFoundError, match=r"data\.root"):
        build_index(tmp_path / "nowhere")


def test_read_only_data_caches_elsewhere(
    videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for folder in (videos, videos / "sub"):
        folder.chmod(0o555)
    try:
        index = build_index(videos)
        assert not (videos / ".cyclecorr-index.json").exists()
        assert Path(index.cache_path).parent == tmp_path / "xdg" / "cyclecorr"
        explicit = build_index(videos, cache_dir=tmp_path / "cache")
        assert Path(explicit.cache_path) == cache_file(videos, tmp_path / "cache")
    finally:
        for folder in (videos, videos / "sub"):
            folder.chmod(0o755)


def test_labels_checked_per_video(videos: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text(
        json.dumps({"a": [i % 3 for i in range(20)], "sub/b": ["pour"] * 10 + ["stop"] * 6, "c": [1]})
    )
    index = build_index(videos, labels=labels)
    by_name = dict(zip([Path(v.path).name for v in index.videos], index.labels, strict=True))
    assert by_name["a.mp4"].tolist() == [i % 3 for i in range(20)]
    assert by_name["b.webm"].tolist() == [0] * 10 + [1] * 6 and index.label_names == ["pour", "stop"]
    assert by_name["c.avi"] is None and by_name["d.mkv"] is None
    assert sorted(index.label_problems) == ["c.avi: 1 labels for 10 frames", "d.mkv: no labels"]


def test_index_command_prints_table_and_bad_files(videos: Path, capsys: pytest.CaptureFixture) -> None:
    (videos / "zero.mp4").write_bytes(b"")
    assert data_main(["index", str(videos), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "name",
        "frames",
        "fps",
        "WxH",
        "codec",
        "pix_fmt",
        "GOP",
        "duration",
    ]
    row = next(line for line in out.splitlines() if line.startswith("a.mp4"))
    assert row.split()[1:5] == ["20", "24.00", "64x48", "h264"]
    assert "zero.mp4: empty file (0 bytes)" in out
    os.remove(videos / "zero.mp4")
