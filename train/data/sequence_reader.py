"""NVDEC through DALI's sequence reader, reading exactly the clips our sampler planned (offsets mode).

Letters: B clips per batch, F frames per clip, S = the clip's span (max offset + 1), R reader pipelines.

Why a second NVDEC path: DALI's per-sample decoder (`fn.decoders.video`, used by `pipeline.py`) sets
up an NVDEC session for every clip. Measured on an H200 (12 DAVIS videos at 256p, GOP 8, CycleTime's
6 frames): about 85 ms per clip whatever the thread count or batch size, ~12 clips/s per process.
DALI's sequence reader (`fn.readers.video`) keeps its decoder open and reconfigures it between files:
~1,650 decoded frames/s per reader on the same files (docs/performance.md).

The reader picks its sequences from a `file_list` ("path label start end", frame numbers, end
exclusive), in order when not shuffled. So each line is one planned clip: start = the clip's first
frame, end = start + S, one sequence of S frames per line; the clip's frames (its offsets) are then
picked out of the sequence on the GPU. The sampler keeps deciding everything (videos, starts, crops,
flips, sharding, resume position), exactly as on the other paths.

R pipelines decode in parallel (one NVDEC session each): batch i of a chunk comes from pipeline i % R.
The pipelines are built over a chunk of this rank's plan (`CHUNK_BATCHES` consecutive batches, across
epochs) and dropped when the chunk is used up.
"""

from __future__ import annotations

import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from nvidia.dali import fn, pipeline_def
from nvidia.dali.pipeline import Pipeline

from core.method import ClipSpec
from train.data.decoders import Decoder
from train.data.index import VideoEntry, VideoIndex
from train.data.pipeline import (
    AUGMENT_INPUTS,
    PipelineSettings,
    augment_clips,
    augment_sources,
    augment_values,
    to_torch,
)
from train.data.sampling import ClipList, EpochPlan, Sample

CHUNK_BATCHES = 64  # batches of the plan one set of reader pipelines is built for
# What the reader is used for: H.264 matched the CPU decoders frame for frame on an H200; HEVC did not
# (frame 4 where 9 was asked for), and VP9 in webm failed on DALI's GPU readers.
SEQUENCE_READER_CODECS = frozenset({"h264"})


def sequence_reader_failure_advice(reason: str) -> str:
    """What to change when the NVDEC sequence reader fails for want of GPU memory ('' otherwise).

    Why: the per-sample fallback is meant for a corrupt file and runs an order of magnitude slower; on an
    H200 shared by four training runs, a reader that could not allocate its frames left a batch-64 run at
    98% data wait (docs/results/gpu-2026-12-04f). A user should learn that the GPU, not a file, is at fault.
    """
    if "allocate" not in reason.lower() and "out of memory" not in reason.lower():
        return ""
    return (
        ": the GPU ran out of memory for the decoder, and per-sample decoding is much slower; free GPU "
        "memory (other processes on it) or lower data.nvdec_readers or data.batch_size"
    )


def sequence_reader_refusal(
    readers: int, clip: ClipSpec, routes: Sequence[Decoder], videos: Sequence[VideoEntry], clips: ClipList
) -> str | None:
    """Why the sequence reader cannot serve a loader with `decoder: nvdec`; None when it can."""
    if readers == 0:
        return "data.nvdec_readers is 0"
    if clip.mode != "offsets":
        return "clips spread over whole videos are decoded per sample"
    if any(r != "nvdec" for r in routes):
        return "some files need PyAV"
    if any(v.codec not in SEQUENCE_READER_CODECS for v in videos):
        return "the sequence reader takes H.264 only"
    if clips.padded:
        return "some videos are shorter than one clip"
    if any(len(v.path.split()) != 1 for v in videos):
        return "a file path holds whitespace, which the reader's file_list cannot"
    return None


def clip_start(sample: Sample, offsets: Sequence[int]) -> int:
    """The first frame of the sequence that holds a clip: frame_idx - offsets is the same for all frames."""
    return int(sample.frame_idx[0]) - int(offsets[0])


def file_list_lines(index: VideoIndex, samples: Sequence[Sample], offsets: Sequence[int]) -> str:
    """The reader's file_list for these clips, in order: "path label start end" (frames, end exclusive)."""
    span = max(offsets) + 1
    lines = []
    for s in samples:
        start = clip_start(s, offsets)
        lines.append(f"{index.videos[s.video_id].path} {s.position} {start} {start + span}\n")
    return "".join(lines)


def build_reader_pipeline(
    settings: PipelineSettings, file_list: Path, offsets: Sequence[int], prefetch: int
) -> Pipeline:
    """One NVDEC sequence-reader pipeline over `file_list` -> batches of FCHW float32 clips on the GPU."""
    span = max(offsets) + 1

    @pipeline_def
    def reader_pipeline():
        sequences, _ = fn.readers.video(
            device="gpu",
            file_list=str(file_list),
            file_list_frame_num=True,
            file_list_include_preceding_frame=False,  # frame numbers given: no effect, silences a warning
            sequence_length=span,
            step=span,
            random_shuffle=False,  # the sampler already shuffled: keep its order
            skip_vfr_check=True,  # the index already counted the frames
            name="reader",
        )
        if tuple(offsets) == tuple(range(span)):
            frames = sequences
        else:
            picked = fn.element_extract(sequences, element_map=list(offsets))
            frames = fn.stack(*picked, axis_name="F") if len(offsets) > 1 else picked
        return augment_clips(frames, *augment_sources(), settings)

    pipe = reader_pipeline(
        batch_size=settings.batch_size,
        num_threads=settings.num_threads,
        device_id=settings.device_id,
        seed=settings.seed,
        prefetch_queue_depth=prefetch,
    )
    pipe.build()
    return pipe


@dataclass
class _Reader:
    """One pipeline of a chunk and the batches it still owes, in order."""

    pipe: Pipeline
    batches: deque[list[Sample]]  # planned, not yet fed
    in_flight: deque[list[Sample]] = field(default_factory=deque)  # fed, output pending


@dataclass
class _Chunk:
    """The reader pipelines of `batches` consecutive batches of the plan, starting at `start`."""

    start: tuple[int, int]  # (epoch, batch) of its first batch
    end: tuple[int, int]  # (epoch, batch) of the batch after its last
    readers: list[_Reader]
    handed_out: int = 0

    @property
    def done(self) -> bool:
        return all(not r.in_flight and not r.batches for r in self.readers)


class SequenceReaderStream:
    """Batches of one rank's plan decoded by R NVDEC sequence-reader pipelines (offsets clips only).

    A chunk may cross epochs (small datasets have epochs of a few batches); while one chunk is read,
    the next one's pipelines are built on a background thread, so a rebuild costs no step time.
    """

    def __init__(
        self,
        index: VideoIndex,
        settings: PipelineSettings,
        offsets: Sequence[int],
        readers: int,
        plan: Callable[[int], EpochPlan],
        batches_per_epoch: int,
        chunk_batches: int | None = None,
    ):
        self.index, self.settings, self.offsets = index, settings, tuple(offsets)
        self.readers, self.plan, self.batches_per_epoch = readers, plan, batches_per_epoch
        self.chunk_batches = CHUNK_BATCHES if chunk_batches is None else chunk_batches
        self._dir = tempfile.TemporaryDirectory(prefix="cyclecorr-nvdec-")
        self._builder = ThreadPoolExecutor(1, thread_name_prefix="cyclecorr-nvdec-build")
        self._chunk: _Chunk | None = None
        self._next_chunk: Future[_Chunk] | None = None
        self._pos = (0, 0)  # (epoch, batch) of the next batch handed out
        self.build_seconds = 0.0  # spent building reader pipelines, background builds included (logged)

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, batch) of the next batch `next` returns."""
        return self._pos

    def seek(self, epoch: int, batch: int) -> None:
        """The next batch is (epoch, batch); drops the pipelines built or in flight."""
        self._drop()
        self._pos = (epoch, batch)

    def next(self) -> tuple[list[Sample], torch.Tensor]:
        """The next batch's samples and frames [B, F, C, H, W] float32 on the GPU."""
        if self._chunk is None:
            self._chunk = self._take_chunk(self._pos)
            # Build the following chunk while this one is read.
            self._next_chunk = self._builder.submit(self._build_chunk, *self._plan_chunk(self._chunk.end))
        chunk = self._chunk
        reader = chunk.readers[chunk.handed_out % len(chunk.readers)]
        outputs = reader.pipe.share_outputs()
        frames = to_torch(outputs[0], torch.device("cuda", self.settings.device_id))
        reader.pipe.release_outputs()
        samples = reader.in_flight.popleft()
        if reader.batches:
            self._feed(reader)
            reader.pipe.schedule_run()
        chunk.handed_out += 1
        self._pos = self._after(self._pos)
        if chunk.done:
            self._chunk = None
        return samples, frames

    def close(self) -> None:
        self._drop()
        self._builder.shutdown(wait=True)
        self._dir.cleanup()

    def _drop(self) -> None:
        self._chunk = None
        if self._next_chunk is not None:
            self._next_chunk.cancel()
            self._next_chunk = None

    def _after(self, pos: tuple[int, int]) -> tuple[int, int]:
        epoch, batch = pos
        return (epoch, batch + 1) if batch + 1 < self.batches_per_epoch else (epoch + 1, 0)

    def _take_chunk(self, start: tuple[int, int]) -> _Chunk:
        """The chunk starting at `start`: the one built in the background when it fits, else built now."""
        pending, self._next_chunk = self._next_chunk, None
        if pending is not None and not pending.cancel():
            chunk = pending.result()
            if chunk.start == start:
                return chunk
        return self._build_chunk(*self._plan_chunk(start))

    def _plan_chunk(self, start: tuple[int, int]) -> tuple[tuple[int, int], list[list[Sample]]]:
        """The samples of the `chunk_batches` batches from `start` on (plans are computed here, on the
        caller's thread, so the builder thread never touches the loader)."""
        batches, pos = [], start
        for _ in range(self.chunk_batches):
            batches.append(self.plan(pos[0]).batch(pos[1]))
            pos = self._after(pos)
        return start, batches

    def _build_chunk(self, start: tuple[int, int], batches: list[list[Sample]]) -> _Chunk:
        began = time.perf_counter()
        readers = []
        for r in range(min(self.readers, len(batches))):
            mine = batches[r :: self.readers]
            path = Path(self._dir.name) / f"e{start[0]}-b{start[1]}-r{r}.txt"
            path.write_text(file_list_lines(self.index, [s for b in mine for s in b], self.offsets))
            prefetch = min(self.settings.prefetch, len(mine))
            reader = _Reader(build_reader_pipeline(self.settings, path, self.offsets, prefetch), deque(mine))
            for _ in range(prefetch):
                self._feed(reader)
            reader.pipe.schedule_run()  # the first run decodes `prefetch` batches
            readers.append(reader)
        self.build_seconds += time.perf_counter() - began
        end = start
        for _ in batches:
            end = self._after(end)
        return _Chunk(start, end, readers)

    @staticmethod
    def _feed(reader: _Reader) -> None:
        samples = reader.batches.popleft()
        values = [augment_values(s.crop_xy, s.flip) for s in samples]
        for name in AUGMENT_INPUTS:
            reader.pipe.feed_input(name, [v[name] for v in values])
        reader.in_flight.append(samples)
