"""Renderers of synthetic videos with known ground truth (numpy only, deterministic for a seed).

Shape letters: T frames, H height, W width, C = 3 colour channels, S sprites, N texture side.
Coordinates: x is the column, y the row, in pixels; (0, 0) is the centre of the top-left pixel.

- sprites (CycleTime): textured discs, squares and blobs moving along smooth known trajectories (with
  mild rotation and scale) over a textured background that pans slowly; ground truth is every sprite's
  centre, angle and scale per frame and instance masks that respect the occlusion order.
- phases (TCC): one process rendered from a canonical timeline tau in [0, 1] through ordered phases,
  seen through a random monotonic time warp per video, over a random background with slight jitter.

Frames are returned as a 4:2:0 video stores them (`video_io.to_yuv420`): colour at half resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from train.data.video_io import to_yuv420

KIND_CODES = {"sprites": 1, "phases": 2}  # part of each video's seed, so the two kinds never share noise
SHAPES = ("disc", "square", "blob")
# Muted colours per sprites video: the background mixes the first two, each sprite two of the three, so
# every sprite shares at least one colour with the background and colour alone cannot tell them apart.
PALETTE_SIZE = 3
TEXTURE_CONTRAST = 0.8  # luminance contrast of sprite and background textures (0: flat colour; 1: full)
PHASE_NAMES = ("slide", "climb", "lamp_on", "drop")
# Canonical times where each phase starts and the last one ends: the same for every video and dataset.
PHASE_BOUNDARIES = (0.0, 0.3, 0.55, 0.8, 1.0)
# The ball's path, in fractions of (width, height), at each phase boundary; linear within a phase.
PHASE_WAYPOINTS = ((0.12, 0.66), (0.5, 0.66), (0.72, 0.3), (0.86, 0.3), (0.88, 0.66))
PHASE_COLOURS = ((0.9, 0.15, 0.1), (0.15, 0.8, 0.2), (0.15, 0.3, 0.95), (0.95, 0.85, 0.1))


@dataclass
class SyntheticVideo:
    """One generated video before encoding: RGB frames, instance masks (sprites only), ground truth."""

    frames_THWC: np.ndarray  # uint8 RGB
    masks_THW: np.ndarray | None  # uint8 ids 0..S, 0 = background
    gt: dict[str, Any]  # JSON-ready


def video_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """An independent stream per (seed, kind, video index): video i is the same whatever the count."""
    return np.random.default_rng([seed, KIND_CODES[kind], index])


def noise_texture(rng: np.random.Generator, H: int, W: int, beta: float) -> np.ndarray:
    """Periodic 1/f^beta noise [H, W] in [0, 1]: natural-image-like texture at every scale."""
    fy = np.fft.fftfreq(H)[:, None]
    fx = np.fft.rfftfreq(W)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    spectrum = np.fft.rfft2(rng.standard_normal((H, W))) / f**beta
    spectrum[0, 0] = 0.0
    tex = np.fft.irfft2(spectrum, s=(H, W))
    lo, hi = np.percentile(tex, (1, 99))
    return np.clip((tex - lo) / (hi - lo), 0.0, 1.0)


def sample_bilinear(img_HWC: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a periodic image at real positions x, y (any shape) -> [..., C]."""
    H, W = img_HWC.shape[:2]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.astype(np.int64) % W, y0.astype(np.int64) % H
    x1, y1 = (x0 + 1) % W, (y0 + 1) % H
    top = img_HWC[y0, x0] * (1 - fx) + img_HWC[y0, x1] * fx
    bottom = img_HWC[y1, x0] * (1 - fx) + img_HWC[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def sample_shifted(img_HWC: np.ndarray, ox: float, oy: float, H: int, W: int) -> np.ndarray:
    """`sample_bilinear` at (x + ox, y + oy) for every pixel of an H x W frame, as a shifted crop [H, W, C].

    One shift for all pixels means one set of bilinear weights: slicing instead of per-pixel gathers.
    """
    x0, y0 = int(np.floor(ox)), int(np.floor(oy))
    fx, fy = ox - x0, oy - y0
    rows = (np.arange(H + 1) + y0) % img_HWC.shape[0]
    cols = (np.arange(W + 1) + x0) % img_HWC.shape[1]
    patch = img_HWC[rows][:, cols]
    top = patch[:-1, :-1] * (1 - fx) + patch[:-1, 1:] * fx
    bottom = patch[1:, :-1] * (1 - fx) + patch[1:, 1:] * fx
    return top * (1 - fy) + bottom * fy


def hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (each in [0, 1]) -> RGB [3] in [0, 1]."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour of low saturation, RGB [3]: what backgrounds (and sprites) are made of."""
    return hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.45), 1.0)


def _two_colour_texture(
    detail_HW: np.ndarray, mix_HW: np.ndarray, colour_a: np.ndarray, colour_b: np.ndarray, contrast: float
) -> np.ndarray:
    """Fine luminance detail over a slowly varying mix of two colours -> [H, W, 3] in [0, 1].

    Colour varies only at coarse scale (`mix`, steep spectrum) because 4:2:0 video keeps chroma at half
    resolution; the fine detail lives in luminance, which survives encoding almost exactly.
    """
    colour = colour_a * mix_HW[..., None] + colour_b * (1 - mix_HW[..., None])
    return colour * (0.5 - contrast / 2 + contrast * detail_HW[..., None])


def _noise_pair(rng: np.random.Generator, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    """(fine luminance detail, coarse colour mix) noise [H, W] each, for `_two_colour_texture`."""
    return noise_texture(rng, H, W, beta=1.5), noise_texture(rng, H, W, beta=3.0)


def _background(rng: np.random.Generator, H: int, W: int, contrast: float) -> np.ndarray:
    """Textured background [H, W, 3] in [0, 1]: fine luminance detail over two muted colours."""
    detail, mix = _noise_pair(rng, H, W)
    return _two_colour_texture(detail, mix, _muted_colour(rng), _muted_colour(rng), contrast)


# ----------------------------------------------------------------------------------------------- sprites


def _shape_inside(shape: str, u: np.ndarray, v: np.ndarray, lobes: np.ndarray) -> np.ndarray:
    """Whether local points (u, v), in units of the sprite radius, are inside the shape (all fit r <= 1)."""
    if shape == "disc":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 1.0 / np.sqrt(2.0)
    theta = np.arctan2(v, u)
    rho = 0.75 + sum(a * np.cos(k * theta + phase) for k, (a, phase) in enumerate(lobes, start=2))
    return np.hypot(u, v) <= rho


def _sprite_params(rng: np.random.Generator, sid: int, T: int, H: int, W: int) -> dict:
    """One sprite's shape and smooth trajectory (centre, angle, scale per frame), kept inside the frame."""
    side = min(H, W)
    radius = rng.uniform(0.1, 0.16) * side
    scale_amp = rng.uniform(0.0, 0.1)
    reach = radius * (1 + scale_amp) + 1.0
    t = np.arange(T, dtype=np.float64)
    centre = []
    for extent in (W, H):
        room = (extent - 1) / 2 - reach  # farthest the centre may go from the middle
        amp = rng.uniform(0.5, 1.0) * room
        mid = (extent - 1) / 2 + rng.uniform(-1, 1) * (room - amp)
        speed = rng.uniform(2.0, 4.0) * side / 128  # peak px/frame along this axis
        omega = speed / max(amp, 1e-6)
        centre.append(mid + amp * np.sin(omega * t + rng.uniform(0, 2 * np.pi)))
    return {
        "id": sid,
        "shape": SHAPES[int(rng.integers(len(SHAPES)))],
        "radius": float(radius),
        "centre": np.stack(centre, axis=1).tolist(),  # [T, 2] (x, y)
        "angle": (rng.uniform(0, 2 * np.pi) + rng.uniform(-0.05, 0.05) * t).tolist(),  # radians
        "scale": (1 + scale_amp * np.sin(rng.uniform(0.02, 0.08) * t + rng.uniform(0, 2 * np.pi))).tolist(),
        "lobes": rng.uniform([0.03, 0], [0.08, 2 * np.pi], size=(3, 2)).tolist(),  # blob: (amplitude, phase)
    }


def sprite_local_coords(sprite: dict, t: int, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame points (x, y) at frame t -> the sprite's own coordinates (u, v), in units of its radius.

    The texture is attached to (u, v), so a point with the same (u, v) in two frames is the same surface
    point: this is the dense ground-truth correspondence of the sprite.
    """
    cx, cy = sprite["centre"][t]
    cos, sin = np.cos(sprite["angle"][t]), np.sin(sprite["angle"][t])
    r = sprite["radius"] * sprite["scale"][t]
    dx, dy = x - cx, y - cy
    return (cos * dx + sin * dy) / r, (-sin * dx + cos * dy) / r


def sprite_frame_coords(sprite: dict, t: int, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `sprite_local_coords`: sprite coordinates (u, v) -> frame points (x, y) at frame t."""
    cx, cy = sprite["centre"][t]
    cos, sin = np.cos(sprite["angle"][t]), np.sin(sprite["angle"][t])
    r = sprite["radius"] * sprite["scale"][t]
    return cx + r * (cos * u - sin * v), cy + r * (sin * u + cos * v)


def _bounding_box(sprite: dict, t: int, H: int, W: int) -> tuple[slice, slice]:
    """The pixels a sprite may cover at frame t (every shape fits in the disc of its radius)."""
    cx, cy = sprite["centre"][t]
    reach = sprite["radius"] * sprite["scale"][t] + 1
    rows = slice(max(int(cy - reach), 0), min(int(cy + reach) + 2, H))
    cols = slice(max(int(cx - reach), 0), min(int(cx + reach) + 2, W))
    return rows, cols


def make_sprites_video(seed: int, index: int, frames: int, width: int, height: int) -> SyntheticVideo:
    """2-4 textured sprites over a panning textured background -> frames, masks [T, H, W] and ground truth.

    Sprites and background are textured alike, from one palette of muted colours per video: the
    background mixes palette colours 0 and 1, each sprite two palette colours of its own draw, so
    colours repeat across objects and background (as in real video) and telling a sprite apart takes
    its texture, outline and motion, not its colour alone.
    """
    T, H, W = frames, height, width
    rng = video_rng(seed, "sprites", index)
    S = int(rng.integers(2, 5))
    sprites = [_sprite_params(rng, s + 1, T, H, W) for s in range(S)]
    palette = [_muted_colour(rng) for _ in range(PALETTE_SIZE)]
    textures = []
    for sprite in sprites:
        pair = rng.choice(PALETTE_SIZE, size=2, replace=False)
        sprite["colours"] = [palette[i].tolist() for i in pair]
        detail, mix = _noise_pair(rng, 64, 64)
        textures.append(
            _two_colour_texture(detail, mix, palette[pair[0]], palette[pair[1]], TEXTURE_CONTRAST)
        )
    detail, mix = _noise_pair(rng, 2 * H, 2 * W)
    background = _two_colour_texture(detail, mix, palette[0], palette[1], TEXTURE_CONTRAST)
    pan_dir = rng.uniform(0, 2 * np.pi)
    pan = rng.uniform(0.3, 1.0) * min(H, W) / 128 * np.arange(T)  # px/frame
    offset_T2 = rng.uniform(0, [W, H]) + pan[:, None] * np.array([np.cos(pan_dir), np.sin(pan_dir)])

    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    video = np.empty((T, H, W, 3), np.uint8)
    masks = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        frame = sample_shifted(background, offset_T2[t, 0], offset_T2[t, 1], H, W)
        for sprite, tex in zip(sprites, textures, strict=True):  # back to front: later sprites occlude
            box = _bounding_box(sprite, t, H, W)
            u, v = sprite_local_coords(sprite, t, xs[box], ys[box])
            inside = _shape_inside(sprite["shape"], u, v, np.array(sprite["lobes"]))
            n = tex.shape[0]
            frame[box][inside] = sample_bilinear(tex, (u[inside] + 1) * (n / 2), (v[inside] + 1) * (n / 2))
            masks[t][box][inside] = sprite["id"]
        video[t] = _to_uint8(frame)
    gt = {
        "kind": "sprites",
        "frames": T,
        "width": W,
        "height": H,
        "coords": "x = column, y = row, in pixels; (0, 0) is the centre of the top-left pixel",
        "draw_order": [s["id"] for s in sprites],
        "background_offset": offset_T2.tolist(),  # frame pixel (x, y) shows background (x + ox, y + oy)
        "palette": [c.tolist() for c in palette],
        "sprites": sprites,
    }
    return SyntheticVideo(to_yuv420(video), masks, gt)


# ------------------------------------------------------------------------------------------------ phases


def phase_of(tau: np.ndarray) -> np.ndarray:
    """Canonical time(s) in [0, 1] -> phase index, the same map for every video."""
    return np.searchsorted(np.asarray(PHASE_BOUNDARIES[1:-1]), tau, side="right")


def ball_position(tau: np.ndarray) -> np.ndarray:
    """Canonical time(s) -> the ball's (x, y) in fractions of (width, height), before nuisance [..., 2]."""
    tau = np.asarray(tau, dtype=np.float64)
    points = np.array(PHASE_WAYPOINTS)
    return np.stack([np.interp(tau, PHASE_BOUNDARIES, points[:, i]) for i in (0, 1)], axis=-1)


def random_warp(rng: np.random.Generator, T: int, segments: int = 4) -> tuple[np.ndarray, dict]:
    """A random increasing piecewise-linear map frame -> canonical time: tau [T] and its knots.

    Each of `segments` equal stretches of output time plays the process at its own speed (0.5x-2x);
    the video may start a little after tau = 0 and end a little before tau = 1.
    """
    start, end = rng.uniform(0.0, 0.04), rng.uniform(0.96, 1.0)
    speed = np.exp(rng.uniform(-0.7, 0.7, segments))
    knots_tau = start + (end - start) * np.concatenate([[0.0], np.cumsum(speed) / speed.sum()])
    knots_frac = np.linspace(0.0, 1.0, segments + 1)
    tau = np.interp(np.arange(T) / (T - 1), knots_frac, knots_tau)
    return tau, {"frame_fraction": knots_frac.tolist(), "canonical_time": knots_tau.tolist()}


def make_phases_video(seed: int, index: int, frames: int, width: int, height: int) -> SyntheticVideo:
    """A ball through 4 ordered phases, seen through a random time warp -> frames and ground truth.

    Visible in every frame: the phase (ball colour; lamp lit in phases 2 and 3) and the canonical time
    (ball position along a fixed path; a progress bar whose filled length is tau).
    """
    T, H, W = frames, height, width
    rng = video_rng(seed, "phases", index)
    tau_T, warp = random_warp(rng, T)
    background = _background(rng, H, W, contrast=0.5) * 0.7  # darker than every foreground colour
    shade = noise_texture(rng, 32, 32, beta=1.5)[..., None]
    shift = rng.uniform(-0.04, 0.04, 2) * [W, H]
    jitter_T2 = np.clip(rng.normal(0.0, 0.5, (T, 2)), -1.5, 1.5)
    side = min(H, W)
    radius = 0.08 * side
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)

    bar_x0, bar_len = 0.06 * W + shift[0], 0.88 * W
    bar_rows = (ys >= 0.84 * H + shift[1]) & (ys <= 0.92 * H + shift[1])
    lamp = (np.abs(xs - 0.15 * W - shift[0]) <= 0.07 * side) & (
        np.abs(ys - 0.18 * H - shift[1]) <= 0.07 * side
    )
    centre_T2 = ball_position(tau_T) * [W, H] + shift + jitter_T2
    phase_T = phase_of(tau_T)

    video = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        frame = background.copy()
        dx, dy = xs - centre_T2[t, 0], ys - centre_T2[t, 1]
        track = bar_rows & (xs >= bar_x0) & (xs <= bar_x0 + bar_len)
        frame[track] = 0.15
        frame[track & (xs <= bar_x0 + tau_T[t] * bar_len)] = 0.95
        frame[lamp] = (1.0, 0.95, 0.6) if phase_T[t] >= 2 else (0.2, 0.2, 0.2)
        ball = dx * dx + dy * dy <= radius * radius
        tex = sample_bilinear(shade, (dx[ball] / radius + 1) * 16, (dy[ball] / radius + 1) * 16)
        frame[ball] = np.array(PHASE_COLOURS[phase_T[t]]) * (0.6 + 0.4 * tex)
        video[t] = _to_uint8(frame)
    gt = {
        "kind": "phases",
        "frames": T,
        "width": W,
        "height": H,
        "canonical_time": tau_T.tolist(),
        "phase": phase_T.tolist(),
        "phase_names": list(PHASE_NAMES),
        "phase_boundaries": list(PHASE_BOUNDARIES),
        "warp": warp,
        "ball_centre": centre_T2.tolist(),  # (x, y) per frame, pixels
        "ball_radius": radius,
        "progress_bar": {
            "x0": bar_x0,
            "length": bar_len,
            "y0": 0.84 * H + shift[1],
            "y1": 0.92 * H + shift[1],
        },
        "scene_shift": shift.tolist(),
        "jitter": jitter_T2.tolist(),
    }
    return SyntheticVideo(to_yuv420(video), None, gt)


GENERATORS = {"sprites": make_sprites_video, "phases": make_phases_video}
