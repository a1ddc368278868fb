"""Synthetic datasets with known ground truth, written as real video files (tests, smoke configs, demo).

Shape letters: T frames, H height, W width, C = 3 colour channels.

`generate_dataset(cfg, root)` writes `cfg.videos` videos `<kind>_<i:03d>.mp4|.webm` with their ground truth
beside them (`<stem>.json`; sprites also `<stem>.masks.npz`; phases also `labels.json`), optionally a
DAVIS-layout copy of sprite videos under `root/davis`, and last a `DONE` manifest. Everything is written in
a temporary sibling folder renamed into place, so `root` is either absent or complete. A root that holds a
complete dataset of the same config is reused. The scenes themselves: `train/data/synthetic_scenes.py`.
Format details: docs/synthetic-data.md.

CLI: python -m train.data.synthetic --kind sprites --out data/synthetic/sprites [--davis]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
from PIL import Image

from cycletime.davis import write_mask
from train.config.schema import SyntheticConfig
from train.data.synthetic_scenes import GENERATORS
from train.data.video_io import CODECS, suffix_for, write_video

log = logging.getLogger(__name__)

FPS = 24.0  # frame rate written into every synthetic video (that of the DAVIS mp4s in shared/data)
GOP = 8  # keyframe interval, as in the DAVIS mp4s: short clips can start anywhere cheaply
# Bump when the renderers or the file layout change: datasets written by an older version regenerate.
GENERATOR_VERSION = 2  # 2: sprites coloured from the background's palette
MANIFEST = "DONE"
LABELS = "labels.json"
DAVIS_DIR = "davis"


def config_fingerprint(cfg: SyntheticConfig, davis: bool = False) -> str:
    """A digest of everything that decides the dataset's bytes: config, DAVIS export, generator version."""
    key = {"config": asdict(cfg), "davis": davis, "fps": FPS, "gop": GOP, "version": GENERATOR_VERSION}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(root: str | Path) -> dict | None:
    """The `DONE` manifest of a complete generated dataset in `root`, or None."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def generate_dataset(cfg: SyntheticConfig, root: str | Path, *, davis: bool = False) -> list[Path]:
    """Write the dataset `cfg` describes into `root` (or reuse it there) and return the video paths.

    `davis=True` (sprites only) also writes `root/davis` in the DAVIS-2017 layout for label propagation.
    """
    root = Path(root)
    _check_config(cfg, davis)
    fingerprint = config_fingerprint(cfg, davis)
    manifest = read_manifest(root)
    if manifest is not None and manifest.get("fingerprint") == fingerprint:
        videos = [root / name for name in manifest["videos"]]
        if all(p.is_file() for p in videos):
            log.info(
                "synthetic: reusing %s (%d %s videos, fingerprint %s)",
                root,
                len(videos),
                cfg.kind,
                fingerprint,
            )
            return videos
    if manifest is None and root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} is not empty and holds no generated dataset ({MANIFEST} missing): refusing to replace "
            "it; point data.root (or --out) at a new folder"
        )
    _remove_stale_siblings(root)
    tmp = root.parent / f".{root.name}.tmp-{_owner_tag()}"
    tmp.mkdir(parents=True)
    try:
        names = _write_dataset(cfg, tmp, davis)
        manifest = {
            "fingerprint": fingerprint,
            "config": asdict(cfg),
            "davis": davis,
            "fps": FPS,
            "gop": GOP,
            "generator_version": GENERATOR_VERSION,
            "videos": names,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))  # last: marks the folder complete
        _swap_in(tmp, root, fingerprint)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("synthetic: wrote %s (%d %s videos, fingerprint %s)", root, len(names), cfg.kind, fingerprint)
    return [root / name for name in names]


def _check_config(cfg: SyntheticConfig, davis: bool) -> None:
    if cfg.kind not in GENERATORS:
        raise ValueError(f"synthetic.kind must be one of {sorted(GENERATORS)}, got {cfg.kind!r}")
    if cfg.codec not in CODECS:
        raise ValueError(f"synthetic.codec must be one of {sorted(CODECS)}, got {cfg.codec!r}")
    if cfg.width % 2 or cfg.height % 2 or min(cfg.width, cfg.height) < 16:
        raise ValueError(
            f"synthetic.width and synthetic.height must be even and >= 16 (4:2:0 video), "
            f"got {cfg.width}x{cfg.height}"
        )
    if cfg.videos < 1 or cfg.frames < 2:
        raise ValueError(
            f"synthetic.videos must be >= 1 and synthetic.frames >= 2, got {cfg.videos}, {cfg.frames}"
        )
    if cfg.seed < 0:
        raise ValueError(f"synthetic.seed must be >= 0, got {cfg.seed}")
    if davis and cfg.kind != "sprites":
        raise ValueError("the DAVIS export needs instance masks: use it with synthetic.kind = sprites")


def _write_dataset(cfg: SyntheticConfig, out: Path, davis: bool) -> list[str]:
    """Render, encode and describe every video into `out`; returns the video file names."""
    make = GENERATORS[cfg.kind]
    names, labels, davis_seqs = [], {}, []
    start = time.monotonic()
    for i in range(cfg.videos):
        video = make(cfg.seed, i, cfg.frames, cfg.width, cfg.height)
        stem = f"{cfg.kind}_{i:03d}"
        name = write_video(
            out / f"{stem}{suffix_for(cfg.codec)}", video.frames_THWC, FPS, cfg.codec, gop=GOP
        ).name
        gt = {"video": name, "fps": FPS, "seed": cfg.seed, "index": i, **video.gt}
        if video.masks_THW is not None:
            np.savez_compressed(out / f"{stem}.masks.npz", masks=video.masks_THW)
            gt["masks"] = f"{stem}.masks.npz"
        if "phase" in video.gt:
            labels[stem] = video.gt["phase"]
        (out / f"{stem}.json").write_text(json.dumps(gt))
        if davis:
            export_davis_sequence(out / DAVIS_DIR, stem, video.frames_THWC, video.masks_THW)
            davis_seqs.append(stem)
        names.append(name)
        log.info("synthetic: %s %d/%d (%.1f s)", name, i + 1, cfg.videos, time.monotonic() - start)
    if labels:
        (out / LABELS).write_text(json.dumps(labels))
    if davis:
        write_davis_imageset(out / DAVIS_DIR, davis_seqs)
    return names


# ------------------------------------------------------------------------------------- atomic folders


def _owner_tag() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _swap_in(tmp: Path, root: Path, fingerprint: str) -> None:
    """Rename the complete `tmp` to `root`, replacing an older generated dataset there."""
    try:
        tmp.rename(root)  # atomic; succeeds when root is absent or an empty folder
        return
    except OSError:
        pass
    current = read_manifest(root)
    if current is not None and current.get("fingerprint") == fingerprint:
        return  # a concurrent writer finished the same dataset first: keep theirs
    old = root.parent / f".{root.name}.old-{_owner_tag()}"
    root.rename(old)
    tmp.rename(root)
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale_siblings(root: Path) -> None:
    """Delete temporary folders that interrupted runs on this host left beside `root`.

    A folder belongs to a dead run when its name carries this host and a process id that is gone;
    folders of live processes (a concurrent writer) and of other hosts are left alone.
    """
    if not root.parent.is_dir():
        return
    host = socket.gethostname()
    for kind in ("tmp", "old"):
        for path in root.parent.glob(f".{root.name}.{kind}-{host}-*"):
            pid = path.name[len(f".{root.name}.{kind}-{host}-") :].split("-")[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                log.info("synthetic: removing %s, left by an interrupted run", path)
                shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------------------ DAVIS


def export_davis_sequence(
    davis_root: str | Path, seq: str, frames_THWC: np.ndarray, masks_THW: np.ndarray
) -> None:
    """Write one sequence in the DAVIS-2017 layout: `JPEGImages/480p/<seq>/00000.jpg...` and palette PNGs
    `Annotations/480p/<seq>/00000.png...` holding object ids 0..N on every frame ("480p" is DAVIS's folder
    name; frames keep their size)."""
    davis_root = Path(davis_root)
    images = davis_root / "JPEGImages" / "480p" / seq
    annotations = davis_root / "Annotations" / "480p" / seq
    images.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    for t, (frame, mask) in enumerate(zip(frames_THWC, masks_THW, strict=True)):
        Image.fromarray(frame).save(images / f"{t:05d}.jpg", quality=95)
        write_mask(annotations / f"{t:05d}.png", mask)  # palette PNG with the DAVIS (VOC) colours


def write_davis_imageset(davis_root: str | Path, seqs: Sequence[str]) -> None:
    """`ImageSets/val.txt`: the sequence names, one per line."""
    sets = Path(davis_root) / "ImageSets"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "val.txt").write_text("".join(f"{s}\n" for s in seqs))


def export_davis(davis_root: str | Path, sequences: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> Path:
    """Write (name, frames [T, H, W, 3] uint8, masks [T, H, W] uint8) sequences as a DAVIS-2017 folder."""
    names = []
    for seq, frames_THWC, masks_THW in sequences:
        export_davis_sequence(davis_root, seq, frames_THWC, masks_THW)
        names.append(seq)
    write_davis_imageset(davis_root, names)
    return Path(davis_root)


# -------------------------------------------------------------------------------------------------- CLI


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The CLI's arguments (also usable as a `generate` subcommand of a larger CLI); help from the config."""
    parser = parser or argparse.ArgumentParser(
        prog="python -m train.data.synthetic",
        description="Write (or reuse) a synthetic dataset and its ground truth (docs/synthetic-data.md).",
    )
    defaults = SyntheticConfig()
    docs = {f.name: f.metadata.get("doc", "") for f in fields(SyntheticConfig)}
    choices = {"kind": sorted(GENERATORS), "codec": sorted(CODECS)}
    parser.add_argument("--out", required=True, help="dataset folder (created; reused if complete)")
    for name in ("kind", "videos", "frames", "width", "height", "codec", "seed"):
        default = getattr(defaults, name)
        parser.add_argument(
            f"--{name}",
            type=type(default),
            default=default,
            choices=choices.get(name),
            help=f"{docs[name]} (default: %(default)s)",
        )
    parser.add_argument("--davis", action="store_true", help="also write <out>/davis in the DAVIS layout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from train.log_setup import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    cfg = SyntheticConfig(**{f.name: getattr(args, f.name) for f in fields(SyntheticConfig)})
    try:
        generate_dataset(cfg, args.out, davis=args.davis)
    except (ValueError, FileExistsError) as err:
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
