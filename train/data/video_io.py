"""Writing and reading whole video files with PyAV: the synthetic data's encoder and the tests' reference.

Shape letters: T frames, H height, W width, C = 3 colour channels (RGB, uint8).

Every codec here stores 4:2:0 chroma (yuv420p, or yuvj420p for MJPEG), the layout hardware decoders
(NVDEC) and DALI accept, so width and height must be even. Streams are tagged BT.601 (limited range, or
full range for MJPEG), which is also what decoders assume for untagged standard-definition video, so a
decoder that ignores the tags still converts the colours back the same way.

RGB <-> 4:2:0 conversion is done here in numpy rather than by swscale: chroma is the mean of each 2x2
block on the way in and repeated over the block on the way out (each the exact inverse of the other), and
every value is rounded to nearest. swscale's default RGB path darkens saturated colours by 1-2 levels per
conversion, and its exact-rounding path misreads decoded frames whose rows are padded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

log = logging.getLogger(__name__)

Codec = Literal["h264", "vp9", "hevc", "mjpeg"]

# BT.601 luma weights and the (offset, scale) of Y and of Cb/Cr for limited (MPEG) and full (JPEG) range.
_KR, _KB = 0.299, 0.114
_RANGES = {ColorRange.MPEG: ((16.0, 219.0), (128.0, 224.0)), ColorRange.JPEG: ((0.0, 255.0), (128.0, 255.0))}


@dataclass(frozen=True)
class CodecSpec:
    """How one codec is written: encoder, container suffixes, pixel layout and encoder options."""

    encoder: str
    suffixes: tuple[str, ...]  # the first is the default container; .mkv holds them all
    pix_fmt: str
    color_range: ColorRange
    default_crf: int
    crf_range: tuple[int, int]
    options: Callable[[int, bool, int], dict[str, str]]  # (gop, bframes, crf) -> encoder options


def _x264_options(gop: int, bframes: bool, crf: int) -> dict[str, str]:
    # scenecut=0 keeps keyframes exactly every `gop` frames (samplers seek to them). Profile high keeps
    # the stream NVDEC-decodable, which is why crf starts at 1: lossless x264 (crf 0) needs the High
    # 4:4:4 Predictive profile. At a near-lossless crf the fastest preset loses little (measured in
    # docs/synthetic-data.md); CABAC is put back so the entropy coder is the one of ordinary footage.
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={2 if bframes else 0}:open-gop=0:cabac=1"
    return {"crf": str(crf), "preset": "ultrafast", "profile": "high", "x264-params": params}


def _x265_options(gop: int, bframes: bool, crf: int) -> dict[str, str]:
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={2 if bframes else 0}:log-level=error"
    return {"crf": str(crf), "preset": "veryfast", "x265-params": params}


def _vpx_vp9_options(gop: int, bframes: bool, crf: int) -> dict[str, str]:
    # VP9 has no B-frames; its counterpart is hidden alt-ref frames, which need a look-ahead.
    return {
        "crf": str(crf),
        "b": "0",  # constant quality: with a bitrate set, crf would only be a ceiling
        "deadline": "realtime",  # ~4x faster than "good" at 160x128, 0.6 dB lower PSNR (measured)
        "cpu-used": "8",
        "row-mt": "1",
        "auto-alt-ref": "1" if bframes else "0",
        "lag-in-frames": "16" if bframes else "0",
    }


def _mjpeg_options(gop: int, bframes: bool, crf: int) -> dict[str, str]:
    # MJPEG has no rate control worth the name: pin the quantiser (1 = finest ... 31) instead.
    return {"qmin": str(crf), "qmax": str(crf)}


CODECS: dict[str, CodecSpec] = {
    "h264": CodecSpec("libx264", (".mp4", ".mkv"), "yuv420p", ColorRange.MPEG, 4, (1, 51), _x264_options),
    "hevc": CodecSpec("libx265", (".mp4", ".mkv"), "yuv420p", ColorRange.MPEG, 4, (0, 51), _x265_options),
    "vp9": CodecSpec(
        "libvpx-vp9", (".webm", ".mkv"), "yuv420p", ColorRange.MPEG, 4, (0, 63), _vpx_vp9_options
    ),
    "mjpeg": CodecSpec("mjpeg", (".avi", ".mkv"), "yuvj420p", ColorRange.JPEG, 1, (1, 31), _mjpeg_options),
}


_X265_MIN_WIDTH = 64


def suffix_for(codec: str) -> str:
    """The default container suffix of `codec` (h264/hevc -> .mp4, vp9 -> .webm, mjpeg -> .avi)."""
    return codec_spec(codec).suffixes[0]


def codec_spec(codec: str) -> CodecSpec:
    """The `CodecSpec` of `codec`; ValueError naming the choices for an unknown one."""
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    return CODECS[codec]


def _check_frames(frames_THWC: np.ndarray) -> None:
    if not isinstance(frames_THWC, np.ndarray) or frames_THWC.dtype != np.uint8:
        raise TypeError("frames must be a numpy uint8 array [T, H, W, 3] (RGB)")
    if frames_THWC.ndim != 4 or frames_THWC.shape[-1] != 3 or frames_THWC.shape[0] < 1:
        raise ValueError(f"frames must have shape [T>=1, H, W, 3] (RGB), got {frames_THWC.shape}")
    _, H, W, _ = frames_THWC.shape
    if H % 2 or W % 2:
        raise ValueError(
            f"frame size {W}x{H} must have an even width and height: 4:2:0 chroma halves both "
            "(crop or pad the frames, or pick an even synthetic.width/height)"
        )


def write_video(
    path: str | Path,
    frames_THWC_uint8: np.ndarray,
    fps: float,
    codec: Codec = "h264",
    gop: int = 8,
    bframes: bool = False,
    crf: int | None = None,
) -> Path:
    """Encode RGB frames [T, H, W, 3] uint8 into `path` at a constant frame rate and return the path.

    h264 and hevc go in .mp4 (moov atom first, so a truncated copy still opens), vp9 in .webm, mjpeg in
    .avi; .mkv takes any of them. A keyframe starts every `gop` frames; `bframes=False` keeps decode order
    equal to display order. `crf` (quantiser for mjpeg) defaults to a near-lossless value per codec. The
    file appears under its name only once complete (written beside it, then renamed).
    """
    path = Path(path)
    spec = codec_spec(codec)
    _check_frames(frames_THWC_uint8)
    if path.suffix.lower() not in spec.suffixes:
        raise ValueError(f"{codec} video {path.name!r} needs one of the suffixes {list(spec.suffixes)}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if gop < 1:
        raise ValueError(f"gop must be >= 1, got {gop}")
    if bframes and codec == "mjpeg":
        raise ValueError("mjpeg is intra-only: it has no B-frames (pass bframes=False)")
    crf = spec.default_crf if crf is None else crf
    lo, hi = spec.crf_range
    if not lo <= crf <= hi:
        raise ValueError(f"crf for {codec} must be in [{lo}, {hi}], got {crf}")

    T, H, W, _ = frames_THWC_uint8.shape
    if codec == "hevc" and W < _X265_MIN_WIDTH:
        raise ValueError(
            f"hevc needs frames at least {_X265_MIN_WIDTH} px wide, got {W}: the libx265 in PyAV's wheels "
            "corrupted the heap on narrower frames (widths 36-48 in our runs); use h264 or wider frames"
        )
    rate = Fraction(fps).limit_denominator(1001 * 1000)
    container_options = {"movflags": "+faststart"} if path.suffix.lower() == ".mp4" else {}
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with av.open(str(partial), "w", container_options=container_options) as container:
            stream = container.add_stream(spec.encoder, rate=rate, options=spec.options(gop, bframes, crf))
            stream.width, stream.height, stream.pix_fmt = W, H, spec.pix_fmt
            ctx = stream.codec_context
            ctx.gop_size = gop
            ctx.max_b_frames = 2 if bframes and codec in ("h264", "hevc") else 0
            ctx.colorspace, ctx.color_range = Colorspace.ITU601, spec.color_range
            ctx.color_primaries, ctx.color_trc = 6, 6  # SMPTE 170M (BT.601 525), as the matrix
            for t in range(T):
                yuv = rgb_to_yuv420(frames_THWC_uint8[t], spec.color_range)
                frame = av.VideoFrame.from_ndarray(yuv, format=spec.pix_fmt)
                frame.colorspace, frame.color_range = Colorspace.ITU601, spec.color_range
                frame.pts = t
                frame.time_base = 1 / rate
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    log.debug("wrote %s: %d frames %dx%d %s at %s fps", path, T, W, H, codec, rate)
    return path


def rgb_to_yuv420(rgb_HWC: np.ndarray, color_range: ColorRange = ColorRange.MPEG) -> np.ndarray:
    """RGB [H, W, 3] uint8 -> yuv420p [H * 3 / 2, W] uint8, BT.601: the Y, Cb, Cr planes one after the
    other, flat (PyAV's layout; a chroma row does not line up with an array row)."""
    (y_off, y_scale), (c_off, c_scale) = _RANGES[color_range]
    H, W, _ = rgb_HWC.shape
    rgb = rgb_HWC.astype(np.float64) / 255.0
    luma = _KR * rgb[..., 0] + (1 - _KR - _KB) * rgb[..., 1] + _KB * rgb[..., 2]
    cb = (rgb[..., 2] - luma) / (2 * (1 - _KB))
    cr = (rgb[..., 0] - luma) / (2 * (1 - _KR))
    planes = [y_off + y_scale * luma]
    for chroma in (cb, cr):
        planes.append(c_off + c_scale * chroma.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3)))
    flat = np.concatenate([p.ravel() for p in planes])
    return np.clip(np.rint(flat), 0, 255).astype(np.uint8).reshape(H * 3 // 2, W)


def yuv420_to_rgb(yuv: np.ndarray, color_range: ColorRange = ColorRange.MPEG) -> np.ndarray:
    """yuv420p [H * 3 / 2, W] uint8 -> RGB [H, W, 3] uint8, BT.601; the inverse of `rgb_to_yuv420`."""
    (y_off, y_scale), (c_off, c_scale) = _RANGES[color_range]
    H, W = yuv.shape[0] * 2 // 3, yuv.shape[1]
    flat = yuv.reshape(-1).astype(np.float64)
    luma = (flat[: H * W].reshape(H, W) - y_off) / y_scale
    cb, cr = (
        ((plane.reshape(H // 2, W // 2) - c_off) / c_scale).repeat(2, axis=0).repeat(2, axis=1)
        for plane in np.split(flat[H * W :], 2)
    )
    r = luma + 2 * (1 - _KR) * cr
    b = luma + 2 * (1 - _KB) * cb
    g = (luma - _KR * r - _KB * b) / (1 - _KR - _KB)
    return np.clip(np.rint(np.stack([r, g, b], axis=-1) * 255.0), 0, 255).astype(np.uint8)


def to_yuv420(frames_THWC_uint8: np.ndarray) -> np.ndarray:
    """RGB frames as a 4:2:0 stream gives them back: RGB -> yuv420p -> RGB, [T, H, W, 3] uint8.

    Generators pass their frames through this before writing, so that what they record as the video's
    pixels is what an encoder can actually store: colour at half resolution, full-resolution luminance.
    Applying it twice changes (almost) nothing.
    """
    _check_frames(frames_THWC_uint8)
    return np.stack([yuv420_to_rgb(rgb_to_yuv420(rgb)) for rgb in frames_THWC_uint8])


# Colour matrices read as BT.601: unspecified (what decoders assume for standard definition), BT.470BG
# and SMPTE 170M (both BT.601).
_BT601_TAGS = (2, 5, 6)


def _frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    even = frame.width % 2 == 0 and frame.height % 2 == 0
    if frame.format.name in ("yuv420p", "yuvj420p") and frame.colorspace in _BT601_TAGS and even:
        full = frame.format.name == "yuvj420p" or frame.color_range == ColorRange.JPEG
        return yuv420_to_rgb(frame.to_ndarray(), ColorRange.JPEG if full else ColorRange.MPEG)
    return frame.to_ndarray(format="rgb24")  # other layouts, matrices or odd sizes: swscale's conversion


def read_video_pyav(path: str | Path) -> np.ndarray:
    """Decode every frame of `path` -> [T, H, W, 3] uint8 RGB (the tests' reference reader).

    8-bit 4:2:0 BT.601 frames (all that `write_video` writes) are converted by `yuv420_to_rgb`, the
    exact inverse of the writer's conversion; anything else by swscale.
    """
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(_frame_to_rgb(frame))
    if not frames:
        raise ValueError(f"{path}: no decodable video frames")
    return np.stack(frames)


def probe_video(path: str | Path) -> dict:
    """Frame count, fps, size and codec of the first video stream of `path`.

    `frames` counts the video packets actually present (one per frame for every codec written here);
    the header's frame count is not trusted, so a truncated file reports only what it still holds.
    """
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        frames = sum(1 for packet in container.demux(stream) if packet.size > 0 and not packet.is_corrupt)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return {
            "frames": frames,
            "fps": float(rate) if rate else 0.0,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "codec": stream.codec_context.name,
        }
