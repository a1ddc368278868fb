"""The loader (train/data/loader.py) on the CPU: decoded pixels against the frames written, sharding,
resume, short videos, bad files and decode failures at run time. GPU (NVDEC) tests are marked `gpu`.

Codec error: the videos are smooth and written near-lossless, so a decoded frame is within
PIXEL_TOL (mean absolute error, 0..255 units) of the frame written, and nearer to it than to any
other frame of the video.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from core.method import ClipSpec
from train.config.schema import DataConfig, SyntheticConfig
from train.data.loader import VideoLoader, build_loader
from train.data.pipeline import MEAN_RGB, STD_RGB
from train.data.sampling import Sample
from train.data.sequence_reader import sequence_reader_failure_advice
from train.data.video_io import write_video

PIXEL_TOL = 3.0
H, W = 48, 64
CYCLETIME = ClipSpec(mode="offsets", offsets=(0, 2, 4, 6, 15, 17))
TCC_UNIFORM = ClipSpec(
    mode="spread", num_steps=6, sampling="offset_uniform", context_steps=2, context_stride=4
)
TCC_STRIDE = ClipSpec(
    mode="spread", num_steps=4, sampling="stride", stride=5, context_steps=2, context_stride=3
)
SUFFIX = {"h264": ".mp4", "hevc": ".mp4", "vp9": ".webm"}


def smooth_frames(T: int, seed: int, hw: tuple[int, int] = (H, W)) -> np.ndarray:
    """[T, H, W, 3] uint8: a gradient, brighter by 3 per frame, with a blob moving 2 px per frame."""
    h, w = hw
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = np.random.default_rng(seed).uniform(0, 6)
    frames = []
    for t in range(T):
        cx, cy = (6 + 2 * t) % w, h / 2 + 10 * np.sin(t / 3 + phase)
        v = 20 + 0.6 * x + 0.4 * y + 3 * t + 50 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 72)
        frames.append(np.stack([v, 0.7 * v + 30, 220 - 0.6 * v], axis=-1))
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def write_mpeg4(path: Path, T: int = 6) -> None:
    """An MPEG-4 Part 2 video: a codec the index does not accept."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for t, img in enumerate(smooth_frames(T, seed=0)):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def make_dataset(
    root: Path, codecs: list[str], lengths: list[int], hw: tuple[int, int] = (H, W)
) -> dict[str, np.ndarray]:
    """Write one video per (codec, length) -> {resolved path: frames written}."""
    written = {}
    for i, (codec, T) in enumerate(zip(codecs, lengths, strict=True)):
        frames = smooth_frames(T, seed=i, hw=hw)
        path = write_video(root / f"v{i}{SUFFIX[codec]}", frames, 24, codec=codec, gop=4)
        written[str(path.resolve())] = frames
    return written


def data_cfg(root: Path, **overrides) -> DataConfig:
    base = dict(root=str(root), batch_size=2, short_side=H, crop=40, threads=2, prefetch=2, seed=7)
    return DataConfig(**{**base, **overrides})


def loader_for(cfg: DataConfig, clip: ClipSpec, rank: int = 0, world_size: int = 1) -> VideoLoader:
    return build_loader(cfg, clip, rank=rank, world_size=world_size, local_rank=0, device=torch.device("cpu"))


def pixels(frames_BFCHW: torch.Tensor) -> np.ndarray:
    """Undo the normalisation -> float [B, F, H, W, C] in 0..255."""
    mean = torch.tensor(MEAN_RGB).view(3, 1, 1) * 255
    std = torch.tensor(STD_RGB).view(3, 1, 1) * 255
    return (frames_BFCHW.cpu() * std + mean).permute(0, 1, 3, 4, 2).numpy()


def expected_window(frames_THWC: np.ndarray, sample: Sample, crop: int) -> np.ndarray:
    """The crop/flip DALI applies for this sample: anchor = round(position * free room)."""
    _, h, w, _ = frames_THWC.shape
    x0 = int(np.floor(sample.crop_xy[0] * (w - crop) + 0.5))
    y0 = int(np.floor(sample.crop_xy[1] * (h - crop) + 0.5))
    window = frames_THWC[:, y0 : y0 + crop, x0 : x0 + crop]
    return window[:, :, ::-1] if sample.flip else window


def check_batch_pixels(
    loader: VideoLoader, batch: dict, samples: list[Sample], written: dict, tol: float = PIXEL_TOL
) -> None:
    """Each decoded frame is within `tol` of the frame written, and, colour offsets aside (the blob's
    position decides), nearer to it than to any other frame of its video."""
    got = pixels(batch["frames"])
    crop = loader.cfg.crop
    for b, sample in enumerate(samples):
        assert batch["video_id"][b].item() == sample.video_id
        assert batch["frame_idx"][b].tolist() == sample.frame_idx.tolist()
        frames = written[loader.index.videos[sample.video_id].path]
        every_window = expected_window(frames, sample, crop).astype(np.float32)  # [T, crop, crop, C]
        centred = every_window - every_window.mean(axis=(1, 2), keepdims=True)
        for f, t in enumerate(sample.frame_idx):
            err_T = np.abs(got[b, f][None] - every_window).mean(axis=(1, 2, 3))
            assert err_T[t] < tol, (b, f, t, err_T[t])
            shape_T = np.abs(got[b, f] - got[b, f].mean(axis=(0, 1)) - centred).mean(axis=(1, 2, 3))
            assert int(np.argmin(shape_T)) == t  # the requested frame, not a neighbour


@pytest.mark.parametrize(("codec", "decoder"), [("h264", "pyav"), ("vp9", "dali-cpu")])
@pytest.mark.parametrize("clip", [CYCLETIME, TCC_UNIFORM, TCC_STRIDE], ids=["offsets", "uniform", "stride"])
def test_samplers_return_the_requested_frames(
    tmp_path: Path, codec: str, decoder: str, clip: ClipSpec
) -> None:
    written = make_dataset(tmp_path, [codec] * 3, [30, 24, 36])
    with loader_for(data_cfg(tmp_path), clip) as loader:
        assert loader.decoder == decoder
        plan = loader.plan(0)
        for b, batch in enumerate(loader.epoch_iter()):
            assert batch["frames"].shape == (2, clip.frames_per_clip, 3, 40, 40)
            assert batch["frames"].dtype == torch.float32
            check_batch_pixels(loader, batch, plan.batch(b), written)
            lengths = [loader.index.videos[v].frames for v in batch["video_id"].tolist()]
            assert batch["video_len"].tolist() == lengths
        stats = loader.stats()
        assert stats["samples_" + ("pyav" if decoder == "pyav" else "dali")] > 0
    if clip.mode == "offsets":
        assert all(np.array_equal(s.frame_idx - s.frame_idx[0], clip.offsets) for s in plan.batch(0))
    else:
        steps = plan.batch(0)[0].frame_idx.reshape(clip.num_steps, clip.context_steps)
        assert np.all(np.diff(steps[:, -1]) >= 0)
        assert np.array_equal(steps[:, 0], np.maximum(steps[:, 1] - clip.context_stride, 0))


def test_mixed_codecs_resize_and_flip(tmp_path: Path) -> None:
    written = make_dataset(tmp_path, ["h264", "vp9", "h264", "vp9"], [20, 20, 22, 22])
    cfg = data_cfg(tmp_path, batch_size=4, crop=40)
    with loader_for(cfg, CYCLETIME) as loader:
        assert loader.decoder == "dali-cpu+pyav"
        flips = []
        for b, batch in enumerate(loader.epoch_iter()):
            samples = loader.plan(0).batch(b)
            check_batch_pixels(loader, batch, samples, written)  # both decoders in one batch
            flips += [s.flip for s in samples]
        assert True in flips and False in flips
    small = dataclasses.replace(cfg, short_side=24, crop=24, flip=False)
    with loader_for(small, CYCLETIME) as loader:
        batch = next(iter(loader))
        assert batch["frames"].shape == (4, 6, 3, 24, 24)
        sample = loader.plan(0).batch(0)[0]
        frames = written[loader.index.videos[sample.video_id].path][sample.frame_idx]
        half = frames.reshape(6, 24, 2, 32, 2, 3).mean(axis=(2, 4))  # the 2x downscale, area average
        x0 = int(np.floor(sample.crop_xy[0] * 8 + 0.5))
        assert np.abs(pixels(batch["frames"])[0] - half[:, :, x0 : x0 + 24]).mean() < PIXEL_TOL


def test_two_ranks_disjoint_and_equal(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["h264", "vp9", "h264", "vp9", "h264"], [20, 40, 19, 30, 60])
    cfg = data_cfg(tmp_path, batch_size=2, crop=32, short_side=32)

    def epoch(rank: int, world: int) -> tuple[list, list, int]:
        with loader_for(cfg, CYCLETIME, rank, world) as loader:
            batches = list(loader.epoch_iter())
            assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batch"] == 0
            valid, padded = [], []
            for batch in batches:
                for vid, idx, ok in zip(batch["video_id"], batch["frame_idx"], batch["valid"], strict=True):
                    (valid if ok else padded).append((int(vid), tuple(idx.tolist())))
            return valid, padded, len(batches)

    r0, r1, one = epoch(0, 2), epoch(1, 2), epoch(0, 1)
    assert r0[2] == r1[2] == 2  # 1 + 2 + 1 + 1 + 3 = 8 clips -> 2 batches of 2 on each rank
    assert len(r0[0]) + len(r0[1]) == len(r1[0]) + len(r1[1])
    assert not set(r0[0]) & set(r1[0])
    assert sorted(r0[0] + r1[0]) == sorted(one[0])  # together: every clip of the epoch, once
    assert len(r0[1]) + len(r1[1]) == 0 and len(one[0]) == 8
    cfg3 = dataclasses.replace(cfg, batch_size=3)
    with loader_for(cfg3, CYCLETIME, 1, 2) as loader:
        flags = torch.cat([b["valid"] for b in loader.epoch_iter()])
    assert loader.batches_per_epoch == 2 and flags.tolist().count(False) == 2  # 12 positions, 8 clips, rank 1


def test_resume_gives_the_same_next_batches(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["h264", "vp9", "h264"], [30, 30, 40])
    cfg = data_cfg(tmp_path, batch_size=1)
    with loader_for(cfg, CYCLETIME) as loader:
        assert loader.batches_per_epoch == 4  # 1 + 1 + 2 clips
        stream = iter(loader)
        for _ in range(2):
            next(stream)
        state = loader.state_dict()
        expected = [next(stream) for _ in range(3)]  # crosses into epoch 1
    assert state["epoch"] == 0 and state["batch"] == 2
    with loader_for(cfg, CYCLETIME) as resumed:
        resumed.load_state_dict(state)
        stream = iter(resumed)
        got = [next(stream) for _ in range(3)]
    for a, b in zip(expected, got, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_background_batch_thread_matches_the_calling_thread(tmp_path: Path) -> None:
    """data.batch_thread: the same batches in the same order as assembling them on the caller's thread,
    the caller's position (not the thread's, which runs ahead) in state_dict, and the thread gone on close."""
    import threading

    make_dataset(tmp_path, ["h264", "vp9", "h264"], [30, 30, 40])
    runs = {}
    for threaded in (False, True):
        with loader_for(data_cfg(tmp_path, batch_size=1, batch_thread=threaded), CYCLETIME) as loader:
            stream = iter(loader)
            batches = [next(stream) for _ in range(6)]  # crosses into epoch 1
            runs[threaded] = (batches, loader.state_dict(), loader.epoch)
            alive = any(t.name == "cyclecorr-batches" for t in threading.enumerate())
            assert alive == threaded
        assert not any(t.name == "cyclecorr-batches" for t in threading.enumerate())
    (plain, plain_state, plain_epoch), (ahead, ahead_state, ahead_epoch) = runs[False], runs[True]
    assert ahead_state == plain_state and ahead_state["epoch"] == 1 and ahead_state["batch"] == 2
    assert ahead_epoch == plain_epoch == 1
    for a, b in zip(plain, ahead, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_background_batch_thread_raises_on_the_callers_thread(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["h264", "h264"], [30, 30])
    with loader_for(data_cfg(tmp_path, batch_size=1), CYCLETIME) as loader:
        for path in tmp_path.glob("*.mp4"):  # every file breaks after indexing: nothing left to decode
            path.write_bytes(path.read_bytes()[:200])
        with pytest.raises(RuntimeError, match="every video failed to decode"):
            next(iter(loader))


@pytest.mark.parametrize("policy", ["skip", "pad"])
def test_short_videos_skipped_or_padded(
    tmp_path: Path, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    written = make_dataset(tmp_path, ["h264", "h264", "vp9"], [24, 10, 30])
    caplog.set_level(logging.INFO, logger="train.data")
    with loader_for(data_cfg(tmp_path, short_videos=policy, batch_size=1), CYCLETIME) as loader:
        short_id = next(i for i, v in enumerate(loader.index.videos) if v.frames == 10)
        seen = {}
        for batch in loader.epoch_iter():
            seen[int(batch["video_id"][0])] = batch
        stats = loader.stats()
    if policy == "skip":
        assert stats["short_skipped"] == 1 and stats["short_padded"] == 0 and short_id not in seen
        assert "1 videos shorter than one clip (18 frames) skipped (data.short_videos: skip)" in caplog.text
    else:
        assert stats["short_padded"] == 1 and short_id in seen
        assert "padded by repeating their last frame (data.short_videos: pad)" in caplog.text
        batch = seen[short_id]
        assert batch["frame_idx"][0].tolist() == [0, 2, 4, 6, 9, 9]
        frames = written[loader.index.videos[short_id].path]
        got = pixels(batch["frames"])[0]
        assert np.abs(got[5] - got[4]).max() < 1e-3  # the last frame, twice
        assert np.abs(got[4].mean() - frames[9].mean()) < PIXEL_TOL


def test_unreadable_files_are_left_out_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_dataset(tmp_path, ["h264", "vp9"], [24, 24])
    (tmp_path / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
    (tmp_path / "empty.webm").write_bytes(b"")
    whole = (tmp_path / "v0.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    write_mpeg4(tmp_path / "unsupported.mkv")
    caplog.set_level(logging.INFO, logger="train.data")
    with loader_for(data_cfg(tmp_path), CYCLETIME) as loader:
        batches = list(loader.epoch_iter())
        assert len(batches) == loader.batches_per_epoch == 1
        assert loader.stats()["files_unreadable"] == 4 and len(loader.index) == 2
    for name in ("corrupt.mp4", "empty.webm", "truncated.mp4", "unsupported.mkv"):
        assert f"left out {name}: " in caplog.text


def test_decode_failures_at_run_time_are_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_dataset(tmp_path, ["h264", "vp9", "h264", "vp9"], [30, 30, 30, 30])
    with loader_for(data_cfg(tmp_path, batch_size=2), CYCLETIME) as loader:
        # The files change after indexing: H.264 (PyAV) cut short, VP9 (DALI) overwritten.
        v0, v1 = tmp_path / "v0.mp4", tmp_path / "v1.webm"
        v0.write_bytes(v0.read_bytes()[: v0.stat().st_size // 3])
        v1.write_bytes(np.random.default_rng(1).bytes(v1.stat().st_size))
        seen = set()
        for _ in range(3):
            batches = list(loader.epoch_iter())
            assert len(batches) == loader.batches_per_epoch
            seen |= {int(v) for b in batches for v in b["video_id"]}
        stats = loader.stats()
    failed = {i for i, v in enumerate(loader.index.videos) if v.name in ("v0.mp4", "v1.webm")}
    assert not seen & failed and seen
    assert stats["videos_failed"] == 2 and stats["samples_replaced"] >= 2 and stats["pipeline_rebuilds"] >= 1
    assert f"{v0.resolve()} failed to decode (DecodeError" in caplog.text
    assert f"DALI could not decode {v1.resolve()} (" in caplog.text  # first moved to PyAV, which fails too
    assert f"{v1.resolve()} failed to decode (InvalidDataError" in caplog.text


def test_a_file_dali_cannot_decode_moves_to_pyav(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    written = make_dataset(tmp_path, ["vp9", "vp9", "vp9"], [30, 30, 30])
    with loader_for(data_cfg(tmp_path, batch_size=2, prefetch=1), CYCLETIME) as loader:
        assert loader.decoder == "dali-cpu"
        # Same frames, but H.264 under the .webm name: DALI's CPU decoder refuses it, PyAV reads it.
        v1 = tmp_path / "v1.webm"
        frames = written[str(v1.resolve())]
        v1.write_bytes(write_video(tmp_path / "h264" / "v1.mp4", frames, 24, codec="h264").read_bytes())
        seen = set()
        for b, batch in enumerate(loader.epoch_iter()):
            check_batch_pixels(loader, batch, loader.plan(0).batch(b), written)
            seen |= {int(v) for v in batch["video_id"]}
        stats = loader.stats()
        assert loader.decoder == "dali-cpu+pyav"
    assert seen == {0, 1, 2}  # nothing replaced: v1 is decoded by PyAV
    assert stats["videos_rerouted_to_pyav"] == 1 and stats["videos_failed"] == 0
    assert stats["pipeline_rebuilds"] == 1 and stats["samples_replaced"] == 0
    assert f"DALI could not decode {v1.resolve()}" in caplog.text


def test_decoder_choice_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_dataset(tmp_path, ["h264", "vp9"], [20, 20])
    caplog.set_level(logging.INFO, logger="train.data")
    with loader_for(data_cfg(tmp_path), CYCLETIME) as loader:
        assert loader.decoder == "dali-cpu+pyav"
    assert "decoder dali-cpu+pyav (dali-cpu: 1 files (vp9/yuv420p x1); pyav: 1 files (h264/yuv420p x1))" in (
        caplog.text
    )
    caplog.clear()
    with loader_for(data_cfg(tmp_path, decoder="pyav"), CYCLETIME) as loader:
        assert loader.decoder == "pyav"
        assert next(iter(loader))["frames"].shape == (2, 6, 3, 40, 40)
    assert "decoder pyav (pyav: 2 files" in caplog.text
    with pytest.raises(ValueError, match=r"data\.decoder: nvdec needs a CUDA device"):
        loader_for(data_cfg(tmp_path, decoder="nvdec"), CYCLETIME)
    with pytest.raises(ValueError, match=r"data.crop \(40\) must be <= data.short_side \(32\)"):
        loader_for(data_cfg(tmp_path, short_side=32), CYCLETIME)


def test_labels_follow_the_frames(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["h264", "vp9"], [24, 24])
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"v0": [t // 5 for t in range(24)]}))
    with loader_for(data_cfg(tmp_path, labels=str(labels), batch_size=1), TCC_UNIFORM) as loader:
        for batch in loader.epoch_iter():
            idx, lab = batch["frame_idx"][0], batch["labels"][0]
            if loader.index.videos[int(batch["video_id"][0])].name == "v0.mp4":
                assert lab.tolist() == (idx // 5).tolist()
            else:
                assert lab.tolist() == [-1] * len(idx)


def test_missing_root_is_generated(tmp_path: Path) -> None:
    gen = SyntheticConfig(kind="sprites", videos=2, frames=20, width=48, height=32, codec="h264")
    cfg = data_cfg(tmp_path / "synthetic", generate=gen, short_side=32, crop=32)
    with loader_for(cfg, CYCLETIME) as loader:
        assert [v.frames for v in loader.index.videos] == [20, 20]
        assert next(iter(loader))["frames"].shape == (2, 6, 3, 32, 32)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("codec", "readers"),
    [("h264", 4), ("h264", 0)],
    ids=["h264-sequence-reader", "h264-per-sample"],
)
def test_nvdec_matches_the_cpu_decoders(tmp_path: Path, codec: str, readers: int) -> None:
    # Only H.264 goes to NVDEC (train/data/decoders.py says why: VP9 and HEVC returned wrong frames).
    hw = (H, W)
    written = make_dataset(tmp_path, [codec] * 3, [30, 24, 36], hw=hw)
    # No resize: compare with the frames written. The CPU side decodes with PyAV / DALI's CPU decoder.
    cfg = data_cfg(tmp_path, short_side=hw[0], decoder="nvdec", nvdec_readers=readers)
    gpu = build_loader(cfg, CYCLETIME, rank=0, world_size=1, local_rank=0, device=torch.device("cuda"))
    with gpu, loader_for(dataclasses.replace(cfg, decoder="auto"), CYCLETIME) as cpu:
        assert gpu.decoder == "nvdec"
        # readers=0 decodes per sample (DALI's `decoders.video`).
        assert (gpu._reader is not None) == (readers > 0)
        for b, (a, c) in enumerate(zip(gpu.epoch_iter(), cpu.epoch_iter(), strict=True)):
            assert a["frames"].device.type == "cuda" and a["frame_idx"].device.type == "cuda"
            assert torch.equal(a["frame_idx"].cpu(), c["frame_idx"])
            # NVDEC's YUV -> RGB conversion is DALI's own (the CPU paths use FFmpeg's): more colour error.
            check_batch_pixels(gpu, {k: v.cpu() for k, v in a.items()}, gpu.plan(0).batch(b), written, tol=8)
        stats = gpu.stats()
    assert stats["videos_rerouted_to_pyav"] == 0 and stats["samples_dali"] > 0  # NVDEC did decode them


@pytest.mark.gpu
def test_auto_decodes_with_nvdec_where_the_sequence_reader_serves(tmp_path: Path) -> None:
    make_dataset(tmp_path, ["h264"] * 2, [30, 36])
    cfg = data_cfg(tmp_path, decoder="auto")
    for clip, decoder in ((CYCLETIME, "nvdec"), (TCC_STRIDE, "pyav")):
        with build_loader(
            cfg, clip, rank=0, world_size=1, local_rank=0, device=torch.device("cuda")
        ) as loader:
            assert loader.decoder == decoder and (loader._reader is not None) == (decoder == "nvdec")
            assert next(iter(loader))["frames"].device.type == "cuda"


@pytest.mark.gpu
def test_nvdec_sequence_reader_crosses_chunks_and_resumes(tmp_path: Path, monkeypatch) -> None:
    """Chunks of one batch over 2 reader pipelines, two epochs; a resumed loader continues mid-epoch."""
    from train.data import sequence_reader

    monkeypatch.setattr(sequence_reader, "CHUNK_BATCHES", 3)
    written = make_dataset(tmp_path, ["h264"] * 4, [40, 24, 36, 60])
    cfg = data_cfg(tmp_path, decoder="nvdec", nvdec_readers=2)

    def gpu_loader() -> VideoLoader:
        return build_loader(cfg, CYCLETIME, rank=0, world_size=1, local_rank=0, device=torch.device("cuda"))

    with gpu_loader() as loader:
        assert loader._reader is not None and loader.batches_per_epoch > 3
        stream = iter(loader)
        batches = [next(stream) for _ in range(loader.batches_per_epoch + 2)]  # into epoch 1
        state_at = {}
        for i, batch in enumerate(batches):
            epoch, b = divmod(i, loader.batches_per_epoch)
            check_batch_pixels(
                loader, {k: v.cpu() for k, v in batch.items()}, loader.plan(epoch).batch(b), written, tol=8
            )
            state_at[i] = {"epoch": epoch, "batch": b}
    with gpu_loader() as resumed:
        resumed.load_state_dict({**loader.state_dict(), **state_at[2]})
        stream = iter(resumed)
        for want in batches[2:5]:
            got = next(stream)
            assert torch.equal(got["frame_idx"].cpu(), want["frame_idx"].cpu())
            assert torch.equal(got["frames"], want["frames"])


@pytest.mark.gpu
@pytest.mark.parametrize("readers", [2, 0], ids=["sequence-reader", "per-sample"])
def test_batch_thread_frames_survive_a_busy_gpu(tmp_path: Path, readers: int) -> None:
    """The batch thread copies DALI's output while the training step still fills the default stream;
    every batch must hold its own frames, not those DALI wrote into the released buffer afterwards."""
    written = make_dataset(tmp_path, ["h264"] * 4, [40, 24, 36, 60])
    cfg = data_cfg(tmp_path, decoder="nvdec", nvdec_readers=readers, batch_thread=True)
    busy = torch.randn(8192, 8192, device="cuda")
    with build_loader(
        cfg, CYCLETIME, rank=0, world_size=1, local_rank=0, device=torch.device("cuda")
    ) as loader:
        stream = iter(loader)
        for i in range(2 * loader.batches_per_epoch):
            for _ in range(4):  # ~0.1 s of queued work, no sync: like a training step running ahead
                busy = torch.tanh(busy @ busy / 8192)
            batch = next(stream)
            epoch, b = divmod(i, loader.batches_per_epoch)
            check_batch_pixels(
                loader, {k: v.cpu() for k, v in batch.items()}, loader.plan(epoch).batch(b), written, tol=8
            )


def test_files_nvdec_cannot_take_go_to_pyav(tmp_path: Path) -> None:
    """Routed up front: everything but H.264 (train/data/decoders.py: VP9 and HEVC gave wrong frames on
    an H200's NVDEC), and H.264 below NVDEC's 48x16 minimum."""
    from train.data.decoders import route
    from train.data.index import build_index

    make_dataset(tmp_path / "mixed", ["vp9", "hevc", "h264"], [12, 12, 12], hw=(144, 176))
    make_dataset(tmp_path / "tiny", ["h264"], [12], hw=(16, 32))
    mixed = build_index(tmp_path / "mixed").videos
    assert route(mixed, "nvdec", on_gpu=True) == ["nvdec" if v.codec == "h264" else "pyav" for v in mixed]
    assert route(build_index(tmp_path / "tiny").videos, "nvdec", on_gpu=True) == ["pyav"]


def test_frame_cache_decodes_each_video_once_and_gives_the_same_frames(tmp_path: Path) -> None:
    written = make_dataset(tmp_path, ["h264"] * 3, [30, 24, 36])
    batches = {}
    for cache_gib in (0.0, 0.01):
        with loader_for(data_cfg(tmp_path, frame_cache_gib=cache_gib, decoder="pyav"), TCC_UNIFORM) as loader:
            got = [batch["frames"] for _ in range(2) for batch in loader.epoch_iter()]
            batches[cache_gib] = got
            cache = loader._source.frames
    check_batch_pixels(loader, {"frames": got[0], **_ids(loader, 0)}, loader.plan(0).batch(0), written)
    assert all(torch.equal(a, b) for a, b in zip(batches[0.0], batches[0.01], strict=True))
    assert cache is not None and cache.misses == 3  # three videos, each decoded once, whole
    assert cache.hits >= len(got) * 2 - 3  # (and the batches prepared ahead)
    with loader_for(data_cfg(tmp_path, frame_cache_gib=1e-6, decoder="pyav"), TCC_UNIFORM) as loader:
        next(loader.epoch_iter())  # a video larger than the cache is decoded per sample, not kept
        assert loader._source.frames.held_bytes == 0


def _ids(loader: VideoLoader, b: int) -> dict[str, torch.Tensor]:
    samples = loader.plan(0).batch(b)
    return {
        "video_id": torch.tensor([s.video_id for s in samples]),
        "frame_idx": torch.tensor(np.stack([s.frame_idx for s in samples])),
    }


def test_sequence_reader_failure_names_gpu_memory_and_the_fix() -> None:
    # The reason text an H200 gave when four runs shared it (docs/results/gpu-2026-12-04f, call 1).
    advice = sequence_reader_failure_advice("Can't allocate 265420800 bytes on device 0.")
    assert "out of memory" in advice and "data.nvdec_readers" in advice and "data.batch_size" in advice
    # A corrupt file is what the per-sample fallback is for: no advice about memory.
    assert sequence_reader_failure_advice("Failed to decode frame 12 of /data/a.mp4") == ""
