"""Decoding throughput per process: DALI NVDEC against the CPU decoders, on the same files.

    python bench/data.py [--device cuda|cpu] [--src DIR] [--sizes 256 480] [--gop 8] [--json OUT]

The source videos (default: the 30 DAVIS-2016 training mp4s, 456x256) are first transcoded into a
temporary folder at each stated short side (480 upscales) and GOP, without B-frames, once as H.264 and
once as VP9. Then, per size, codec, decoder and clip kind, one loader (one process, one rank, `--threads`
decoder threads) delivers batches for `--seconds`; reported are clips/s and frames/s delivered (frames
of the clips, after resize, crop and normalisation, on the loader's device), after one warm-up batch.

Clip kinds: CycleTime (6 frames: offsets 0,2,4,6,15,17; short side 256, crop 240) and TCC (20 steps x 2
context frames = 40 frames over the whole video; short side 224, crop 224).
Decoders: nvdec (GPU only), pyav (CPU decode, augmentation on the loader's device), dali-cpu (VP9 only).
NVDEC rows of H.264 CycleTime clips come per `--nvdec-readers` value: the sequence reader with that many
pipelines (`nvdec-reader xN`, train/data/sequence_reader.py), or 0: DALI's per-sample decoder.
Ratios printed: NVDEC over PyAV on the same H.264 files, and CycleTime clips/s over the clips/s one GPU's
training step consumes (`--train-clips-per-s`; default 125.5: the original CycleTime code at batch 32 on
one H100, from ANCHORS.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script, this file's folder is sys.path[0] and bench/core.py would shadow the `core` package.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from bench.common import sync
from core.method import ClipSpec
from train.config.schema import DataConfig
from train.data.index import build_index
from train.data.loader import VideoLoader
from train.data.transcode import TranscodeSettings, transcode_tree

log = logging.getLogger("bench.data")

CLIPS = {
    "cycletime": (ClipSpec(mode="offsets", offsets=(0, 2, 4, 6, 15, 17)), 256, 240),
    "tcc": (ClipSpec(mode="spread", num_steps=20, context_steps=2, context_stride=15), 224, 224),
}
DECODERS = {"h264": ("nvdec", "pyav"), "vp9": ("nvdec", "dali-cpu", "pyav")}


@dataclass
class Row:
    size: int
    codec: str
    gop: int
    decoder: str
    clip: str
    batch: int
    threads: int
    readers: int = 0  # NVDEC sequence-reader pipelines (0: DALI's per-sample decoder); nvdec rows only
    clips_per_s: float = 0.0
    frames_per_s: float = 0.0
    batches: int = 0
    seconds: float = 0.0
    error: str = ""


def prepare_sources(
    src: Path, work: Path, sizes: list[int], codecs: list[str], gop: int, workers: int
) -> dict:
    """Transcode `src` per (size, codec) into `work` -> {(size, codec): folder}."""
    folders = {}
    for size in sizes:
        for codec in codecs:
            out = work / f"{codec}-{size}p-gop{gop}"
            start = time.perf_counter()
            summary = transcode_tree(
                src, out, TranscodeSettings(short_side=size, gop=gop, codec=codec), workers
            )
            if summary.failed:
                log.warning("transcode %s: %s", out.name, summary.failed)
            log.info("transcoded %s in %.1fs", out.name, time.perf_counter() - start)
            folders[(size, codec)] = out
    return folders


def measure(index, row: Row, device: torch.device, seconds: float, cache_dir: Path) -> Row:
    clip, short_side, crop = CLIPS[row.clip]
    cfg = DataConfig(
        root=index.root,
        batch_size=row.batch,
        short_side=short_side,
        crop=crop,
        decoder=row.decoder,
        nvdec_readers=row.readers,
        threads=row.threads,
        prefetch=2,
        short_videos="pad",
        cache_dir=str(cache_dir),
    )
    try:
        with VideoLoader(index, clip, cfg, device=device) as loader:
            if loader.decoder != row.decoder:
                row.error = f"decoder {row.decoder} not usable here (got {loader.decoder})"
                return row
            stream = iter(loader)
            next(stream)  # warm-up: pipeline build, first decodes, file cache
            sync(device)
            start = time.perf_counter()
            while True:
                batch = next(stream)
                row.batches += 1
                elapsed = time.perf_counter() - start
                if elapsed >= seconds:
                    break
            sync(device)
            row.seconds = time.perf_counter() - start
            rerouted = loader.stats()["videos_rerouted_to_pyav"]
            if rerouted:  # the loader fell back to PyAV for files DALI could not decode
                row.error = f"{row.decoder} failed on {rerouted} files (moved to PyAV): see the log"
                return row
            row.clips_per_s = row.batches * row.batch / row.seconds
            row.frames_per_s = row.clips_per_s * batch["frames"].shape[1]
    except Exception as err:  # a failing configuration must not lose the other rows
        row.error = (
            f"{type(err).__name__}: {str(err).strip().splitlines()[0][:160] if str(err).strip() else ''}"
        )
    return row


def format_rows(rows: list[Row], train_clips_per_s: float) -> str:
    names = ("size", "codec", "gop", "decoder", "clip", "batch", "clips/s", "frames/s")
    lines = ["{:>5} {:<5} {:>3} {:<18} {:<9} {:>5} {:>9} {:>9}".format(*names)]
    for r in rows:
        result = f"{r.clips_per_s:9.1f} {r.frames_per_s:9.1f}" if not r.error else f"  {r.error}"
        name = _name(r)
        lines.append(f"{r.size:>5} {r.codec:<5} {r.gop:>3} {name:<18} {r.clip:<9} {r.batch:>5} {result}")
    lines.append("")
    for (size, codec, clip), by_decoder in _group(rows).items():
        pyav = by_decoder.get("pyav")
        nvdec = {name: v for name, v in by_decoder.items() if name.startswith("nvdec")}
        for name, value in nvdec.items():
            if pyav:
                lines.append(f"{size}p {codec} {clip}: {name} / PyAV = {value / pyav:.1f}x per process")
            if clip == "cycletime":
                ratio = value / train_clips_per_s
                lines.append(f"{size}p {codec} cycletime: {name} clips/s / training clips/s = {ratio:.2f}x")
    return "\n".join(lines)


def _name(r: Row) -> str:
    """nvdec rows say which NVDEC path ran: the sequence reader (with its pipelines) or per sample."""
    if r.decoder != "nvdec":
        return r.decoder
    return f"nvdec-reader x{r.readers}" if r.readers else "nvdec-per-sample"


def _group(rows: list[Row]) -> dict:
    groups: dict = {}
    for r in rows:
        if not r.error:
            groups.setdefault((r.size, r.codec, r.clip), {})[_name(r)] = r.clips_per_s
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--src", default="../shared/data/davis2016/train", help="folder of source videos")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[256, 480], help="short sides to transcode to"
    )
    parser.add_argument("--codecs", nargs="+", default=["h264", "vp9"], choices=["h264", "vp9"])
    parser.add_argument("--gop", type=int, default=8, help="keyframe interval of the transcoded files")
    parser.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS))
    parser.add_argument("--batch", type=int, nargs=2, default=[16, 4], help="batch of cycletime, tcc")
    parser.add_argument("--threads", type=int, default=4, help="decoder threads of the one loader")
    parser.add_argument(
        "--nvdec-readers",
        type=int,
        nargs="+",
        default=[4, 1, 0],
        help="NVDEC variants of CycleTime rows: sequence-reader pipelines (0: DALI's per-sample decoder)",
    )
    parser.add_argument("--seconds", type=float, default=2.5, help="timed duration of each row")
    parser.add_argument("--budget", type=float, default=170.0, help="rows left when this is spent: skipped")
    parser.add_argument("--max-videos", type=int, default=0, help="use the first N source videos (0: all)")
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1), help="transcode processes"
    )
    parser.add_argument("--workdir", help="keep the transcoded files here (default: a temporary folder)")
    parser.add_argument("--train-clips-per-s", type=float, default=125.5)
    parser.add_argument("--json", help="write the rows and the machine description here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("train.data").setLevel(logging.WARNING)
    device = torch.device(args.device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        src = Path(args.src)
        if args.max_videos:
            files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".mp4", ".webm", ".mkv"))
            src = work / "sources.txt"
            work.mkdir(parents=True, exist_ok=True)
            src.write_text("".join(f"{p.resolve()}\n" for p in files[: args.max_videos]))
        folders = prepare_sources(src, work, args.sizes, args.codecs, args.gop, args.workers)
        rows = []
        for (size, codec), folder in folders.items():
            index = build_index(folder, cache_dir=work / "index-cache")
            for clip_name, batch in zip(CLIPS, args.batch, strict=True):
                if clip_name not in args.clips:
                    continue
                for decoder, readers in _variants(codec, clip_name, args.nvdec_readers):
                    if decoder == "nvdec" and device.type != "cuda":
                        continue
                    row = Row(size, codec, args.gop, decoder, clip_name, batch, args.threads, readers)
                    if time.perf_counter() - start > args.budget:
                        row.error = f"skipped: the {args.budget:.0f}s budget is spent"
                    else:
                        measure(index, row, device, args.seconds, work / "index-cache")
                    rows.append(row)
                    log.info("%s", row)
    report = format_rows(rows, args.train_clips_per_s)
    print(report)
    print(f"total {time.perf_counter() - start:.0f}s on {_machine(device)}")
    if args.json:
        payload = {"machine": _machine(device), "args": vars(args), "rows": [asdict(r) for r in rows]}
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


def _variants(codec: str, clip: str, nvdec_readers: list[int]) -> list[tuple[str, int]]:
    """(decoder, sequence-reader pipelines) rows for one codec and clip kind.

    The sequence reader serves H.264 CycleTime clips only; TCC clips and VP9 decode per sample.
    """
    rows = []
    for decoder in DECODERS[codec]:
        if decoder == "nvdec" and clip == "cycletime" and codec == "h264":
            rows += [(decoder, r) for r in nvdec_readers]
        else:
            rows.append((decoder, 0))
    return rows


def _machine(device: torch.device) -> str:
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}; {cpu}"
    return cpu


if __name__ == "__main__":
    sys.exit(main())
