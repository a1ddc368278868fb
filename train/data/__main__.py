"""`python -m train.data {index,peek,transcode,generate}`: the video data tools.

index PATH                       table of the videos (frames, fps, size, codec, GOP), unreadable files
peek --method M PATH             decode one training batch, print its shapes, write a contact sheet
transcode SRC DST                re-encode for fast random access (short GOP, no B-frames, short side)
generate --kind K --out DIR      write a synthetic dataset (train.data.synthetic)
warp SRC OUT                     time-warped copies of real clips with canonical time (TCC data)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from train.log_setup import setup_logging

log = logging.getLogger("train.data")


def _index(args: argparse.Namespace) -> int:
    from train.data.index import build_index, format_index

    index = build_index(
        args.path,
        cache_dir=args.cache_dir,
        labels=args.labels,
        workers=args.workers,
        use_cache=not args.no_cache,
    )
    print(format_index(index))
    return 0 if index.videos else 1


def _peek(args: argparse.Namespace) -> int:
    from train.data.peek import peek

    _, report = peek(
        args.method,
        args.path,
        config=args.config,
        out=args.out or None,
        batch_size=args.batch_size,
        device=args.device,
        cache_dir=args.cache_dir,
    )
    print(report)
    return 0


def _transcode(args: argparse.Namespace) -> int:
    from train.data.transcode import TranscodeSettings, transcode_tree

    settings = TranscodeSettings(
        short_side=args.short_side or None, gop=args.gop, codec=args.codec, fps=args.fps, crf=args.crf
    )
    summary = transcode_tree(args.src, args.dst, settings, workers=args.workers)
    print(summary.format())
    return 1 if summary.failed else 0


def _warp(args: argparse.Namespace) -> int:
    from train.data.warp import WarpSettings, warp_copies

    settings = WarpSettings(
        copies=args.copies,
        frames=args.frames,
        source_frames=args.source_frames,
        short_side=args.short_side,
        seed=args.seed,
    )
    written = warp_copies(args.src, args.out, settings)
    print(f"wrote {len(written)} warped copies and labels.json to {args.out}")
    return 0 if written else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index a folder or .txt list of videos and print a summary")
    p.add_argument("path", help="folder (searched recursively) or .txt list of video paths")
    p.add_argument("--cache-dir", help="where the index cache goes (default: next to the data)")
    p.add_argument("--labels", help="per-frame labels JSON {video stem: [label, ...]} to check")
    p.add_argument("--workers", type=int, default=4, help="files probed in parallel")
    p.add_argument("--no-cache", action="store_true", help="probe every file again")
    p.set_defaults(run=_index)

    p = sub.add_parser("peek", help="decode one batch as training would; write a contact sheet")
    p.add_argument("path", help="folder or .txt list of videos")
    p.add_argument("--method", required=True, choices=("cycletime", "tcc"))
    p.add_argument("--config", help="run config (YAML): clip and data settings come from it")
    p.add_argument(
        "--out", default="peek.png", help="contact sheet PNG (rows = clips, columns = frames); '' for none"
    )
    p.add_argument("--batch-size", type=int, help="clips to decode (default: the config's data.batch_size)")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument(
        "--cache-dir", help="where the index cache goes (default: the config's, or next to the data)"
    )
    p.set_defaults(run=_peek)

    p = sub.add_parser("transcode", help="re-encode videos for fast random access")
    p.add_argument("src", help="folder or .txt list of videos")
    p.add_argument("dst", help="output folder (relative paths kept; files already there are skipped)")
    p.add_argument("--short-side", type=int, default=256, help="short side in pixels; 0 keeps the size")
    p.add_argument("--gop", type=int, default=8, help="frames per keyframe")
    p.add_argument("--codec", default="h264", choices=("h264", "hevc", "vp9", "mjpeg"))
    p.add_argument("--fps", type=float, help="resample to this frame rate (default: keep)")
    p.add_argument("--crf", type=int, help="quality (default: near-lossless per codec)")
    p.add_argument("--workers", type=int, default=1, help="files encoded in parallel")
    p.set_defaults(run=_transcode)

    p = sub.add_parser("warp", help="time-warped copies of real clips (TCC training/evaluation data)")
    p.add_argument("src", help="folder or .txt list of source videos")
    p.add_argument("out", help="output folder")
    p.add_argument("--copies", type=int, default=16, help="warped copies per source video")
    p.add_argument("--frames", type=int, default=80, help="frames per copy")
    p.add_argument("--source-frames", type=int, default=600, help="source frames replayed (from the start)")
    p.add_argument("--short-side", type=int, default=256, help="short side of the copies")
    p.add_argument("--seed", type=int, default=0, help="another seed gives held-out warps")
    p.set_defaults(run=_warp)

    sub.add_parser("generate", help="write a synthetic dataset (see `generate --help`)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["generate"]:
        from train.data.synthetic import main as generate_main

        return generate_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
