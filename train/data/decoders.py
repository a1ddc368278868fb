"""Which decoder handles each video: NVDEC, DALI's CPU decoder, or PyAV.

`data.decoder` names a preference; a file the preferred decoder cannot take goes through PyAV
(which decodes everything the index accepts), and the loader logs how many files each decoder got.

`auto` on a GPU machine: NVDEC through DALI's sequence reader where it serves (CycleTime-style clips of
H.264/HEVC files, see `sequence_reader.py`; the loader decides), else PyAV (decoding on the CPU,
augmentation on the GPU); on CPU-only machines DALI's CPU decoder (VP8/VP9/MJPEG), else PyAV. Measured
on an H200 (bench/data.py, 12 DAVIS videos at 256p, GOP 8, one process, CycleTime clips): sequence
reader with 4 pipelines 342 clips/s, PyAV with 4 threads 51.5, DALI's per-sample NVDEC decoder 16.4
(one NVDEC set-up per clip: what TCC's whole-video clips get with `decoder: nvdec`).

- NVDEC (DALI device="mixed"): H.264 only, 8-bit 4:2:0 (Hopper's NVDEC has no H.264 4:4:4, e.g.
  /work/shared/data/videos/openfield-mouse.mp4), at least 48x16. H.264 is the codec whose frames
  matched the CPU decoders on an H200 (tests/test_data_loader.py, `pytest -m gpu`); there DALI's NVDEC
  paths returned frame 4 where frame 9 was asked for, for VP9 (per-sample decoder, 128x160 webm) and
  for HEVC (sequence reader, 144x176 mp4), so those go to PyAV (and DALI's CPU decoder for VP9 on CPUs).
- DALI CPU decoder (device="cpu"): VP8, VP9, MJPEG only (DALI 2.x dropped H.264/HEVC on the CPU).
- PyAV (`cpu_decode.py`): any codec FFmpeg decodes; frames are fed into the same DALI pipeline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

from train.data.index import VideoEntry

Decoder = Literal["nvdec", "dali-cpu", "pyav"]

NVDEC_CODECS = frozenset({"h264"})
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
# NVDEC's smallest frame (width, height) per codec (NVIDIA Video Codec SDK capabilities); smaller files
# would fail at run time, so they go to PyAV up front.
NVDEC_MIN_WH = {"h264": (48, 16)}
# 8-bit 4:2:0 as the decoders report it (yuvj420p: MJPEG's full-range variant).
PLAIN_420 = frozenset({"yuv420p", "yuvj420p", "nv12"})


def can_decode(decoder: Decoder, video: VideoEntry) -> bool:
    """Whether `decoder` takes this file."""
    if decoder == "pyav":
        return True
    codecs = NVDEC_CODECS if decoder == "nvdec" else DALI_CPU_CODECS
    if decoder == "nvdec" and video.codec in NVDEC_MIN_WH:
        min_w, min_h = NVDEC_MIN_WH[video.codec]
        if video.width < min_w or video.height < min_h:
            return False
    return video.codec in codecs and video.pix_fmt in PLAIN_420


def preferred_decoder(requested: str, on_gpu: bool) -> Decoder:
    """The decoder `data.decoder` asks for on this device per file ("auto": PyAV on a GPU, else DALI CPU;
    the loader then moves `auto` to NVDEC where the sequence reader serves the whole dataset)."""
    if requested == "auto":
        return "pyav" if on_gpu else "dali-cpu"
    if requested == "nvdec" and not on_gpu:
        raise ValueError(
            "data.decoder: nvdec needs a CUDA device for this rank; use decoder: auto (CPU decoders "
            "on machines without a GPU) or pyav"
        )
    if requested not in ("nvdec", "dali-cpu", "pyav"):
        raise ValueError(f"data.decoder must be auto, nvdec, dali-cpu or pyav, got {requested!r}")
    return requested  # type: ignore[return-value]


def route(videos: Sequence[VideoEntry], requested: str, on_gpu: bool) -> list[Decoder]:
    """The decoder of every video: the preferred one where it can, PyAV otherwise."""
    preferred = preferred_decoder(requested, on_gpu)
    return [preferred if can_decode(preferred, v) else "pyav" for v in videos]


def dali_device(routes: Sequence[Decoder]) -> str | None:
    """The `device` of the pipeline's DALI decoder ("mixed", "cpu"), or None when PyAV does all."""
    if "nvdec" in routes:
        return "mixed"
    if "dali-cpu" in routes:
        return "cpu"
    return None


def describe(videos: Sequence[VideoEntry], routes: Sequence[Decoder]) -> tuple[str, str]:
    """(short name, one log line) of the decoders in use, e.g. ("dali-cpu+pyav", "dali-cpu: 3 files ...")."""
    counts = Counter(routes)
    name = "+".join(d for d in ("nvdec", "dali-cpu", "pyav") if counts[d])
    parts = []
    for decoder in ("nvdec", "dali-cpu", "pyav"):
        if counts[decoder]:
            kinds = Counter(
                f"{v.codec}/{v.pix_fmt}" for v, r in zip(videos, routes, strict=True) if r == decoder
            )
            what = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
            parts.append(f"{decoder}: {counts[decoder]} files ({what})")
    return name or "none", "; ".join(parts)
