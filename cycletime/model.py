"""CycleTime: an encoder and a weak affine tracker trained by tracking a patch back and forth in time.

Legend: B clips, F context frames, C feature channels, H x W frame feature grid (30 x 30 at 240 px),
h x w patch feature grid (10 x 10 for an 80 px patch), S frame side in pixels, P patch side in pixels.

One tracker step ("locate"): the affinity of every patch position to every frame position, softmax
over the frame positions, is read as an (H*W)-channel h x w map; two convolutions and a linear layer
regress (tx, ty, angle), which gives the transform [[cos s, -sin s, tx], [sin s, cos s, ty]] at the
fixed patch scale s; the frame's features are cropped there (bilinear, differentiable), and the crop
becomes the query of the next step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from core.affine import affine_crop, theta_from_params
from core.backbones import build_trunk
from core.correlation import pairwise_similarity, softmax_affinity
from cycletime.config import Config


@dataclass
class Located:
    """One tracker step: where the query went in a frame, and what was found there."""

    affinity: torch.Tensor  # [B, H*W, h, w], softmax over the frame positions (axis 1)
    theta: torch.Tensor  # [B, 2, 3] patch -> frame coordinates
    crop: torch.Tensor  # [B, C, h, w] L2-normalised features of the frame at theta


@dataclass
class CycleTimeOutput:
    """What the losses need. Thetas map patch coordinates to target-frame coordinates."""

    frame_hw: tuple[int, int]
    patch_hw: tuple[int, int]
    # The tracker's outputs (None when no tracker loss has weight: random-walk-only training).
    cycle_thetas: list[torch.Tensor] | None = None  # per cycle length c = 1..K: the final theta, [B, 2, 3]
    skip_thetas: torch.Tensor | None = None  # [B*F, 2, 3]: patch found in each context frame, tracked back
    locate_affinity: torch.Tensor | None = (
        None  # [B*F, H*W, h, w]: the patch's affinity to each context frame
    )
    locate_thetas: torch.Tensor | None = None  # [B*F, 2, 3]: the patch's transform in each context frame
    walk_nodes: torch.Tensor | None = None  # [B, F+1, N, C] L2-normalised patch embeddings (w_walk > 0)


class TransformRegressor(nn.Module):
    """Affinity map [B, H*W, h, w] -> (tx, ty, angle) -> theta [B, 2, 3] at the fixed patch scale."""

    def __init__(self, frame_positions: int, patch_side: int, scale: float) -> None:
        super().__init__()
        # Paper: two 4x4 convolutions on the 10x10 patch grid (-> 4x4 x 64 = 1024 features). Smaller
        # grids (smoke configs) get the largest kernel that still leaves a 2x2 map.
        k = min(4, (patch_side + 1) // 2)
        out_side = patch_side - 2 * (k - 1)
        self.conv1 = nn.Conv2d(frame_positions, 128, kernel_size=k, bias=False)
        self.conv2 = nn.Conv2d(128, 64, kernel_size=k, bias=False)
        self.fc = nn.Linear(64 * out_side * out_side, 3)
        self.scale = scale
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        # Small initial outputs: every first prediction is near the centred, unrotated patch.
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, affinity_B_HW_hw: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(affinity_B_HW_hw), 0.1)
        x = F.leaky_relu(self.conv2(x), 0.1)
        tx, ty, angle = self.fc(x.flatten(1)).float().unbind(1)  # theta in fp32: it places samples
        return theta_from_params(tx, ty, angle, self.scale)


class Encoder(nn.Module):
    """ResNet trunk to res4 at stride 8 -> 1x1 conv to `feat_dim` -> ReLU: [B, 3, S, S] -> [B, C, S/8, S/8].

    Not normalised (the tracker crops these and normalises the crops); what label propagation uses.
    """

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.trunk = build_trunk(cfg.backbone, "res4_os8", cfg.weights)
        self.project = nn.Conv2d(self.trunk.out_channels, cfg.feat_dim, kernel_size=1, bias=False)
        nn.init.kaiming_normal_(self.project.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        return F.relu(self.project(self.trunk(images_BCHW)))


def build_encoder(cfg: Config) -> Encoder:
    """The encoder alone (evaluation); its state dict is the model's `encoder.*` entries."""
    return Encoder(cfg)


class CycleTimeModel(nn.Module):
    """The encoder (features L2-normalised for the affinities) and the transform regressor."""

    def __init__(self, cfg: Config, crop: int) -> None:
        super().__init__()
        patch_px = round(crop * cfg.patch_scale)
        if crop % 8 or patch_px % 8:
            raise ValueError(
                f"data.crop ({crop}) and the patch (crop x patch_scale = {patch_px} px) must be multiples of "
                f"the encoder's stride 8"
            )
        self.encoder = Encoder(cfg)
        self.frame_hw = (crop // 8, crop // 8)
        self.patch_hw = (patch_px // 8, patch_px // 8)
        # Random-walk-only training (no tracker loss) has no tracker: every parameter gets a gradient.
        self.regressor = (
            TransformRegressor(self.frame_hw[0] * self.frame_hw[1], self.patch_hw[0], cfg.patch_scale)
            if cfg.tracks
            else None
        )
        self.temperature = cfg.temperature
        self.max_cycle = cfg.max_cycle
        self.schedule = cfg.tracker_schedule
        self.patch_source = cfg.patch_source
        self.tracks = cfg.tracks
        # Set with the encoder's requires_grad by the trainer's schedule (cycletime.method.on_step).
        self.encoder_frozen = False

    # ---------------------------------------------------------------------------- pieces

    def features(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        """Post-ReLU features at stride 8, not normalised -> [B, C, S/8, S/8]."""
        return self.encoder(images_BCHW)

    def encode(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        """L2-normalised features (what label propagation uses) -> [B, C, S/8, S/8]."""
        return F.normalize(self.features(images_BCHW), dim=1)

    def patch_nodes(self, patches_BTN3PP: torch.Tensor) -> torch.Tensor:
        """Each patch image encoded on its own and average-pooled -> L2-normalised nodes [B, T, N, C].

        Patches encoded one by one know nothing of where they lie in the frame, so a walk between
        them can only succeed by matching what they show (CRW's reason for patches, not feature cells).
        """
        B, T, N = patches_BTN3PP.shape[:3]
        feats = self.features(patches_BTN3PP.flatten(0, 2)).mean(dim=(2, 3))
        return F.normalize(feats, dim=1).unflatten(0, (B, T, N))

    def locate(
        self, query_BChw: torch.Tensor, frame_feats_BCHW: torch.Tensor, frame_norm_BCHW: torch.Tensor
    ) -> Located:
        """Find the (normalised) query in a frame: affinity -> theta -> crop of the frame's features."""
        B, _, H, W = frame_norm_BCHW.shape
        h, w = query_BChw.shape[-2:]
        sim_B_HW_hw = pairwise_similarity(
            frame_norm_BCHW.flatten(2).transpose(1, 2), query_BChw.flatten(2).transpose(1, 2)
        )
        # Softmax over frame positions in fp32: a column is a distribution over where the query went.
        affinity = softmax_affinity(sim_B_HW_hw, self.temperature, dim=1, out_dtype=torch.float32)
        affinity = affinity.reshape(B, H * W, h, w)
        theta = self.regressor(affinity.to(sim_B_HW_hw.dtype))
        crop = F.normalize(affine_crop(frame_feats_BCHW, theta, (h, w)), dim=1)
        return Located(affinity, theta, crop)

    # ---------------------------------------------------------------------------- forward

    def forward(
        self,
        context_BFCSS: torch.Tensor,
        target_BCSS: torch.Tensor,
        patch_BCPP: torch.Tensor | None,
        patch_theta: torch.Tensor | None = None,
        walk_patches: torch.Tensor | None = None,
    ) -> CycleTimeOutput:
        """Track the target's patch through the context frames and back.

        context: [B, F, 3, S, S] frames s, s+gap, ...; target: [B, 3, S, S] the later frame the patch
        was cut from; patch: [B, 3, P, P] that patch (its ground-truth transform stays with the loss),
        needed for patch_source "image"; patch_theta: [B, 2, 3] where it was cut, needed for "features";
        walk_patches: [B, F+1, N, 3, Q, Q] the grid patches of every frame for the random walk, or None.
        """
        walk_nodes = None if walk_patches is None else self.patch_nodes(walk_patches)
        if not self.tracks:
            return CycleTimeOutput(self.frame_hw, self.patch_hw, walk_nodes=walk_nodes)
        B, Fc = context_BFCSS.shape[:2]
        frames = torch.cat([context_BFCSS, target_BCSS[:, None]], dim=1).flatten(0, 1)
        feats = self.features(frames).unflatten(0, (B, Fc + 1))  # [B, F+1, C, H, W]
        norms = F.normalize(feats, dim=2)
        ctx_feats, ctx_norms = feats[:, :Fc], norms[:, :Fc]
        tgt_feats, tgt_norm = feats[:, Fc], norms[:, Fc]
        if self.patch_source == "image":  # paper: the patch image through the encoder on its own
            if patch_BCPP is None:
                raise ValueError('patch_source "image" needs the patch image')
            query = self.encode(patch_BCPP)  # [B, C, h, w]
        else:  # the target's features sampled where the patch was cut: no border effects of a small image
            if patch_theta is None:
                raise ValueError('patch_source "features" needs patch_theta')
            query = F.normalize(affine_crop(tgt_feats, patch_theta, self.patch_hw), dim=1)

        # Skip: the patch located directly in every context frame, then straight back to the target.
        located = self.locate(
            query.repeat_interleave(Fc, 0), ctx_feats.flatten(0, 1), ctx_norms.flatten(0, 1)
        )
        back = self.locate(
            located.crop, tgt_feats.repeat_interleave(Fc, 0), tgt_norm.repeat_interleave(Fc, 0)
        )

        # Cycles of length c = 1..K: back through the last c context frames, forward again, then into
        # the target frame; each ends with a transform in the target.
        K = min(self.max_cycle, Fc)
        track = self._cycles_per_cycle if self.schedule == "per_cycle" else self._cycles_batched
        cycle_thetas = track(query, ctx_feats, ctx_norms, tgt_feats, tgt_norm, K)

        return CycleTimeOutput(
            frame_hw=self.frame_hw,
            patch_hw=self.patch_hw,
            cycle_thetas=cycle_thetas,
            skip_thetas=back.theta,
            locate_affinity=located.affinity,
            locate_thetas=located.theta,
            walk_nodes=walk_nodes,
        )

    def _cycles_per_cycle(
        self, query, ctx_feats, ctx_norms, tgt_feats, tgt_norm, K: int
    ) -> list[torch.Tensor]:
        """Upstream's order: every cycle tracked from the patch on its own, 2c tracker steps each."""
        Fc = ctx_feats.shape[1]
        thetas = []
        for c in range(1, K + 1):
            current = query
            for i in [*range(Fc - 1, Fc - 1 - c, -1), *range(Fc - c + 1, Fc)]:
                current = self.locate(current, ctx_feats[:, i], ctx_norms[:, i]).crop
            thetas.append(self.locate(current, tgt_feats, tgt_norm).theta)
        return thetas

    def _cycles_batched(self, query, ctx_feats, ctx_norms, tgt_feats, tgt_norm, K: int) -> list[torch.Tensor]:
        """The same arithmetic in 2K tracker calls instead of K(K+1).

        The backward legs are prefixes of one another, so they are tracked once. Aligned at their
        ends, the forward legs of all cycles still running visit the same frame at each round (round r
        goes into frame Fc-K+r, the last round into the target), so they are batched: cycle c joins at
        round K-c+1 from where the backward leg found the patch c frames back.
        """
        Fc, B = ctx_feats.shape[1], query.shape[0]
        backward = [query]
        for i in range(Fc - 1, Fc - 1 - K, -1):
            backward.append(self.locate(backward[-1], ctx_feats[:, i], ctx_norms[:, i]).crop)
        active = backward[K]  # cycles in the order they join: K, K-1, ..., 1
        for r in range(1, K):
            i, n = Fc - K + r, r
            active = self.locate(
                active, ctx_feats[:, i].repeat(n, 1, 1, 1), ctx_norms[:, i].repeat(n, 1, 1, 1)
            ).crop
            active = torch.cat([active, backward[K - r]])
        thetas = self.locate(active, tgt_feats.repeat(K, 1, 1, 1), tgt_norm.repeat(K, 1, 1, 1)).theta
        return list(thetas.unflatten(0, (K, B)).flip(0).unbind(0))  # -> cycle lengths 1..K
