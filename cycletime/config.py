"""CycleTime settings. Defaults are the paper's and the official code's (see docs/ANCHORS in shared)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.config import param


@dataclass
class PropagationConfig:
    """Label propagation (evaluation): CRW's protocol by default."""

    davis: str | None = param(None, "DAVIS root (JPEGImages/, Annotations/); None: no periodic evaluation")
    split: str = param("val", "ImageSets file name without .txt")
    size: int = param(480, "frames resized to this height before the encoder", ge=32)
    context: int = param(20, "previous predicted frames used as context (plus the first frame)", ge=0)
    topk: int = param(10, "affinities kept per target position, over all context positions", ge=1)
    radius: float = param(12.0, "spatial radius of the short-term context, feature cells", gt=0)
    temperature: float = param(0.05, "softmax temperature of the propagation affinity", gt=0)
    max_sequences: int = param(0, "evaluate only the first N sequences; 0: all", ge=0)
    features: Literal["projection", "trunk"] = param(
        "projection",
        "what the trained encoder gives: its 1x1 projection after res4 (what the tracker matches), or the "
        "res4 trunk before it (CRW's layer; it read higher on DAVIS-2016 val, docs/cycletime.md)",
    )


@dataclass
class WalkConfig:
    """The frame-level random-walk loss of CRW (Jabri, Owens, Efros 2020), not in CycleTime: every frame of
    the clip (context frames and target, in time order) is cut into a grid of patches encoded one by one,
    and walks from the first frame out and back must return each patch to itself. `w_walk` weighs it."""

    grid: int = param(7, "patches per side of each frame's grid (CRW: 7 x 7)", ge=1)
    patch_px: int = param(64, "side of each patch image fed to the encoder, pixels (CRW: 64)", ge=8)
    patch_scale: float = param(
        0.25, "patch side as a fraction of the frame's crop (CRW: 64 of 256)", gt=0, le=1
    )
    temperature: float = param(0.05, "softmax temperature of the transitions (CRW's README: 0.05)", gt=0)
    edge_dropout: float = param(0.1, "share of transitions dropped at random per step (CRW: 0.1)", ge=0, lt=1)


@dataclass
class Config:
    """CycleTime: encoder + affine tracker trained by tracking a patch backward and forward."""

    backbone: Literal["resnet50", "resnet18"] = param("resnet50", "encoder trunk, cut at res4, stride 8")
    weights: str | None = param(None, "local weights file for the trunk; None: random initialisation")
    feat_dim: int = param(512, "channels after the 1x1 projection (paper: 512)", ge=1)
    context_frames: int = param(4, "context frames per clip (paper: 4)", ge=1)
    context_gap: int = param(2, "frame gap between context frames (paper: 2)", ge=1)
    target_offset: int = param(15, "target frame index after the first context frame (paper: 15)", ge=1)
    motion_gap: int = param(
        2, "patch placed where |target - frame motion_gap later| is large (paper: 2)", ge=1
    )
    patch_scale: float = param(
        1 / 3, "patch side as a fraction of the frame side (paper: 80/240)", gt=0, le=1
    )
    max_rotation_deg: float = param(45.0, "patch rotation drawn uniformly in +-this (paper: 45)", ge=0)
    motion_windows: int = param(
        10, "patch centre drawn among this many most-moving windows (paper: 10)", ge=1
    )
    jitter: float = param(1 / 12, "patch centre jitter, fraction of the frame (paper: 1/12)", ge=0)
    temperature: float = param(512**-0.5, "affinity = similarity / temperature (paper: 512**-0.5)", gt=0)
    grid_points: int = param(20, "points per side of the transformed-grid loss (paper: 20)", ge=2)
    patch_source: Literal["features", "image"] = param(
        "features",
        "query = the target's features cropped at the patch, or the patch image encoded alone (upstream; "
        "best on DAVIS on an H200, stalls on the CPU smoke sprites: docs/cycletime.md)",
    )
    tracker_schedule: Literal["batched", "per_cycle"] = param(
        "batched", "same arithmetic: batched (2K tracker calls) or upstream's per_cycle order (K(K+1) calls)"
    )
    max_cycle: int = param(4, "cycle lengths 1..max_cycle, at most context_frames (paper: 4)", ge=1)
    w_cycle: float = param(0.02, "weight of the cycle loss (paper: 0.02)", ge=0)
    w_skip: float = param(0.1, "weight of the skip loss (paper: 0.1)", ge=0)
    w_inlier: float = param(1.0, "weight of the inlier (feature similarity) loss (paper: 1.0)", ge=0)
    w_walk: float = param(0.0, "weight of the random-walk loss (CRW's; not in the paper; see walk.*)", ge=0)
    walk: WalkConfig = param(factory=WalkConfig, doc="random-walk loss (used when w_walk > 0)")
    freeze_encoder_steps: int = param(
        0, "train only the tracker for this many steps first (eager only: refused with trainer.compile)", ge=0
    )
    eval: PropagationConfig = param(factory=PropagationConfig, doc="label propagation")

    @property
    def tracks(self) -> bool:
        """Whether the affine tracker runs (some tracker loss has weight); CRW-only training skips it."""
        return bool(self.w_cycle or self.w_skip or self.w_inlier)

    def __post_init__(self) -> None:
        if self.walk.patch_px % 8:
            raise ValueError(
                f"walk.patch_px ({self.walk.patch_px}) must be a multiple of the encoder's stride 8"
            )
        if not (self.tracks or self.w_walk):
            raise ValueError("every loss weight (w_cycle, w_skip, w_inlier, w_walk) is 0: nothing to train")
        if self.max_cycle > self.context_frames:
            raise ValueError(
                f"max_cycle ({self.max_cycle}) must be <= context_frames ({self.context_frames})"
            )
        last_context = (self.context_frames - 1) * self.context_gap
        if self.target_offset <= last_context:
            raise ValueError(
                f"target_offset ({self.target_offset}) must come after the last context frame "
                f"({last_context})"
            )
