"""Readers and writers for the DAVIS and JHMDB layouts used by label propagation.

DAVIS root:  JPEGImages/<res>/<seq>/*.jpg, Annotations/<res>/<seq>/*.png, ImageSets/<split>.txt
    (DAVIS-2017: ImageSets/2017/<split>.txt). A split line is either a sequence name or, as in
    DAVIS-2016, "/JPEGImages/480p/<seq>/00000.jpg /Annotations/480p/<seq>/00000.png" (one line per
    frame). Masks are either binary (DAVIS-2016: values 0 and 255 -> ids 0 and 1) or palette images
    whose indices are object ids (DAVIS-2017: 0 background, 1..N objects).
JHMDB: a clip folder of frames *.png and `joint_positions.mat` (`pos_img`, [2, 15, T], MATLAB
    1-based pixel coordinates), the .mat either inside the clip folder or next to it.

Frames are read one at a time as uint8 arrays; nothing here holds a whole video.

Legend: H x W image, T frames, J joints.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")


def _davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map [256, 3] uint8 (id 1 red, 2 green, 3 yellow, ...)."""
    palette = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


PALETTE = _davis_palette()


@dataclass(frozen=True)
class DavisSequence:
    """One sequence: its frames and annotations in order (annotations may stop early, e.g. only the
    first one in a test split)."""

    name: str
    frames: tuple[Path, ...]
    masks: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.frames)


def parse_split_line(line: str) -> str | None:
    """The sequence named by one ImageSets line; None for a blank line.

    "blackswan" -> "blackswan"; "/JPEGImages/480p/blackswan/00000.jpg /Annotations/..." -> "blackswan".
    """
    fields = line.split()
    if not fields:
        return None
    first = fields[0]
    if "/" not in first:
        return first
    parts = Path(first).parts
    if len(parts) < 2:
        raise ValueError(f"cannot read a sequence name from split line {line.strip()!r}")
    return parts[-2]


def _split_file(root: Path, split: str) -> Path:
    for candidate in (root / "ImageSets" / f"{split}.txt", root / "ImageSets" / "2017" / f"{split}.txt"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no split file {split}.txt under {root / 'ImageSets'} (or ImageSets/2017); check --davis and --split"
    )


def read_split(root: str | Path, split: str = "val") -> list[str]:
    """Sequence names of a split, in file order, without duplicates."""
    names: list[str] = []
    for line in _split_file(Path(root), split).read_text().splitlines():
        name = parse_split_line(line)
        if name is not None and name not in names:
            names.append(name)
    return names


def _sorted_files(folder: Path, suffixes: tuple[str, ...]) -> tuple[Path, ...]:
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes))


def load_sequence(root: str | Path, name: str, resolution: str = "480p") -> DavisSequence:
    """The frame and annotation paths of sequence `name` under a DAVIS root."""
    root = Path(root)
    frame_dir = root / "JPEGImages" / resolution / name
    mask_dir = root / "Annotations" / resolution / name
    for d in (frame_dir, mask_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"sequence {name!r}: missing folder {d}")
    frames = _sorted_files(frame_dir, FRAME_SUFFIXES)
    masks = _sorted_files(mask_dir, (".png",))
    if not frames or not masks:
        raise ValueError(
            f"sequence {name!r}: needs frames in {frame_dir} and at least the first mask in {mask_dir}"
        )
    if masks[0].stem != frames[0].stem:
        raise ValueError(
            f"sequence {name!r}: first mask {masks[0].name} does not match first frame {frames[0].name}"
        )
    return DavisSequence(name, frames, masks)


def load_split(root: str | Path, split: str = "val", resolution: str = "480p") -> list[DavisSequence]:
    """All sequences of a split."""
    return [load_sequence(root, name, resolution) for name in read_split(root, split)]


def read_frame(path: str | Path) -> np.ndarray:
    """One RGB frame as uint8 [H, W, 3]."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_mask(path: str | Path) -> np.ndarray:
    """Object ids uint8 [H, W]: palette indices (or grey values) as they are, except that a mask holding
    only 0 and 255 (DAVIS-2016 binary, any image mode) becomes 0 and 1."""
    with Image.open(path) as im:
        ids = np.asarray(im) if im.mode == "P" else np.asarray(im.convert("L"))
    if np.isin(ids, (0, 255)).all():
        return (ids == 255).astype(np.uint8)
    return ids.astype(np.uint8)


def iter_frames(seq: DavisSequence) -> Iterator[np.ndarray]:
    """The sequence's frames one at a time, uint8 [H, W, 3]."""
    for path in seq.frames:
        yield read_frame(path)


def iter_masks(seq: DavisSequence) -> Iterator[np.ndarray]:
    """The sequence's annotations one at a time, uint8 ids [H, W]."""
    for path in seq.masks:
        yield read_mask(path)


def write_mask(path: str | Path, ids: np.ndarray) -> None:
    """Write object ids [H, W] as a palette PNG with the DAVIS colours (creates the folder)."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.min(initial=0) < 0 or ids.max(initial=0) > 255:
        raise ValueError(f"expected ids in 0..255 of shape [H, W], got shape {ids.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette(PALETTE.reshape(-1).tolist())
    im.save(path)


def prediction_path(out_dir: str | Path, seq_name: str, frame_path: str | Path) -> Path:
    """Where the prediction of one frame goes: DIR/<seq>/<frame stem>.png (the DAVIS results layout)."""
    return Path(out_dir) / seq_name / f"{Path(frame_path).stem}.png"


@dataclass(frozen=True)
class JhmdbClip:
    """One JHMDB clip: frame paths and joint positions [T, J, 2] (x, y) in 0-based pixels."""

    name: str
    frames: tuple[Path, ...]
    joints_xy: np.ndarray


def read_joints(mat_path: str | Path) -> np.ndarray:
    """`pos_img` of a JHMDB joint_positions.mat -> [T, J, 2] (x, y), 0-based (MATLAB's 1-based minus 1,
    as CRW's and UVC's evaluation do)."""
    pos = scipy.io.loadmat(str(mat_path))["pos_img"]
    if pos.ndim != 3 or pos.shape[0] != 2:
        raise ValueError(f"{mat_path}: pos_img should be [2, J, T], got {pos.shape}")
    return np.transpose(pos, (2, 1, 0)).astype(np.float64) - 1.0


def load_jhmdb(root: str | Path) -> list[JhmdbClip]:
    """Every clip under `root`: each folder of *.png frames (root itself included) whose
    joint_positions.mat lies in the folder or in its parent."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"JHMDB root {root} is not a folder; check --jhmdb")
    clips = []
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        frames = _sorted_files(folder, (".png",))
        if not frames:
            continue
        mat = next(
            (
                m
                for m in (folder / "joint_positions.mat", folder.parent / "joint_positions.mat")
                if m.is_file()
            ),
            None,
        )
        if mat is None:
            continue
        joints = read_joints(mat)
        if joints.shape[0] != len(frames):
            raise ValueError(f"{folder}: {len(frames)} frames but {joints.shape[0]} joint frames in {mat}")
        clips.append(JhmdbClip(folder.name, frames, joints))
    if not clips:
        raise ValueError(f"no JHMDB clip (frames *.png + joint_positions.mat) under {root}")
    return clips
