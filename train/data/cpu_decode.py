"""Decoding chosen frames of a video on the CPU with PyAV (H.264/HEVC on machines without NVDEC).

Letters: F requested frames, N frames of the video, H height, W width, C = 3 (RGB uint8).

Frame i is the i-th frame in presentation order, as for DALI's decoders. A `FrameTable` (one demux
pass, no decoding) maps indices to timestamps and keyframes; decoding then seeks to the keyframe at
or before each requested frame (only when that skips work) and decodes forward to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import av
import numpy as np


class DecodeError(RuntimeError):
    """A requested frame could not be decoded (the file changed, or is corrupt past the index check)."""


@dataclass(frozen=True)
class FrameTable:
    """Presentation timestamps and keyframe flags of every frame of the first video stream."""

    pts_N: np.ndarray  # int64 [N], increasing
    keyframe_N: np.ndarray  # bool [N]
    # Derived once per table (a table serves every sample of its video):
    key_before_N: np.ndarray = field(init=False, repr=False, compare=False)  # int64 [N]: last keyframe <= i
    index_of_pts: dict[int, int] = field(init=False, repr=False, compare=False)  # pts -> frame index

    def __post_init__(self) -> None:
        key_before = np.maximum.accumulate(np.where(self.keyframe_N, np.arange(len(self.pts_N)), 0))
        object.__setattr__(self, "key_before_N", key_before)
        object.__setattr__(self, "index_of_pts", {int(p): i for i, p in enumerate(self.pts_N)})

    def __len__(self) -> int:
        return len(self.pts_N)

    def keyframe_before(self, index: int) -> int:
        """The last keyframe at or before frame `index` (0 when there is none)."""
        return int(self.key_before_N[index])


def frame_table(source: str) -> FrameTable:
    """Demux (without decoding) the first video stream of the file at path `source`."""
    with av.open(source) as container:
        stream = container.streams.video[0]
        entries = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None:
                raise DecodeError("packets without timestamps: cannot seek in this file (transcode it)")
            entries.append((stamp, packet.is_keyframe))
    entries.sort()
    return FrameTable(
        pts_N=np.array([e[0] for e in entries], dtype=np.int64),
        keyframe_N=np.array([e[1] for e in entries], dtype=bool),
    )


def decode_frames(
    source: str, frame_idx_F: np.ndarray, table: FrameTable | None = None, threads: int = 1
) -> np.ndarray:
    """The frames `frame_idx_F` (any order, repeats allowed) of `source` -> uint8 [F, H, W, C] RGB.

    Raises DecodeError when a requested frame is missing from the stream.
    """
    table = frame_table(source) if table is None else table
    frame_idx_F = np.asarray(frame_idx_F, dtype=np.int64)
    if frame_idx_F.min() < 0 or frame_idx_F.max() >= len(table):
        raise DecodeError(f"frames {frame_idx_F.tolist()} outside the video's {len(table)} frames")
    wanted_set = set(frame_idx_F.tolist())
    wanted = sorted(wanted_set)
    got: dict[int, np.ndarray] = {}
    with av.open(source) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO" if threads > 1 else "SLICE"
        stream.codec_context.thread_count = threads
        position = None  # index of the next frame the decoder will give, once known
        for target in wanted:
            if target in got:
                continue
            key = table.keyframe_before(target)
            if position is None or target < position or key > position:
                # Seeking costs a decoder flush; worth it whenever it skips frames we would decode.
                container.seek(int(table.pts_N[key]), stream=stream, backward=True, any_frame=False)
                position = key
            position = _decode_until(container, stream, target, wanted_set, table.index_of_pts, got)
    missing = [i for i in wanted if i not in got]
    if missing:
        raise DecodeError(f"frames {missing[:5]} did not decode (of {len(table)})")
    return np.stack([got[int(i)] for i in frame_idx_F])


def _decode_until(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    target: int,
    wanted: set[int],
    index_of_pts: dict[int, int],
    got: dict[int, np.ndarray],
) -> int:
    """Decode forward until frame `target` is out, keeping every wanted frame met -> next frame's index."""
    last = -1
    try:
        for packet in container.demux(stream):
            # Every frame of this packet is kept before stopping: a flush returns several at once.
            for frame in packet.decode():
                index = index_of_pts.get(frame.pts if frame.pts is not None else -1, -1)
                if index < 0:
                    continue
                last = max(last, index)
                if index in wanted and index not in got:
                    got[index] = frame.to_ndarray(format="rgb24")
            if last >= target:
                return last + 1
    except av.error.EOFError:
        pass  # the decoder was drained already: nothing more comes out without a seek
    return len(index_of_pts) if last < 0 else last + 1
