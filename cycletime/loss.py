"""CycleTime's losses (paper and official code): total = w_cycle*cycle + w_skip*skip + w_inlier*inlier.

- cycle: transformed-grid loss between the final transform of each cycle length and the patch's true
  transform in the target frame, averaged over cycle lengths.
- skip: the patch located directly in each context frame and matched straight back to the target,
  transformed-grid loss against the true transform, averaged over context frames.
- inlier: minus the weak inlier score of the patch's affinity to each context frame under the
  transform the tracker predicted there (the affinity mass that agrees with it).
Upstream weights (0.02, 0.1, 1.0) come from `lamda * 0.2`, `lamda` and 1 with lamda = 0.1.
- walk (not CycleTime's; `w_walk`, off in the paper config): CRW's palindrome random walk over patch
  grids of the clip's frames (`core.walk`).
"""

from __future__ import annotations

import torch

from core.affine import inlier_score, transformed_grid_loss
from core.walk import palindrome_walk_loss
from cycletime.config import Config
from cycletime.model import CycleTimeOutput


def cycletime_loss(
    out: CycleTimeOutput, theta_true_B23: torch.Tensor, cfg: Config
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total, {cycle, skip, inlier, walk, walk_acc} detached; the terms that ran). Computed in fp32
    whatever the autocast dtype."""
    total = torch.zeros((), device=theta_true_B23.device)
    parts: dict[str, torch.Tensor] = {}
    if out.walk_nodes is not None:
        walk, walk_acc = palindrome_walk_loss(out.walk_nodes, cfg.walk.temperature, cfg.walk.edge_dropout)
        total = total + cfg.w_walk * walk
        parts |= {"walk": walk.detach(), "walk_acc": walk_acc}
    if out.cycle_thetas is None:
        return total, parts
    points = cfg.grid_points
    cycle = torch.stack(
        [transformed_grid_loss(t, theta_true_B23, points).mean() for t in out.cycle_thetas]
    ).mean()
    frames = out.skip_thetas.shape[0] // theta_true_B23.shape[0]
    skip = transformed_grid_loss(out.skip_thetas, theta_true_B23.repeat_interleave(frames, 0), points).mean()
    inlier = -inlier_score(out.locate_affinity, out.locate_thetas, out.frame_hw, out.patch_hw).mean()
    total = total + cfg.w_cycle * cycle + cfg.w_skip * skip + cfg.w_inlier * inlier
    return total, parts | {"cycle": cycle.detach(), "skip": skip.detach(), "inlier": inlier.detach()}
