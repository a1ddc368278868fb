"""Re-encode a dataset for fast random access: short GOP, no B-frames, a target short side, even sizes.

Seeking decodes from the keyframe before the requested frame, so a clip of a long-GOP video costs up
to a whole GOP of decoding per frame group; a keyframe every 8 frames bounds that. Frames are
streamed (never a whole video in memory), scaled in YUV (no colour conversion), and the source's
colour tags are kept. `fps` resamples the frame rate (CycleTime's VLOG frames were at 12 fps).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.video.frame import PictureType

from train.data.index import list_video_files, short_error
from train.data.video_io import codec_spec, suffix_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TranscodeSettings:
    """How every file is re-encoded."""

    short_side: int | None = 256  # None: keep the size (rounded down to even)
    gop: int = 8  # frames per keyframe
    codec: str = "h264"
    fps: float | None = None  # None: keep the source rate
    crf: int | None = None  # None: the codec's near-lossless default in video_io.CODECS


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Width and height scaled so the short side is `short_side`, both rounded to even numbers."""
    if short_side is not None:
        scale = short_side / min(width, height)
        width, height = round(width * scale), round(height * scale)
    return max(2, width - width % 2), max(2, height - height % 2)


def transcode_file(src: str | Path, dst: str | Path, settings: TranscodeSettings) -> dict:
    """Re-encode `src` into `dst` (written beside it, then renamed) -> {frames, width, height, fps}."""
    spec = codec_spec(settings.codec)
    crf = spec.default_crf if settings.crf is None else settings.crf
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    try:
        with av.open(str(src)) as source:
            stream_in = source.streams.video[0]
            stream_in.thread_type = "AUTO"
            rate_in = stream_in.average_rate or stream_in.guessed_rate or Fraction(25)
            rate_out = Fraction(settings.fps).limit_denominator(1001 * 1000) if settings.fps else rate_in
            width, height = output_size(
                stream_in.codec_context.width, stream_in.codec_context.height, settings.short_side
            )
            options = {"movflags": "+faststart"} if dst.suffix == ".mp4" else {}
            with av.open(str(partial), "w", container_options=options) as target:
                stream_out = target.add_stream(
                    spec.encoder, rate=rate_out, options=spec.options(settings.gop, False, crf)
                )
                stream_out.width, stream_out.height, stream_out.pix_fmt = width, height, spec.pix_fmt
                ctx, src_ctx = stream_out.codec_context, stream_in.codec_context
                ctx.gop_size, ctx.max_b_frames = settings.gop, 0
                ctx.colorspace, ctx.color_range = src_ctx.colorspace, src_ctx.color_range
                if spec.pix_fmt.startswith("yuvj"):  # full-range JPEG layout (MJPEG)
                    ctx.color_range = spec.color_range
                ctx.color_primaries, ctx.color_trc = src_ctx.color_primaries, src_ctx.color_trc
                written = 0
                for index, frame in enumerate(source.decode(stream_in)):
                    # Frame `index` covers [index, index + 1) / rate_in: emit every output slot in it.
                    end = (index + 1) / rate_in
                    while written / rate_out < end:
                        out = frame.reformat(width=width, height=height, format=spec.pix_fmt)
                        out.pts, out.time_base = written, 1 / rate_out
                        # Decoded frames keep their picture type, and encoders obey it: an I-frame
                        # of the source would force a keyframe and break the fixed GOP.
                        out.pict_type = PictureType.NONE
                        target.mux(stream_out.encode(out))
                        written += 1
                target.mux(stream_out.encode(None))
        if written == 0:
            raise ValueError("no frame decoded")
        os.replace(partial, dst)
    finally:
        partial.unlink(missing_ok=True)
    return {"frames": written, "width": width, "height": height, "fps": float(rate_out)}


@dataclass(frozen=True)
class TranscodeSummary:
    """What `transcode_tree` did."""

    done: list[str]
    skipped: list[str]  # already transcoded
    failed: list[tuple[str, str]]  # (path, reason)
    frames: int
    seconds: float

    def format(self) -> str:
        lines = [
            f"transcoded {len(self.done)} files ({self.frames} frames) in {self.seconds:.1f}s; "
            f"{len(self.skipped)} already done; {len(self.failed)} failed"
        ]
        lines.extend(f"  failed {name}: {reason}" for name, reason in self.failed)
        return "\n".join(lines)


def _target(src: Path, src_root: Path, dst_root: Path, codec: str) -> Path:
    base = src_root if src_root.is_dir() else src_root.parent
    try:
        rel = src.relative_to(base.resolve())
    except ValueError:
        rel = Path(src.name)
    return dst_root / rel.with_suffix(suffix_for(codec))


def transcode_tree(
    src_root: str | Path, dst_root: str | Path, settings: TranscodeSettings, workers: int = 1
) -> TranscodeSummary:
    """Transcode every video under `src_root` (folder or .txt list) into `dst_root`, keeping relative
    paths; files already present in `dst_root` are skipped. Progress goes to the log."""
    src_root, dst_root = Path(src_root), Path(dst_root)
    files, _ = list_video_files(src_root)
    jobs = {src: _target(src, src_root, dst_root, settings.codec) for src in files}
    skipped = [str(dst) for dst in jobs.values() if dst.exists()]
    todo = {src: dst for src, dst in jobs.items() if not dst.exists()}
    log.info("transcoding %d files (%d already done) with %s", len(todo), len(skipped), settings)
    done, failed, frames, start = [], [], 0, time.monotonic()
    # spawn: never fork a process that may hold CUDA or decoder threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max(1, workers), mp_context=context) as pool:
        futures = {pool.submit(transcode_file, src, dst, settings): src for src, dst in todo.items()}
        for k, future in enumerate(as_completed(futures), 1):
            src = futures[future]
            try:
                info = future.result()
            except (av.error.FFmpegError, OSError, ValueError, IndexError) as err:
                failed.append((src.name, short_error(err)))
                log.warning("[%d/%d] %s failed: %s", k, len(todo), src.name, failed[-1][1])
                continue
            done.append(str(todo[src]))
            frames += info["frames"]
            log.info(
                "[%d/%d] %s: %d frames -> %dx%d",
                k,
                len(todo),
                src.name,
                info["frames"],
                info["width"],
                info["height"],
            )
    return TranscodeSummary(done, skipped, failed, frames, time.monotonic() - start)
