"""TCC's embedder: a ResNet conv4 trunk per frame, 3D convolutions over each step's context frames,
max-pooling, two FC layers and a linear embedding (Dwibedi et al. 2019, official implementation).

Legend: B videos, T sampled steps per video, K context frames per step (the last is the step
itself), C channels, h x w trunk feature grid, D embedding size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.backbones import build_trunk
from tcc.config import Config


@dataclass
class TCCOutput:
    embs: torch.Tensor  # [B, T, D]


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


def _fc_block(cin: int, cout: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(cin, cout), nn.ReLU(inplace=True))


class Embedder(nn.Module):
    """frames [B, T*K, 3, H, W] (step-major: each step's K context frames, oldest first) -> [B, T, D]."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.trunk = build_trunk(cfg.backbone, "conv4", cfg.weights)
        self.context = cfg.context_steps
        self.temporal = nn.Sequential(
            _conv_block(self.trunk.out_channels, cfg.conv_channels),
            _conv_block(cfg.conv_channels, cfg.conv_channels),
        )
        self.head = nn.Sequential(
            _fc_block(cfg.conv_channels, cfg.fc_channels, cfg.dropout),
            _fc_block(cfg.fc_channels, cfg.fc_channels, cfg.dropout),
            nn.Linear(cfg.fc_channels, cfg.embed_dim),
        )
        if cfg.train_bn_only:  # upstream fine-tunes only the trunk's BatchNorm (from ImageNet weights)
            for name, p in self.trunk.named_parameters():
                p.requires_grad = ".bn" in name or name.startswith("bn") or "downsample.1" in name

    def forward(self, frames_BFCHW: torch.Tensor) -> TCCOutput:
        B, F_ = frames_BFCHW.shape[:2]
        K = self.context
        T = F_ // K
        feats = self.trunk(frames_BFCHW.flatten(0, 1))  # [B*T*K, C, h, w]
        feats_NCKhw = feats.unflatten(0, (B * T, K)).transpose(1, 2)
        pooled = self.temporal(feats_NCKhw).amax(dim=(2, 3, 4))  # global 3D max-pool -> [B*T, C']
        return TCCOutput(self.head(pooled).unflatten(0, (B, T)))


def video_embeddings(embs_BTD: torch.Tensor, cfg: Config) -> torch.Tensor:
    """The embedder's output as the loss and the evaluation read it: [B, T, D] -> [B, T, D].

    `center_per_video`: each video's mean over its frames is subtracted first (the training clip's T
    sampled frames; every frame of the video in evaluation), so what is constant within a video (the
    scene, the person's looks) drops out and what remains is how the video changes in time. Then
    `normalize_embeddings` L2-normalises each frame. Neither is upstream's (both off by default).
    """
    if cfg.center_per_video:
        embs_BTD = embs_BTD - embs_BTD.mean(dim=1, keepdim=True)
    if cfg.normalize_embeddings:
        embs_BTD = F.normalize(embs_BTD, dim=-1)
    return embs_BTD
