"""TCC settings. Defaults are the official implementation's (see ANCHORS in shared)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.config import param


@dataclass
class LossConfig:
    """The cycle-consistency loss (defaults: upstream `regression_mse_var`)."""

    loss_type: Literal["classification", "regression_mse", "regression_mse_var", "regression_huber"] = param(
        "regression_mse_var", "loss on the cycle-back distribution (upstream default)"
    )
    similarity_type: Literal["l2", "cosine"] = param("l2", "negative squared L2, or the dot product")
    temperature: float = param(0.1, "softmax temperature (upstream 0.1)", gt=0)
    divide_by_dim: bool = param(
        True,
        "similarities divided by the embedding size before the temperature (upstream); xirl skips "
        "it for L2-normalised embeddings",
    )
    label_smoothing: float = param(0.1, "classification label smoothing (upstream 0.1)", ge=0, lt=1)
    variance_lambda: float = param(0.001, "weight of log variance in regression_mse_var", ge=0)
    huber_delta: float = param(0.1, "delta of regression_huber", gt=0)
    normalize_indices: bool = param(True, "frame times divided by the video length")
    stochastic_matching: bool = param(False, "random cycles instead of all pairs")
    cycle_length: int = param(2, "videos per stochastic cycle", ge=2)
    num_cycles: int = param(0, "stochastic cycles per step; 0: N x T as upstream", ge=0)
    variance_floor: float = param(
        1e-6, "lower bound on the variance before its log (guard, not upstream)", gt=0
    )
    all_gather: bool = param(False, "pair videos across all GPUs (upstream: pairs within one GPU)")


@dataclass
class EvalConfig:
    """Alignment evaluation on held-out videos (Kendall's tau, alignment error, phases)."""

    videos: str | None = param(None, "folder of evaluation videos; None: no periodic evaluation")
    labels: str | None = param(None, "per-frame phase labels (JSON {stem: [label, ...]}) of those videos")
    warps: str | None = param(None, "canonical time per frame (JSON {stem: [t, ...]}) for alignment error")
    stride: int = param(1, "query stride of Kendall's tau (upstream: 2 Pouring, 5 Penn Action)", ge=1)
    size: int = param(224, "frames resized and centre-cropped to this side", ge=16)
    max_videos: int = param(0, "evaluate only the first N videos; 0: all", ge=0)


@dataclass
class Config:
    """TCC: a per-frame embedder trained so soft nearest neighbours cycle back in time."""

    backbone: Literal["resnet50", "resnet18"] = param("resnet50", "trunk, cut after conv4")
    weights: str | None = param(None, "local weights file for the trunk; None: random initialisation")
    train_bn_only: bool = param(False, "train only the trunk's BatchNorm (upstream, with ImageNet weights)")
    num_frames: int = param(20, "frames sampled per video (upstream num_steps 20)", ge=2)
    sampling: Literal["offset_uniform", "stride"] = param("offset_uniform", "frame sampling")
    sampling_stride: int = param(16, "frame step in stride sampling (upstream 16)", ge=1)
    context_steps: int = param(2, "frames per embedded step, the last one the step itself", ge=1)
    context_stride: int = param(15, "frame gap between context frames (upstream 15)", ge=1)
    conv_channels: int = param(512, "channels of the two 3D convs", ge=1)
    fc_channels: int = param(512, "width of the two FC layers", ge=1)
    dropout: float = param(0.1, "dropout before each FC layer", ge=0, lt=1)
    embed_dim: int = param(128, "embedding size", ge=1)
    center_per_video: bool = param(
        False, "subtract each video's mean embedding over its frames (loss and evaluation; not upstream)"
    )
    normalize_embeddings: bool = param(
        False, "L2-normalise each frame's embedding, after centring (upstream L2_NORMALIZE: off)"
    )
    brightness: float = param(32 / 255, "random brightness offset per video, +-this (upstream 32/255)", ge=0)
    contrast: tuple[float, float] = param((0.5, 1.5), "random contrast factor range per video (upstream)")
    loss: LossConfig = param(factory=LossConfig, doc="cycle-consistency loss")
    eval: EvalConfig = param(factory=EvalConfig, doc="alignment evaluation")
