"""Label propagation through a video with a frozen encoder, memory-bounded (CRW's protocol by default).

For each target frame t = 1..T-1 the context is the first frame (ground-truth labels, all positions)
plus the `context` most recent frames (their predicted soft labels; only positions closer than
`radius` feature cells to the target position, CRW's strict window). Each target position takes the
top-k most similar context positions jointly over the whole context (dot product of L2-normalised
features), softmax(sim / temperature) over those k, and the weighted sum of their labels. As in CRW's
`test.py`, the short-term window starts filled with copies of the first frame, so early frames see it
more than once.

Memory: every frame is encoded once; the context lives in one preallocated ring of 1 + context feature
maps at stride 8 (no per-frame concatenation); the affinity is computed by
`core.correlation.local_topk_affinity` one tile of target positions at a time, against the first frame
and only the recent frames' cells within reach of the tile, so neither the [N, M] affinity nor its
mask is ever held and the masked-away scores are never computed. Frames arrive one at a time as uint8
and are encoded in small batches.

Legend: B batch, C channels, D label channels (background + objects, or background + joints),
h x w feature grid, N = h*w target positions, S = 1 + context context slots, M = S*N context
positions, H x W image, J joints, K top-k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.backbones import IMAGENET_MEAN, IMAGENET_STD
from core.correlation import local_topk_affinity, propagate
from cycletime.config import PropagationConfig

Encoder = Callable[[torch.Tensor], torch.Tensor]  # frames [B, 3, H, W] normalised -> feats [B, C, H/8, W/8]

STRIDE = 8  # encoder output stride (ResNet res4 with stride 1, as TimeCycle and CRW)
POSE_SIGMA = 0.5  # CRW's JHMDB heatmap sigma, in feature cells
POSE_TOPK = 3  # CRW's `process_pose`: a joint is the weighted mean of its 3 strongest cells
QUERY_TILE = 12  # query cells per tile side in the windowed top-k: the fastest of 6-24 (bench/window.py)


@dataclass(frozen=True)
class PropagationSettings:
    """The settings of the algorithm (PropagationConfig's context/topk/radius/temperature) plus
    `max_chunk_elements`, the memory knob: the most affinity entries scored at once (one query tile's)."""

    context: int = 20
    topk: int = 10
    radius: float = 12.0
    temperature: float = 0.05
    max_chunk_elements: int = 2**25

    @classmethod
    def from_config(cls, cfg: PropagationConfig, max_chunk_elements: int = 2**25) -> PropagationSettings:
        return cls(cfg.context, cfg.topk, cfg.radius, cfg.temperature, max_chunk_elements)

    def tile_size(self, num_free: int, local_frames: int) -> int:
        """Side of the query tiles of `core.correlation.local_topk_affinity`: QUERY_TILE, or smaller
        where one tile's scores (tile^2 x (num_free + local_frames x (tile + 2 radius)^2) entries) would
        exceed max_chunk_elements; at least 1."""
        reach = 2 * math.floor(strict_radius(self.radius))
        for tile in range(QUERY_TILE, 1, -1):
            if tile * tile * (num_free + local_frames * (tile + reach) ** 2) <= self.max_chunk_elements:
                return tile
        return 1


class LabelPropagator:
    """The rolling context of one video: feed the target frames' features in order with `step`."""

    def __init__(self, feats0_Chw: torch.Tensor, labels0_Dhw: torch.Tensor, settings: PropagationSettings):
        C, h, w = feats0_Chw.shape
        if labels0_Dhw.shape[-2:] != (h, w):
            raise ValueError(f"labels {list(labels0_Dhw.shape)} must be on the feature grid {h}x{w}")
        self.settings, self.grid = settings, (h, w)
        S = 1 + settings.context
        if S * h * w < settings.topk:
            raise ValueError(f"topk ({settings.topk}) exceeds the {S * h * w} context positions")
        # Slot 0 holds the first frame for good; slots 1..context are the ring of recent frames,
        # initially copies of the first frame (CRW pads the video start with it).
        self._keys_SNC = feats0_Chw.flatten(1).t().expand(S, h * w, C).contiguous()
        self._values_SND = labels0_Dhw.flatten(1).t().float().expand(S, h * w, -1).contiguous()
        self._next_slot = 1
        self._radius = strict_radius(settings.radius)

    @torch.no_grad()
    def step(self, feats_Chw: torch.Tensor) -> torch.Tensor:
        """Soft labels [D, h, w] (fp32) of the next target frame, which then joins the context."""
        C, h, w = feats_Chw.shape
        if (h, w) != self.grid:
            raise ValueError(f"frame features {h}x{w} differ from the first frame's {self.grid}")
        S, N, D = self._values_SND.shape
        weights_NK, index_NK = local_topk_affinity(
            feats_Chw.permute(1, 2, 0),
            self._keys_SNC[0],
            self._keys_SNC[1:].view(S - 1, h, w, C),
            self.settings.topk,
            self.settings.temperature,
            self._radius,
            "dot",
            tile=self.settings.tile_size(N, S - 1),
        )
        query_NC = feats_Chw.flatten(1).t()
        labels_ND = propagate(weights_NK, index_NK, self._values_SND.view(S * N, D)).float()
        if S > 1:
            self._keys_SNC[self._next_slot] = query_NC
            self._values_SND[self._next_slot] = labels_ND
            self._next_slot = self._next_slot % (S - 1) + 1
        return labels_ND.t().reshape(D, h, w)


def strict_radius(radius: float) -> float:
    """The inclusive radius (cells with dy^2 + dx^2 <= r^2, core's window) that keeps exactly the cells
    at distance < radius (CRW's window). Squared cell distances are integers, so "< radius" is
    "<= ceil(radius^2) - 1"; the half-integer margin survives the float32 comparison in core."""
    return math.sqrt(max(math.ceil(radius * radius) - 0.5, 0.0))


def resized_hw(height: int, width: int, size: int) -> tuple[int, int]:
    """Encoder input size: height `size`, width keeping the aspect ratio, rounded to a multiple of 8."""
    if size % STRIDE:
        raise ValueError(f"size must be a multiple of {STRIDE}, got {size}")
    return size, max(STRIDE, round(width * size / height / STRIDE) * STRIDE)


def preprocess(frames_BHW3: np.ndarray, size: int, device: torch.device | str) -> torch.Tensor:
    """uint8 frames [B, H, W, 3] -> resized (bilinear, antialiased) and ImageNet-normalised [B, 3, h, w]
    float32 on `device`."""
    x = torch.from_numpy(np.ascontiguousarray(frames_BHW3)).to(device).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(
        x, size=resized_hw(*x.shape[-2:], size), mode="bilinear", align_corners=False, antialias=True
    )
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def encode_frames(
    encode: Encoder,
    frames: Iterable[np.ndarray],
    size: int,
    device: torch.device | str,
    batch: int = 4,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(frame uint8 [H, W, 3], L2-normalised features [C, h, w]) per frame, encoding `batch` frames at
    a time without autograd; only `batch` frames are ever held as floats."""
    pending: list[np.ndarray] = []

    def flush() -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        with torch.no_grad():
            feats_BChw = F.normalize(encode(preprocess(np.stack(pending), size, device)), dim=1)
        yield from zip(pending, feats_BChw, strict=True)

    for frame in frames:
        pending.append(frame)
        if len(pending) == batch:
            yield from flush()
            pending = []
    if pending:
        yield from flush()


def propagate_video(
    encode: Encoder,
    frames: Iterable[np.ndarray],
    first_labels: Callable[[tuple[int, int]], torch.Tensor],
    settings: PropagationSettings,
    size: int,
    device: torch.device | str,
    batch: int = 4,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(frame, soft labels [D, h, w]) for every frame; frame 0's are `first_labels(grid_hw)`."""
    propagator = None
    for frame, feats_Chw in encode_frames(encode, frames, size, device, batch):
        if propagator is None:
            labels_Dhw = first_labels(tuple(feats_Chw.shape[-2:])).to(feats_Chw.device).float()
            propagator = LabelPropagator(feats_Chw, labels_Dhw, settings)
        else:
            labels_Dhw = propagator.step(feats_Chw)
        yield frame, labels_Dhw


def masks_to_labels(
    ids_HW: np.ndarray | torch.Tensor, num_classes: int, grid_hw: tuple[int, int]
) -> torch.Tensor:
    """Object ids [H, W] -> one-hot [D = num_classes, h, w] area-averaged onto the feature grid."""
    ids = torch.as_tensor(np.asarray(ids_HW), dtype=torch.long)
    if ids.max() >= num_classes:
        raise ValueError(f"mask holds id {int(ids.max())} but only {num_classes} classes were given")
    onehot_1DHW = F.one_hot(ids, num_classes).permute(2, 0, 1)[None].float()
    return F.interpolate(onehot_1DHW, size=grid_hw, mode="area")[0]


def labels_to_mask(labels_Dhw: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Soft labels [D, h, w] -> ids [H, W] (int64): bilinear upsampling to the image, then argmax."""
    up_DHW = F.interpolate(labels_Dhw[None].float(), size=image_hw, mode="bilinear", align_corners=False)[0]
    return up_DHW.max(0).indices  # the first maximum on ties, as argmax; several times faster on CPU


def _to_cells(xy_J2: torch.Tensor, image_hw: tuple[int, int], grid_hw: tuple[int, int]) -> torch.Tensor:
    # Centre-aligned: cell u covers pixels [u W/w, (u+1) W/w), so pixel x sits at (x + 0.5) w/W - 0.5.
    # With the sizes swapped it maps cells back to pixels.
    scale = torch.tensor([grid_hw[1] / image_hw[1], grid_hw[0] / image_hw[0]], dtype=torch.float64)
    return (xy_J2 + 0.5) * scale - 0.5


def keypoints_to_heatmaps(
    xy_J2: np.ndarray, image_hw: tuple[int, int], grid_hw: tuple[int, int], sigma: float = POSE_SIGMA
) -> torch.Tensor:
    """Joint positions [J, 2] (x, y pixels) -> [1 + J, h, w]: channel 0 background (1 - joint mass,
    clamped), channel 1 + j a Gaussian of `sigma` cells peaking at 1 on joint j (CRW's JHMDB labels)."""
    uv_J2 = _to_cells(torch.as_tensor(np.asarray(xy_J2), dtype=torch.float64), image_hw, grid_hw)
    h, w = grid_hw
    ys = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    d2_Jhw = (xs - uv_J2[:, 0].view(-1, 1, 1)) ** 2 + (ys - uv_J2[:, 1].view(-1, 1, 1)) ** 2
    heat_Jhw = torch.exp(-d2_Jhw / (2 * sigma**2))
    background_1hw = (1 - heat_Jhw.sum(0, keepdim=True)).clamp_min(0)
    return torch.cat([background_1hw, heat_Jhw]).float()


def heatmaps_to_keypoints(
    labels_Dhw: torch.Tensor, image_hw: tuple[int, int], topk: int = POSE_TOPK
) -> np.ndarray:
    """Propagated [1 + J, h, w] -> joint positions [J, 2] (x, y pixels): per joint the mean of its
    `topk` strongest cells weighted by their values (CRW's `process_pose`), mapped to image pixels;
    NaN for a joint whose map is all zero."""
    heat_Jn = labels_Dhw[1:].flatten(1).double().cpu()
    h, w = labels_Dhw.shape[-2:]
    vals_Jk, idx_Jk = heat_Jn.topk(min(topk, h * w), dim=1)
    total_J1 = vals_Jk.sum(1, keepdim=True)
    weights_Jk = vals_Jk / total_J1.clamp_min(torch.finfo(torch.float64).tiny)
    uv_J2 = torch.stack([((idx_Jk % w) * weights_Jk).sum(1), ((idx_Jk // w) * weights_Jk).sum(1)], dim=1)
    xy_J2 = _to_cells(uv_J2, (h, w), image_hw)  # cells -> pixels
    xy_J2[total_J1[:, 0] <= 0] = float("nan")
    return xy_J2.numpy()
