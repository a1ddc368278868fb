"""Turning planned samples into pipeline inputs, on a rank's worker threads, with stand-ins for failures.

Letters: F frames per clip, H/W frame height/width, C = 3 colour channels.

A sample routed to DALI becomes the file's encoded bytes (held in RAM up to a bound); one routed to
PyAV is decoded here: only its frames, or, with a decoded-frame cache (`data.frame_cache_gib`), the
whole video once, whose frames later samples are cut from. A sample whose file cannot be read or
decoded is replaced by a random clip of another video (`EpochPlan.replacement`), the file is named
once in a warning and not used again, and every replacement is counted, so a corrupt file never
stops the run or changes a batch count.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence

import av
import numpy as np

from train.data.cpu_decode import DecodeError, FrameTable, decode_frames, frame_table
from train.data.decoders import Decoder
from train.data.file_cache import FileBytesCache, RamCache
from train.data.index import VideoIndex, short_error
from train.data.pipeline import SampleInput
from train.data.sampling import EpochPlan, Sample

log = logging.getLogger(__name__)

MAX_REPLACEMENTS = 16  # stand-ins tried in a row for one failing sample before the run is stopped
PYAV_THREADS = 2  # FFmpeg threads per PyAV decode (the worker pool already decodes samples in parallel)
LOAD_ERRORS = (DecodeError, OSError, ValueError, IndexError, av.error.FFmpegError)


class SampleSource:
    """Loads samples for one rank; safe to call from several threads."""

    def __init__(
        self, index: VideoIndex, routes: Sequence[Decoder], ram_cache_bytes: int, frame_cache_bytes: int = 0
    ):
        self.index = index
        self.routes = list(routes)
        self.files = FileBytesCache(ram_cache_bytes)
        self.frames = RamCache(frame_cache_bytes) if frame_cache_bytes > 0 else None
        self._tables: dict[int, FrameTable] = {}
        self._lock = threading.Lock()
        self.failed: dict[int, str] = {}  # video id -> first error
        self.counts: Counter[str] = Counter()

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def prepare(self, plan: EpochPlan, sample: Sample) -> tuple[Sample, SampleInput]:
        """Load `sample`, or a stand-in when it (or its file) fails -> (the sample used, its input)."""
        for attempt in range(MAX_REPLACEMENTS + 1):
            if sample.video_id not in self.failed:
                try:
                    return sample, self.load(sample)
                except LOAD_ERRORS as err:
                    self.mark_failed(sample.video_id, err)
            sample = self.replacement(plan, sample, attempt)
        raise RuntimeError(f"data: {MAX_REPLACEMENTS} stand-ins in a row failed to decode; see the warnings")

    def replacement(self, plan: EpochPlan, sample: Sample, attempt: int) -> Sample:
        """A stand-in for `sample` from a video that has not failed (counted)."""
        with self._lock:
            excluded = set(self.failed)
            self.counts["replaced"] += 1
        stand_in = plan.replacement(sample.position, attempt, excluded)
        if stand_in is None:
            raise RuntimeError("data: every video failed to decode; see the warnings above")
        return stand_in

    def load(self, sample: Sample) -> SampleInput:
        """Bytes for DALI, or frames decoded by PyAV uint8 [F, H, W, C]; raises one of LOAD_ERRORS."""
        entry = self.index.videos[sample.video_id]
        if self.routes[sample.video_id] == "pyav":
            table = self._tables.get(sample.video_id)
            if table is None:
                table = self._tables[sample.video_id] = frame_table(entry.path)
            if self.frames is not None:
                every = np.arange(len(table))
                video = self.frames.get(
                    sample.video_id, lambda: decode_frames(entry.path, every, table, threads=PYAV_THREADS)
                )
                frames = video[sample.frame_idx]
            else:
                frames = decode_frames(entry.path, sample.frame_idx, table, threads=PYAV_THREADS)
            self.count("pyav")
            return SampleInput(sample.frame_idx, sample.crop_xy, sample.flip, decoded=frames)
        encoded = self.files.get(entry.path)
        self.count("dali")
        return SampleInput(sample.frame_idx, sample.crop_xy, sample.flip, encoded=encoded)

    def stale(self, sample: Sample, sample_input: SampleInput) -> bool:
        """Whether a prepared input no longer fits: its video failed, or was moved to PyAV since."""
        rerouted = sample_input.encoded is not None and self.routes[sample.video_id] == "pyav"
        return sample.video_id in self.failed or rerouted

    def reroute(self, video_id: int, reason: str) -> None:
        """Decode this video with PyAV from now on (DALI failed on it; PyAV may still read it)."""
        with self._lock:
            if self.routes[video_id] == "pyav":
                return
            self.routes[video_id] = "pyav"
            self.counts["rerouted"] += 1
        log.warning(
            "data: DALI could not decode %s (%s); decoding it with PyAV from now on",
            self.index.videos[video_id].path,
            reason,
        )

    def mark_failed(self, video_id: int, err: BaseException) -> None:
        """Stop using this video; warn once, naming the file."""
        path = self.index.videos[video_id].path
        reason = short_error(err) if str(err).strip() else ""  # the warning names the type already
        with self._lock:
            first = video_id not in self.failed
            self.failed.setdefault(video_id, reason)
            self._tables.pop(video_id, None)
        self.files.forget(path)
        if self.frames is not None:
            self.frames.forget(video_id)
        if first:
            log.warning(
                "data: %s failed to decode (%s: %s); its samples are replaced by other clips from now on",
                path,
                type(err).__name__,
                reason,
            )
