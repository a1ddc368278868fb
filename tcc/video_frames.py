"""Whole videos in and out with PyAV, for TCC's evaluation (training decodes clips with DALI instead).

Letters: T frames, H height, W width, C = 3 RGB channels, S side of the square evaluation frames,
N videos in a grid.

Reading keeps every frame of a file (evaluation embeds all of them), each resized as soon as it is
decoded so memory stays at T x S x S x 3 bytes whatever the source resolution. The resize matches the
training pipeline's (DALI `resize_shorter`, linear with antialiasing): short side to S, then the
centre S x S square (training cuts a random square instead). Colour conversion is swscale's
(`to_ndarray(format="rgb24")`), as in the CPU training decoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
DEFAULT_FPS = 24.0  # when a container states no frame rate
REFERENCE_BORDER_RGB = (255, 64, 64)  # marks the reference panel of the aligned grid


def list_videos(folder: str | Path) -> list[Path]:
    """Video files under `folder` (recursive), sorted by relative path; hidden files and folders (partial
    writes, temporary dataset folders) are skipped."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {folder} does not exist (set tcc.eval.videos or --videos)")
    found = [
        p
        for p in root.rglob("*")
        if p.suffix.lower() in VIDEO_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def resize_center_crop(frames_THWC: np.ndarray, size: int) -> np.ndarray:
    """uint8 [T, H, W, 3] -> uint8 [T, S, S, 3]: short side to `size` (bilinear, antialiased), centre crop."""
    H, W = frames_THWC.shape[1:3]
    if H == W == size:
        return frames_THWC
    scale = size / min(H, W)
    new_h, new_w = max(size, round(H * scale)), max(size, round(W * scale))
    x_TCHW = torch.from_numpy(np.ascontiguousarray(frames_THWC)).permute(0, 3, 1, 2)
    if (new_h, new_w) != (H, W):
        x_TCHW = F.interpolate(
            x_TCHW.float(), size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
        x_TCHW = x_TCHW.round().clamp(0, 255).to(torch.uint8)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x_TCHW[:, :, top : top + size, left : left + size].permute(0, 2, 3, 1).contiguous().numpy()


def read_frames(path: str | Path, size: int | None = None) -> np.ndarray:
    """Every frame of `path` as uint8 RGB: [T, H, W, 3], or [T, S, S, 3] after `resize_center_crop`."""
    frames = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            rgb_HWC = frame.to_ndarray(format="rgb24")
            frames.append(rgb_HWC if size is None else resize_center_crop(rgb_HWC[None], size)[0])
    if not frames:
        raise ValueError(f"{path}: no decodable video frames")
    return np.stack(frames)


def video_fps(path: str | Path) -> float:
    """The frame rate a container states for its first video stream (DEFAULT_FPS when it states none)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else DEFAULT_FPS


def grid_shape(num_panels: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid holding `num_panels` panels."""
    cols = math.ceil(math.sqrt(num_panels))
    return math.ceil(num_panels / cols), cols


def compose_grid(panels_NHWC: Sequence[np.ndarray], border_first: bool = True) -> np.ndarray:
    """One grid frame from N equal-sized uint8 panels (row-major), padded to even sides for 4:2:0 video;
    the first panel gets a coloured border when `border_first`."""
    N = len(panels_NHWC)
    H, W = panels_NHWC[0].shape[:2]
    rows, cols = grid_shape(N)
    grid = np.zeros((rows * H + (rows * H) % 2, cols * W + (cols * W) % 2, 3), dtype=np.uint8)
    for n, panel in enumerate(panels_NHWC):
        r, c = divmod(n, cols)
        grid[r * H : (r + 1) * H, c * W : (c + 1) * W] = panel
    if border_first:
        b = max(1, min(H, W) // 50)
        colour = np.array(REFERENCE_BORDER_RGB, dtype=np.uint8)
        grid[:b, :W] = grid[H - b : H, :W] = colour
        grid[:H, :b] = grid[:H, W - b : W] = colour
    return grid


def write_aligned_grid(
    path: str | Path,
    frames_list: Sequence[np.ndarray],
    aligned_list: Sequence[np.ndarray],
    fps: float = DEFAULT_FPS,
) -> Path:
    """An H.264 mp4 of the videos played in step with a reference: at output frame r, panel v shows
    frame `aligned_list[v][r]` of video v (frames_list[v]: uint8 [T_v, S, S, 3]; aligned_list[v]: [T_ref]
    indices). The first panel is the reference (bordered). Frames are composed and encoded one at a time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_out = len(aligned_list[0])
    assert all(len(a) == num_out for a in aligned_list), "every panel needs one index per reference frame"
    tmp = path.with_name(f".{path.name}.partial.mp4")  # the final name appears only once complete
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.pix_fmt = "yuv420p"
        for r in range(num_out):
            grid = compose_grid(
                [frames[aligned[r]] for frames, aligned in zip(frames_list, aligned_list, strict=True)]
            )
            if r == 0:
                stream.height, stream.width = grid.shape[:2]
            for packet in stream.encode(av.VideoFrame.from_ndarray(grid, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path
