"""The dataset index: which video files exist, how long they are, and which of them can be read.

A root is a folder (searched recursively for video files) or a .txt file listing one path per line
(relative paths are relative to the list). Each file is probed and validated in one demux pass (frames
counted as `video_io.probe_video` counts them, every packet demuxed, the first frame decoded). Files that
fail are kept aside with the reason; training never sees them. Results are cached as JSON next to
the data (or in `cache_dir`) and re-probed per file only when its size or modification time changes.

Optional labels: a JSON file {video stem (or path relative to the root, without suffix): [label per
frame, ...]}. Integer labels are kept; string labels become class ids in sorted order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".webm", ".mov")
# Codecs some decoder of ours handles: NVDEC all five, DALI's CPU decoder VP8/VP9/MJPEG, PyAV all.
SUPPORTED_CODECS = ("h264", "hevc", "vp8", "vp9", "mjpeg")
CACHE_NAME = ".cyclecorr-index.json"
CACHE_VERSION = 1
# A file holding fewer packets than its header promises (by this margin) was cut short.
_TRUNCATION_SLACK = 0.02


@dataclass(frozen=True)
class VideoEntry:
    """One readable video file."""

    path: str  # absolute
    frames: int  # demuxed video packets (one per frame)
    fps: float
    width: int
    height: int
    codec: str
    pix_fmt: str  # of the first decoded frame: NVDEC takes 8-bit 4:2:0 only
    keyframes: int
    size: int  # bytes, part of the cache key
    mtime_ns: int  # part of the cache key

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def duration(self) -> float:
        """Seconds at the nominal frame rate."""
        return self.frames / self.fps if self.fps > 0 else 0.0

    @property
    def gop(self) -> float:
        """Mean frames per keyframe: the worst-case decode work of one random seek."""
        return self.frames / max(self.keyframes, 1)


@dataclass(frozen=True)
class BadFile:
    """A file the index excludes, and why."""

    path: str
    reason: str


@dataclass
class VideoIndex:
    """The readable videos (row = video id) and the files left out."""

    root: str
    videos: list[VideoEntry]
    bad: list[BadFile] = field(default_factory=list)
    labels: list[np.ndarray | None] | None = None  # per video: int64 [frames] or None (missing)
    label_names: list[str] | None = None  # class names when the labels file holds strings
    label_problems: list[str] = field(default_factory=list)
    cache_path: str | None = None

    def __len__(self) -> int:
        return len(self.videos)

    def lengths(self) -> np.ndarray:
        """Frames per video, int64 [V]."""
        return np.array([v.frames for v in self.videos], dtype=np.int64)


class UnreadableVideoError(Exception):
    """A file that cannot be used; the message is the reason shown to the user."""


def list_video_files(root: str | Path) -> tuple[list[Path], list[BadFile]]:
    """Video files under a folder (recursive, hidden entries skipped) or named by a .txt list.

    Returns (existing files sorted by path, listed files that do not exist).
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data root {root} does not exist (set data.root to a folder or a .txt list)")
    if root.is_file():
        if root.suffix.lower() != ".txt":
            raise ValueError(f"data root {root} must be a folder of videos or a .txt list of paths")
        files, missing = [], []
        for line in root.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            path = Path(line) if Path(line).is_absolute() else root.parent / line
            (files if path.is_file() else missing).append(path.resolve())
        bad = [BadFile(str(p), "listed but missing") for p in missing]
        return sorted(set(files)), bad
    files = [
        p.resolve()
        for p in root.rglob("*")
        if p.suffix.lower() in VIDEO_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(files), []


def probe_file(path: str | Path) -> VideoEntry:
    """Probe and validate one file; raise `UnreadableVideoError` with the reason when it cannot be used."""
    path = Path(path)
    stat = path.stat()
    if stat.st_size == 0:
        raise UnreadableVideoError("empty file (0 bytes)")
    try:
        info, keyframes, declared, pix_fmt = _validate(path)
    except UnreadableVideoError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, UnicodeDecodeError) as err:
        reason = short_error(err).replace(f": {str(path)!r}", "")
        raise UnreadableVideoError(f"cannot read: {reason}") from None
    codec = info["codec"]
    if codec not in SUPPORTED_CODECS:
        raise UnreadableVideoError(
            f"unsupported codec {codec!r} (supported: {', '.join(SUPPORTED_CODECS)}; "
            "re-encode with `python -m train.data transcode`)"
        )
    frames = int(info["frames"])
    if frames == 0:
        raise UnreadableVideoError("no complete video packets (truncated or empty stream)")
    if declared and frames + max(2, _TRUNCATION_SLACK * declared) < declared:
        raise UnreadableVideoError(f"truncated: the header promises {declared} frames, {frames} are present")
    if info["fps"] <= 0 or info["width"] <= 0 or info["height"] <= 0:
        raise UnreadableVideoError(f"no frame rate or size in the header ({info})")
    return VideoEntry(
        path=str(path.resolve()),
        frames=frames,
        fps=float(info["fps"]),
        width=int(info["width"]),
        height=int(info["height"]),
        codec=codec,
        pix_fmt=pix_fmt,
        keyframes=keyframes,
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
    )


def _validate(path: Path) -> tuple[dict, int, int, str]:
    """Demux every packet once and decode the first frame
    -> (`probe_video`'s dict, keyframes, frames the header declares, pix_fmt)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")  # probe_video's error, so the reason is unchanged
        stream = container.streams.video[0]
        declared = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate
        if not declared and container.duration and rate:
            # Matroska/WebM carry no frame count, only a duration written when the file was closed.
            declared = round(container.duration / 1e6 * float(rate))
        frames, keyframes, first_packet = 0, 0, None
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            frames += not packet.is_corrupt  # probe_video's rule
            keyframes += bool(packet.is_keyframe)
            if first_packet is None:
                first_packet = packet
        # Read as probe_video reads them: after demuxing every packet, before decoding any.
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        info = {
            "frames": frames,
            "fps": float(fps) if fps else 0.0,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "codec": stream.codec_context.name,
        }
        # Decoded only now, so a file that fails to demux reports that first (as when probed separately).
        decoded = first_packet.decode() if first_packet is not None else []
        first = decoded[0] if decoded else None
        if first is None:
            # Decoders with a delay (threads, reordering) give their first frame only when flushed.
            decoded = stream.decode(None)
            first = decoded[0] if decoded else None
        if first is None:
            raise UnreadableVideoError("the first frame does not decode")
        return info, keyframes, declared, first.format.name


def short_error(err: BaseException) -> str:
    """The first line of an error's message (at most 200 characters), or its type's name when empty."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:200]


def cache_file(root: str | Path, cache_dir: str | Path | None) -> Path:
    """Where the index of `root` is cached: `<root>/.cyclecorr-index.json`, or in `cache_dir`."""
    root = Path(root).resolve()
    if cache_dir is not None:
        digest = hashlib.sha1(str(root).encode()).hexdigest()[:12]
        return Path(cache_dir) / f"index-{root.stem}-{digest}.json"
    if root.is_file():
        return root.parent / f".{root.stem}{CACHE_NAME}"
    return root / CACHE_NAME


def _fallback_cache(root: str | Path) -> Path:
    return cache_file(root, Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cyclecorr")


def _read_cache(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
        return {}
    return data.get("files", {})


def _writable_dir(folder: Path) -> bool:
    """Writable, and not marked read-only by its mode bits (root may write anywhere, but should not)."""
    return folder.is_dir() and os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def _write_cache(path: Path, files: dict[str, dict]) -> bool:
    """Write atomically (rename), so ranks reading it concurrently never see half a file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not _writable_dir(path.parent):
            return False
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "files": files}, indent=1, sort_keys=True))
        os.replace(tmp, path)
        return True
    except OSError:
        tmp.unlink(missing_ok=True)
        return False


def _probe_record(path: Path) -> dict:
    stat = path.stat()
    record: dict = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "entry": None, "error": None}
    try:
        record["entry"] = asdict(probe_file(path))
    except UnreadableVideoError as err:
        record["error"] = str(err)
    return record


def build_index(
    root: str | Path,
    *,
    cache_dir: str | Path | None = None,
    labels: str | Path | None = None,
    workers: int = 1,
    write_cache: bool = True,
    use_cache: bool = True,
) -> VideoIndex:
    """Index the videos under `root` (see the module doc); only new or changed files are probed.

    The cache goes to `cache_dir`, else next to the data, else (read-only data) to
    ~/.cache/cyclecorr. `write_cache=False` (ranks other than 0) still reads it.
    """
    files, bad = list_video_files(root)
    candidates = [cache_file(root, cache_dir)]
    if cache_dir is None:
        candidates.append(_fallback_cache(root))
    cached: dict[str, dict] = {}
    if use_cache:
        for candidate in candidates:
            cached = _read_cache(candidate)
            if cached:
                break
    records: dict[str, dict] = {}
    stale: list[Path] = []
    for path in files:
        record = cached.get(str(path))
        stat = path.stat()
        if record and record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
            records[str(path)] = record
        else:
            stale.append(path)
    if stale:
        log.info("probing %d of %d video files (the others are cached)", len(stale), len(files))
        with ThreadPoolExecutor(max(1, workers)) as pool:
            for path, record in zip(stale, pool.map(_probe_record, stale), strict=True):
                records[str(path)] = record
    cache_path = None
    if write_cache and (stale or set(records) != set(cached)):
        for candidate in candidates:
            if _write_cache(candidate, records):
                cache_path = str(candidate)
                break
        if cache_path is None:
            log.warning("could not write the index cache (tried %s)", ", ".join(map(str, candidates)))
    videos = []
    for path in files:
        record = records[str(path)]
        if record["entry"] is not None:
            videos.append(VideoEntry(**record["entry"]))
        else:
            bad.append(BadFile(str(path), record["error"]))
    index = VideoIndex(root=str(Path(root).resolve()), videos=videos, bad=sorted(bad, key=lambda b: b.path))
    index.cache_path = cache_path or next((str(c) for c in candidates if c.exists()), None)
    if labels is not None:
        attach_labels(index, labels)
    return index


def _label_keys(entry: VideoEntry, root: Path) -> Iterable[str]:
    path = Path(entry.path)
    if root.is_dir() and path.is_relative_to(root):
        yield str(path.relative_to(root).with_suffix(""))
    yield path.stem


def attach_labels(index: VideoIndex, labels_file: str | Path) -> None:
    """Read per-frame labels into `index.labels`; videos without usable labels get None and a problem line."""
    labels_file = Path(labels_file)
    try:
        table = json.loads(labels_file.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"data.labels: cannot read {labels_file}: {short_error(err)}") from None
    if not isinstance(table, dict):
        raise ValueError(f"data.labels: {labels_file} must hold a JSON object {{video stem: [label, ...]}}")
    names = sorted({x for seq in table.values() if isinstance(seq, list) for x in seq if isinstance(x, str)})
    class_of = {name: i for i, name in enumerate(names)}
    root = Path(index.root)
    index.labels, index.label_problems = [], []
    index.label_names = names or None
    for entry in index.videos:
        key = next((k for k in _label_keys(entry, root) if k in table), None)
        if key is None:
            index.labels.append(None)
            index.label_problems.append(f"{entry.name}: no labels")
            continue
        seq = table[key]
        if not isinstance(seq, list) or len(seq) != entry.frames:
            got = len(seq) if isinstance(seq, list) else type(seq).__name__
            index.labels.append(None)
            index.label_problems.append(f"{entry.name}: {got} labels for {entry.frames} frames")
            continue
        try:
            values = [class_of[x] if isinstance(x, str) else int(x) for x in seq]
        except (TypeError, ValueError):
            index.labels.append(None)
            index.label_problems.append(f"{entry.name}: labels must be integers or strings")
            continue
        index.labels.append(np.asarray(values, dtype=np.int64))


def format_index(index: VideoIndex, *, max_rows: int | None = None) -> str:
    """A table of the readable videos, then the files left out with their reasons."""
    header = ("name", "frames", "fps", "WxH", "codec", "pix_fmt", "GOP", "duration")
    rows = [
        (
            v.name,
            str(v.frames),
            f"{v.fps:.2f}",
            f"{v.width}x{v.height}",
            v.codec,
            v.pix_fmt,
            f"{v.gop:.1f}",
            f"{v.duration:.1f}s",
        )
        for v in index.videos
    ]
    shown = rows if max_rows is None else rows[:max_rows]
    lines = [_table(header, shown)]
    if len(shown) < len(rows):
        lines.append(f"... {len(rows) - len(shown)} more")
    total_frames = sum(v.frames for v in index.videos)
    hours = sum(v.duration for v in index.videos) / 3600
    lines.append(
        f"{len(rows)} readable videos, {total_frames} frames, {hours:.2f} h; {len(index.bad)} left out"
    )
    if index.bad:
        lines.append("left out:")
        lines.extend(f"  {Path(b.path).name}: {b.reason}" for b in index.bad)
    if index.label_problems:
        lines.append(f"label problems ({len(index.label_problems)}):")
        lines.extend(f"  {p}" for p in index.label_problems)
    if index.cache_path:
        lines.append(f"cache: {index.cache_path}")
    return "\n".join(lines)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), *(fmt.format(*r) for r in rows)])
