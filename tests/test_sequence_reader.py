"""The NVDEC sequence reader's CPU side (train/data/sequence_reader.py): the file_list it reads and when
it is used. Its decoding runs on a GPU only: tests/test_data_loader.py's `gpu` tests compare its pixels
with the frames written, across chunks, epochs and a resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from core.method import ClipSpec
from train.data.index import VideoEntry, VideoIndex
from train.data.sampling import build_clip_list, epoch_plan
from train.data.sequence_reader import clip_start, file_list_lines, sequence_reader_refusal

CYCLETIME = ClipSpec(mode="offsets", offsets=(0, 2, 4, 6, 15, 17))
TCC = ClipSpec(mode="spread", num_steps=4, sampling="stride", stride=5, context_steps=2, context_stride=3)


def entry(path: str, frames: int, codec: str = "h264") -> VideoEntry:
    return VideoEntry(path, frames, 24.0, 64, 48, codec, "yuv420p", frames // 8, 1000, 0)


def test_file_list_holds_each_planned_clip_once_in_order() -> None:
    videos = [entry("/d/a.mp4", 40), entry("/d/b.mp4", 75), entry("/d/c.mp4", 18)]
    index = VideoIndex("/d", videos)
    clips = build_clip_list(index.lengths(), CYCLETIME, "skip")
    plan = epoch_plan(clips, CYCLETIME, index.lengths(), seed=3, epoch=0, rank=1, world_size=2, batch_size=2)
    samples = [s for b in range(plan.batches) for s in plan.batch(b)]
    lines = file_list_lines(index, samples, CYCLETIME.offsets).splitlines()
    assert len(lines) == len(samples)
    for line, s in zip(lines, samples, strict=True):
        path, label, start, end = line.split()
        assert path == videos[s.video_id].path and int(label) == s.position
        # One sequence of span frames per line (end exclusive), inside the video, holding the clip.
        assert int(end) - int(start) == 18 and int(start) >= 0 and int(end) <= videos[s.video_id].frames
        assert (int(start) + np.array(CYCLETIME.offsets) == s.frame_idx).all()
        assert clip_start(s, CYCLETIME.offsets) == int(start)


def test_the_reader_serves_only_what_it_can() -> None:
    videos = [entry("/d/a.mp4", 40), entry("/d/b.mp4", 75)]
    lengths = np.array([v.frames for v in videos])
    clips = build_clip_list(lengths, CYCLETIME, "pad")
    nvdec = ["nvdec", "nvdec"]
    assert sequence_reader_refusal(4, CYCLETIME, nvdec, videos, clips) is None
    assert "nvdec_readers" in sequence_reader_refusal(0, CYCLETIME, nvdec, videos, clips)
    assert "per sample" in sequence_reader_refusal(
        4, TCC, nvdec, videos, build_clip_list(lengths, TCC, "pad")
    )
    assert "PyAV" in sequence_reader_refusal(4, CYCLETIME, ["nvdec", "pyav"], videos, clips)
    vp9 = [dataclasses.replace(videos[0], codec="vp9"), videos[1]]
    assert "H.264 only" in sequence_reader_refusal(4, CYCLETIME, nvdec, vp9, clips)
    short = [videos[0], entry("/d/s.mp4", 10)]
    padded = build_clip_list(np.array([40, 10]), CYCLETIME, "pad")
    assert "shorter" in sequence_reader_refusal(4, CYCLETIME, nvdec, short, padded)
    spaced = [videos[0], entry(str(Path("/d/with space.mp4")), 40)]
    assert "whitespace" in sequence_reader_refusal(4, CYCLETIME, nvdec, spaced, clips)


def test_chunks_follow_the_plan_across_epochs() -> None:
    from train.data.pipeline import PipelineSettings
    from train.data.sequence_reader import SequenceReaderStream

    videos = [entry("/d/a.mp4", 40), entry("/d/b.mp4", 75)]
    index = VideoIndex("/d", videos)
    clips = build_clip_list(index.lengths(), CYCLETIME, "skip")

    def plan(epoch: int):
        return epoch_plan(
            clips, CYCLETIME, index.lengths(), seed=0, epoch=epoch, rank=0, world_size=1, batch_size=2
        )

    per_epoch = plan(0).batches
    settings = PipelineSettings(batch_size=2, short_side=48, crop=40, device_id=0, dali_decoder="mixed")
    stream = SequenceReaderStream(
        index, settings, CYCLETIME.offsets, 2, plan, per_epoch, chunk_batches=per_epoch + 1
    )
    try:
        start, batches = stream._plan_chunk((0, 1))
        # per_epoch + 1 batches from (0, 1): the rest of epoch 0, then epoch 1 from its start.
        want = [plan(0).batch(b) for b in range(1, per_epoch)] + [plan(1).batch(b) for b in range(2)]
        assert start == (0, 1) and len(batches) == len(want)
        for got_b, want_b in zip(batches, want, strict=True):
            assert [(s.position, s.video_id, s.frame_idx.tolist()) for s in got_b] == [
                (s.position, s.video_id, s.frame_idx.tolist()) for s in want_b
            ]
    finally:
        stream.close()
