"""Which frames make each clip, and which clips each rank sees in an epoch: pure numpy, deterministic.

Letters: V videos, N clips in an epoch's clip list, S samples of one rank's epoch, F frames per clip,
T steps (spread mode), K context frames per step (`context_steps`).

Everything random is drawn from generators seeded by (seed, epoch, position), so an epoch's plan is a
pure function of those numbers: resuming at batch b recomputes the plan and skips to b without
decoding anything, and the samples at a global position do not depend on the number of ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from core.method import ClipSpec, with_context

ShortVideos = Literal["skip", "pad"]

# Salts keep the streams of the permutation, the clips and the replacements apart.
_PERMUTATION, _CLIP, _REPLACEMENT = 0, 1, 2


def clip_span(spec: ClipSpec) -> int:
    """Frames between a clip's first and last index, plus one (offsets mode); 0 in spread mode."""
    return max(spec.offsets) + 1 if spec.mode == "offsets" else 0


def offsets_clip(
    rng: np.random.Generator, length: int, offsets: tuple[int, ...], lo: int = 0, hi: int | None = None
) -> np.ndarray:
    """CycleTime: a random start s in [lo, hi] (clamped to the valid starts), frames s + o -> int64 [F].

    A video shorter than the span starts at 0 and repeats its last frame (padding).
    """
    offsets_F = np.asarray(offsets, dtype=np.int64)
    last_start = length - int(offsets_F.max()) - 1
    if last_start < 0:
        return np.minimum(offsets_F, length - 1)
    hi = last_start if hi is None else min(hi, last_start)
    lo = min(max(lo, 0), hi)
    start = int(rng.integers(lo, hi + 1))
    return start + offsets_F


def offset_uniform_steps(rng: np.random.Generator, length: int, num_steps: int) -> np.ndarray:
    """TCC `offset_uniform`: T distinct indices at random, sorted -> int64 [T].

    Shorter videos give 0..length-1 then the last frame repeated (upstream's fallback).
    """
    if length < num_steps:
        return np.minimum(np.arange(num_steps, dtype=np.int64), length - 1)
    return np.sort(rng.choice(length, size=num_steps, replace=False)).astype(np.int64)


def stride_steps(rng: np.random.Generator, length: int, num_steps: int, stride: int) -> np.ndarray:
    """TCC `stride`: a random offset, then every `stride`-th frame, clipped to the video -> int64 [T]."""
    max_offset = max(length - stride * (num_steps - 1), 1)
    offset = int(rng.integers(0, max_offset))
    return np.minimum(offset + stride * np.arange(num_steps, dtype=np.int64), length - 1)


def sample_clip(
    spec: ClipSpec, length: int, rng: np.random.Generator, segment: tuple[int, int] | None = None
) -> np.ndarray:
    """The frame indices of one clip of a `length`-frame video -> int64 [F] (`spec.frames_per_clip`).

    `segment` (offsets mode) bounds the start: clips of one video spread over it (see `build_clip_list`).
    """
    if length < 1:
        raise ValueError("a video needs at least one frame")
    if spec.mode == "offsets":
        lo, hi = segment if segment is not None else (0, None)
        return offsets_clip(rng, length, spec.offsets, lo, hi)
    if spec.sampling == "offset_uniform":
        steps_T = offset_uniform_steps(rng, length, spec.num_steps)
    else:
        steps_T = stride_steps(rng, length, spec.num_steps, spec.stride)
    return with_context(steps_T, spec.context_steps, spec.context_stride)


@dataclass(frozen=True)
class ClipList:
    """The clips of one epoch before shuffling: clip i is segment `segment[i]` of video `video_id[i]`.

    Offsets mode cuts a video of L frames into max(1, L // span) segments, one clip each, so long videos
    give proportionally more clips; spread mode (a clip covers the whole video) gives one per video.
    """

    video_id: np.ndarray  # int64 [N]
    segment: np.ndarray  # int64 [N, 2]: bounds of the clip's start (offsets mode)
    skipped: tuple[int, ...]  # videos shorter than a clip, left out (short_videos: skip)
    padded: tuple[int, ...]  # videos shorter than a clip, padded with their last frame (short_videos: pad)

    def __len__(self) -> int:
        return len(self.video_id)


def build_clip_list(lengths_V: np.ndarray, spec: ClipSpec, short_videos: ShortVideos) -> ClipList:
    """The epoch's clip list over videos with these frame counts."""
    span = clip_span(spec)
    video_ids, segments, skipped, padded = [], [], [], []
    for vid, length in enumerate(int(n) for n in lengths_V):
        if length < spec.min_length:
            if short_videos == "skip":
                skipped.append(vid)
                continue
            padded.append(vid)
        count = max(1, length // span) if span else 1
        for j in range(count):
            video_ids.append(vid)
            segments.append((j * span, (j + 1) * span - 1) if span else (0, 0))
    return ClipList(
        video_id=np.asarray(video_ids, dtype=np.int64).reshape(-1),
        segment=np.asarray(segments, dtype=np.int64).reshape(-1, 2),
        skipped=tuple(skipped),
        padded=tuple(padded),
    )


@dataclass(frozen=True)
class Sample:
    """One clip to decode, with its augmentation: the loader's unit of work."""

    position: int  # in the epoch's global (padded) order: the seed of everything random below
    video_id: int
    frame_idx: np.ndarray  # int64 [F]
    crop_xy: tuple[
        float, float
    ]  # crop window position, fractions of the free room (0 left/top, 1 right/bottom)
    flip: bool
    valid: bool  # False for samples repeated to pad the epoch to whole batches on every rank


@dataclass(frozen=True)
class EpochPlan:
    """One rank's epoch: `batches` batches of `batch_size` samples, the same counts on every rank.

    The global order is a seeded permutation of the clip list, wrapped around until it fills
    world_size * batches * batch_size positions; rank r takes positions r, r + world_size, ...
    Positions past the clip list repeat clips and are flagged valid=False.
    """

    clips: ClipList
    spec: ClipSpec
    lengths_V: np.ndarray
    seed: int
    epoch: int
    rank: int
    world_size: int
    batch_size: int
    flip: bool
    order_N: np.ndarray  # clip ids in global order, padded: int64 [world_size * batches * batch_size]

    @property
    def batches(self) -> int:
        return len(self.order_N) // (self.world_size * self.batch_size)

    def positions(self, batch: int) -> np.ndarray:
        """Global positions of this rank's batch `batch` -> int64 [batch_size]."""
        if not 0 <= batch < self.batches:
            raise IndexError(f"batch {batch} outside the epoch's {self.batches} batches")
        local_B = batch * self.batch_size + np.arange(self.batch_size)
        return self.rank + self.world_size * local_B

    def batch(self, batch: int) -> list[Sample]:
        """The samples of this rank's batch `batch` (computed on demand, nothing decoded)."""
        return [self.sample(int(p)) for p in self.positions(batch)]

    def sample(self, position: int) -> Sample:
        clip = int(self.order_N[position])
        rng = np.random.default_rng([self.seed, self.epoch, _CLIP, position])
        return self._draw(rng, position, int(self.clips.video_id[clip]), tuple(self.clips.segment[clip]))

    def replacement(self, position: int, attempt: int, excluded: set[int]) -> Sample | None:
        """A stand-in for a sample that failed to decode: a random clip of a video not in `excluded`.

        Deterministic in (seed, epoch, position, attempt); None when every video is excluded.
        """
        rng = np.random.default_rng([self.seed, self.epoch, _REPLACEMENT, position, attempt])
        allowed = np.flatnonzero(~np.isin(self.clips.video_id, list(excluded)))
        if len(allowed) == 0:
            return None
        clip = int(allowed[rng.integers(len(allowed))])
        video_id = int(self.clips.video_id[clip])
        sample = self._draw(rng, position, video_id, tuple(self.clips.segment[clip]))
        return sample

    def _draw(self, rng: np.random.Generator, position: int, video_id: int, segment: tuple) -> Sample:
        length = int(self.lengths_V[video_id])
        frame_idx = sample_clip(self.spec, length, rng, segment if self.spec.mode == "offsets" else None)
        crop_xy = (float(rng.random()), float(rng.random()))
        flip = bool(rng.random() < 0.5) if self.flip else False
        return Sample(position, video_id, frame_idx, crop_xy, flip, valid=position < len(self.clips))


def epoch_plan(
    clips: ClipList,
    spec: ClipSpec,
    lengths_V: np.ndarray,
    *,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    batch_size: int,
    flip: bool = True,
) -> EpochPlan:
    """Rank `rank`'s plan for `epoch` (see `EpochPlan`)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
    if len(clips) == 0:
        raise ValueError(
            "no clip can be drawn: every video is unreadable or shorter than one clip "
            "(check `python -m train.data index`, or set data.short_videos: pad)"
        )
    per_rank = math.ceil(len(clips) / (world_size * batch_size)) * batch_size
    perm_N = np.random.default_rng([seed, epoch, _PERMUTATION]).permutation(len(clips))
    order_N = perm_N[np.arange(per_rank * world_size) % len(clips)]
    return EpochPlan(
        clips, spec, np.asarray(lengths_V), seed, epoch, rank, world_size, batch_size, flip, order_N
    )
