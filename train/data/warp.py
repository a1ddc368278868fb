"""Time-warped copies of real clips, with their canonical time: TCC training and evaluation data.

Each copy replays the first `source_frames` frames of a real video through its own random monotonic
time warp (`synthetic_scenes.random_warp`: four stretches at 0.5x-2x speed), so every copy shows the
same process at different speeds; `<stem>.json` records each frame's canonical time (the source
position in [0, 1]) for the alignment error, and `labels.json` four pseudo-phases (quarters of the
canonical time) for phase classification. Different seeds give held-out warps of the same clips.

    python -m train.data warp SRC OUT --copies 16 --frames 80 --seed 0
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from train.data.index import list_video_files
from train.data.synthetic_scenes import random_warp
from train.data.video_io import write_video

log = logging.getLogger(__name__)
PHASES = 4


@dataclass(frozen=True)
class WarpSettings:
    copies: int = 16  # warped copies per source video
    frames: int = 80  # frames per copy
    source_frames: int = 600  # the stretch of each source video that is replayed
    short_side: int = 256  # frames resized so the short side is this (even sizes)
    fps: float = 24.0
    seed: int = 0


def read_resized(path: Path, max_frames: int, short_side: int) -> np.ndarray:
    """The first `max_frames` frames of a video, RGB uint8, short side resized -> [T, H, W, 3]."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        w, h = stream.codec_context.width, stream.codec_context.height
        scale = short_side / min(w, h)
        size = (2 * round(w * scale / 2), 2 * round(h * scale / 2))
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24", width=size[0], height=size[1]))
            if len(frames) == max_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no frame decodes")
    return np.stack(frames)


def warp_copies(src: str | Path, out: str | Path, settings: WarpSettings) -> list[Path]:
    """Write `settings.copies` warped copies of every video under `src` into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, labels = [], {}
    sources, _missing = list_video_files(src)
    for source in sources:
        frames = read_resized(source, settings.source_frames, settings.short_side)
        rng = np.random.default_rng([settings.seed, len(written)])
        for k in range(settings.copies):
            tau_T, _ = random_warp(rng, settings.frames)
            index_T = np.rint(tau_T * (len(frames) - 1)).astype(np.int64)
            stem = f"{source.stem}_w{settings.seed}_{k:02d}"
            written.append(write_video(out / f"{stem}.mp4", frames[index_T], settings.fps))
            meta = {
                "source": source.name,
                "canonical_time": tau_T.tolist(),
                "source_frames": index_T.tolist(),
            }
            (out / f"{stem}.json").write_text(json.dumps(meta) + "\n")
            labels[stem] = np.minimum((tau_T * PHASES).astype(int), PHASES - 1).tolist()
        log.info(
            "warp: %s -> %d copies of %d frames (from %d source frames)",
            source.name,
            settings.copies,
            settings.frames,
            len(frames),
        )
    (out / "labels.json").write_text(json.dumps(labels) + "\n")
    return written
