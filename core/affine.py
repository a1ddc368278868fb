"""Affine transforms in normalised coordinates, differentiable affine crops, and CycleTime's patch
sampling, transformed-grid loss and weak inlier score.

Legend: B batch, C channels, H x W the input (frame) map, h x w the output (patch) grid, P points.

Convention (the one of F.affine_grid with align_corners=False, used everywhere here):
- theta_B23 maps a point of the *output* grid to the *input* point it samples, both in normalised
  coordinates: [x_in, y_in] = A [x_out, y_out] + t, with theta = [A | t]. x runs along the width, y along
  the height (downwards).
- Normalised coordinates span the outer pixel edges: -1 is the left edge of the first pixel, +1 the right
  edge of the last; the centre of pixel i of an axis of S pixels is at (2 i + 1) / S - 1.
- Hence theta_from_params(tx, ty, angle, s) samples the square of side s (a fraction of the frame)
  centred at (tx, ty) and rotated by `angle`; the identity returns the whole input resampled to the output
  size; theta_from_params(0, 0, 0, 1/3) of a 30x30 map onto 10x10 returns exactly pixels 10..19 of each
  axis (every sample falls on a pixel centre: no interpolation).
Points outside the input read zeros (padding_mode="zeros").
"""

from __future__ import annotations

import math
from functools import reduce

import torch
import torch.nn.functional as F

Scalar = float | torch.Tensor


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    # grid_sample needs input and grid in one dtype, and half-precision grids misplace samples (a bf16
    # coordinate near 1 is only good to 2^-8, a quarter pixel on a 30-wide map): sample in fp32 or better.
    return torch.promote_types(dtype, torch.float32)


def theta_from_params(tx: Scalar, ty: Scalar, angle: Scalar, scale: Scalar) -> torch.Tensor:
    """TimeCycle's parameterisation: [[cos*s, -sin*s, tx], [sin*s, cos*s, ty]], angle in radians.

    Arguments are tensors of one broadcastable shape [B] or Python numbers (a 0-d result becomes B = 1);
    device and dtype come from the tensor arguments (default dtype when there are none). -> theta_B23.
    """
    given = [v for v in (tx, ty, angle, scale) if isinstance(v, torch.Tensor)]
    dtype = reduce(torch.promote_types, [v.dtype for v in given]) if given else torch.get_default_dtype()
    dtype = dtype if dtype.is_floating_point else torch.get_default_dtype()
    device = given[0].device if given else None
    # torch.full, not torch.as_tensor: a Python number made into a CUDA tensor is a blocking host->device
    # copy, and this runs in every training step (patch sampling, the regressor).
    tx, ty, angle, scale = torch.broadcast_tensors(
        *(
            v.to(device, dtype)
            if isinstance(v, torch.Tensor)
            else torch.full((), v, dtype=dtype, device=device)
            for v in (tx, ty, angle, scale)
        )
    )
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    row_x = torch.stack([cos, -sin, tx], dim=-1)
    row_y = torch.stack([sin, cos, ty], dim=-1)
    theta = torch.stack([row_x, row_y], dim=-2)
    return theta.reshape(-1, 2, 3)


def to_3x3(theta_B23: torch.Tensor) -> torch.Tensor:
    """[B, 2, 3] -> [B, 3, 3] homogeneous matrix (last row 0, 0, 1)."""
    last = torch.zeros_like(theta_B23[..., :1, :])
    last[..., 0, 2] = 1
    return torch.cat([theta_B23, last], dim=-2)


def compose(theta_a_B23: torch.Tensor, theta_b_B23: torch.Tensor) -> torch.Tensor:
    """The transform that applies b to a point first, then a: p -> a(b(p)), i.e. to_3x3(a) @ to_3x3(b).

    In crop terms: cropping with a, then cropping that crop with b, samples the input at a(b(p)), so
    affine_crop(affine_crop(x, a, s1), b, s2) == affine_crop(x, compose(a, b), s2) (up to interpolation).
    """
    A = theta_a_B23[..., :2]
    return torch.cat([A @ theta_b_B23[..., :2], A @ theta_b_B23[..., 2:] + theta_a_B23[..., 2:]], dim=-1)


def invert(theta_B23: torch.Tensor) -> torch.Tensor:
    """The inverse transform: compose(invert(t), t) and compose(t, invert(t)) are the identity.

    Closed-form 2x2 inverse (differentiable, no host sync); a singular A gives inf/nan, unchecked.
    """
    a, b, c, d = theta_B23[..., 0, 0], theta_B23[..., 0, 1], theta_B23[..., 1, 0], theta_B23[..., 1, 1]
    det = a * d - b * c
    inv_A = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]
    return torch.cat([inv_A, -inv_A @ theta_B23[..., 2:]], dim=-1)


def affine_crop(x_BCHW: torch.Tensor, theta_B23: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Differentiable bilinear crop: sample x at the affine grid of theta -> [B, C, h, w].

    align_corners=False, zero padding (see the module docstring). Gradients reach both x and theta.
    A theta batch of 1 is applied to every image and an image batch of 1 is cropped by every theta.
    bf16/fp16 inputs are sampled in fp32 on purpose (autocast is switched off inside) and the result is
    returned in the input's dtype.
    """
    if x_BCHW.dim() != 4 or theta_B23.dim() != 3 or theta_B23.shape[1:] != (2, 3):
        raise ValueError(
            f"expected x [B, C, H, W] and theta [B, 2, 3]; got {list(x_BCHW.shape)} and "
            f"{list(theta_B23.shape)}"
        )
    B = max(x_BCHW.shape[0], theta_B23.shape[0])
    if {x_BCHW.shape[0], theta_B23.shape[0]} - {1, B}:
        raise ValueError(f"batch sizes of x ({x_BCHW.shape[0]}) and theta ({theta_B23.shape[0]}) differ")
    x = x_BCHW.expand(B, -1, -1, -1)
    return affine_crops(x, theta_B23.expand(B, 2, 3)[:, None], out_hw)[:, 0]


def affine_crops(x_BCHW: torch.Tensor, theta_BN23: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """N crops of every image in one sampling pass: [B, C, H, W] x [B, N, 2, 3] -> [B, N, C, h, w].

    Bilinear, align_corners=False, zero padding; bf16/fp16 sampled in fp32 (autocast off inside) and
    returned in the input's dtype. The N grids are stacked into one tall grid per image, so the image is
    not repeated N times. `affine_crop` is the N = 1 case.
    """
    B, N = theta_BN23.shape[:2]
    if x_BCHW.dim() != 4 or theta_BN23.shape != (x_BCHW.shape[0], N, 2, 3):
        raise ValueError(
            f"expected x [B, C, H, W] and theta [B, N, 2, 3]; got {list(x_BCHW.shape)} and "
            f"{list(theta_BN23.shape)}"
        )
    h, w = out_hw
    C = x_BCHW.shape[1]
    work = _working_dtype(x_BCHW.dtype)
    with torch.autocast(x_BCHW.device.type, enabled=False):
        grid_Bn_hw2 = F.affine_grid(
            theta_BN23.reshape(B * N, 2, 3).to(work), [B * N, C, h, w], align_corners=False
        )
        grid_B_Nh_w2 = grid_Bn_hw2.reshape(B, N * h, w, 2)
        out = F.grid_sample(
            x_BCHW.to(work), grid_B_Nh_w2, mode="bilinear", padding_mode="zeros", align_corners=False
        )
    return out.reshape(B, C, N, h, w).transpose(1, 2).to(x_BCHW.dtype)


def _uniform(
    generator: torch.Generator | None, shape: tuple[int, ...], low: float, high: float, like: torch.Tensor
):
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return low + (high - low) * u


def _random_boxes(
    generator: torch.Generator | None,
    shape: tuple[int, ...],
    area: tuple[float, float],
    ratio: tuple[float, float],
    like: torch.Tensor,
) -> torch.Tensor:
    """Random axis-aligned boxes inside [-1, 1]^2, as RandomResizedCrop draws them -> theta [*shape, 2, 3].

    Area fraction uniform in `area`, aspect (width / height) log-uniform in `ratio`, each side at most
    the whole; the centre uniform where the box fits.
    """
    a = _uniform(generator, shape, *area, like)
    log_r = _uniform(generator, shape, math.log(ratio[0]), math.log(ratio[1]), like)
    sw = (a * log_r.exp()).sqrt().clamp(max=1.0)
    sh = (a / log_r.exp()).sqrt().clamp(max=1.0)
    cx = (2 * _uniform(generator, shape, 0.0, 1.0, like) - 1) * (1 - sw)
    cy = (2 * _uniform(generator, shape, 0.0, 1.0, like) - 1) * (1 - sh)
    zero = torch.zeros_like(sw)
    return torch.stack([torch.stack([sw, zero, cx], -1), torch.stack([zero, sh, cy], -1)], -2)


def sample_grid_patches(
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    *,
    grid: int = 7,
    patch_scale: float = 0.25,
    frame_area: tuple[float, float] = (0.8, 0.95),
    frame_ratio: tuple[float, float] = (0.7, 1.3),
    patch_area: tuple[float, float] = (0.7, 0.9),
    patch_ratio: tuple[float, float] = (0.75, 4 / 3),
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """CRW's patch grid, one draw per frame -> theta [*shape, grid*grid, 2, 3] (patch -> frame coordinates).

    Each frame is first cropped at random (RandomResizedCrop: `frame_area`, `frame_ratio`), so the grid
    of two frames does not line up; the crop is cut into a grid x grid of overlapping square patches of
    side `patch_scale` of the crop (CRW: 64 px windows at stride 32 of a 256 px frame: 7 x 7, 1/4), and
    every patch is cropped again at random (`patch_area`, `patch_ratio`). Row-major patch order.
    """
    if grid < 1 or not 0 < patch_scale <= 1:
        raise ValueError(f"need grid >= 1 and patch_scale in (0, 1], got {grid} and {patch_scale}")
    like = torch.empty((), device=device, dtype=dtype)
    if generator is not None and generator.device.type != like.device.type:
        raise ValueError(f"the generator lives on {generator.device}, the patches on {like.device}")
    N = grid * grid
    frame = _random_boxes(generator, shape, frame_area, frame_ratio, like)[..., None, :, :]
    steps = torch.linspace(-1 + patch_scale, 1 - patch_scale, grid, device=like.device, dtype=dtype)
    if grid == 1:
        steps = steps.zero_()
    cy, cx = torch.meshgrid(steps, steps, indexing="ij")
    zero = torch.zeros_like(cx.flatten())
    scale = torch.full_like(zero, patch_scale)
    cell_N23 = torch.stack(
        [torch.stack([scale, zero, cx.flatten()], -1), torch.stack([zero, scale, cy.flatten()], -1)], -2
    )
    jitter = _random_boxes(generator, (*shape, N), patch_area, patch_ratio, like)
    return compose(frame, compose(cell_N23, jitter))


def _cell_sums(motion_BHW: torch.Tensor, grid: int) -> torch.Tensor:
    """Sum motion over a grid x grid partition of the frame -> [B, grid, grid]. Pixel i of an axis of S
    belongs to cell floor(i * grid / S), so every pixel counts even when S is not a multiple of grid."""
    _, H, W = motion_BHW.shape
    dev, dtype = motion_BHW.device, motion_BHW.dtype
    cells = torch.arange(grid, device=dev)
    rows_GH = ((torch.arange(H, device=dev) * grid) // H == cells[:, None]).to(dtype)
    cols_GW = ((torch.arange(W, device=dev) * grid) // W == cells[:, None]).to(dtype)
    with torch.autocast(dev.type, enabled=False):  # the ranking of windows needs fp32 sums
        return rows_GH @ motion_BHW @ cols_GW.T


def sample_patch_transforms(
    motion_BHW: torch.Tensor,
    generator: torch.Generator | None,
    *,
    scale: float = 1 / 3,
    max_rotation_deg: float = 45.0,
    grid: int = 9,
    cells: int = 3,
    top: int = 10,
    jitter: float = 1 / 12,
) -> torch.Tensor:
    """Random patch transforms as TimeCycle samples them, one per clip -> theta_B23 (motion's device, fp32+).

    The frame is cut into a grid x grid of cells; the candidate windows are the (grid - cells + 1)^2
    blocks of cells x cells cells (7 x 7 for 9 and 3). Motion (e.g. |frame_t - frame_t+2| summed over
    colour) is summed over each window; one of the `top` windows with the most motion is chosen
    uniformly; its centre is jittered and clamped exactly as upstream does: with u the position along
    the range of window centres (0 = first window, 1 = last), u = window / (windows - 1) + U(-jitter,
    jitter), clamped to [0, 1]; for 9/3 the centre is (2u - 1) * 2/3, so +-1/12 moves it +-1/9 in
    normalised units (+-1/18 of the frame). Rotation is uniform in +-max_rotation_deg, scale fixed.

    Vectorised, no host sync; `generator` must live on motion's device (None: the global generator).
    Upstream also mirrors the chosen window when it flips the clip after measuring motion on the flipped
    frames, which moves the patch off the moving region half the time; that is not reproduced.
    """
    B, _, _ = motion_BHW.shape
    windows = grid - cells + 1
    if cells < 1 or windows < 1:
        raise ValueError(f"need 1 <= cells <= grid, got cells={cells}, grid={grid}")
    if not 1 <= top <= windows * windows:
        raise ValueError(f"top must be in [1, {windows * windows}] (the number of windows), got {top}")
    dev = motion_BHW.device
    if generator is not None and generator.device.type != dev.type:
        raise ValueError(f"the generator lives on {generator.device}, the motion on {dev}: create it there")
    work = _working_dtype(motion_BHW.dtype)
    cell_BGG = _cell_sums(motion_BHW.to(work), grid)
    window_BWW = F.avg_pool2d(cell_BGG[:, None], cells, stride=1)[:, 0] * (cells * cells)
    top_BT = window_BWW.flatten(1).topk(top, dim=1).indices
    pick_B1 = torch.randint(0, top, (B, 1), generator=generator, device=dev)
    window_B = top_BT.gather(1, pick_B1)[:, 0]
    u_B3 = torch.rand(B, 3, generator=generator, device=dev, dtype=work)
    span = max(windows - 1, 1)
    pos_B2 = torch.stack([window_B % windows, window_B // windows], dim=1).to(work) / span  # (x, y)
    pos_B2 = (pos_B2 + (2 * u_B3[:, :2] - 1) * jitter).clamp(0, 1)
    first_centre, centre_range = cells / grid - 1, 2 * (windows - 1) / grid
    centre_B2 = first_centre + pos_B2 * centre_range
    angle_B = (2 * u_B3[:, 2] - 1) * math.radians(max_rotation_deg)
    return theta_from_params(centre_B2[:, 0], centre_B2[:, 1], angle_B, scale)


def _grid_points(points: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    axis = torch.linspace(-1, 1, points, dtype=dtype, device=device)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten(), torch.ones_like(xs).flatten()])  # [3, P]


def transformed_grid_loss(
    theta_pred_B23: torch.Tensor, theta_true_B23: torch.Tensor, points: int = 20
) -> torch.Tensor:
    """Per-sample transformed-grid loss -> [B] (fp32 or better): warp a points x points grid spanning
    [-1, 1]^2 (corners included) by both transforms; mean over points of the squared distance (x and y
    summed), as upstream's TransformedGridLoss before its batch mean."""
    work = torch.promote_types(_working_dtype(theta_pred_B23.dtype), theta_true_B23.dtype)
    with torch.autocast(theta_pred_B23.device.type, enabled=False):
        P_3P = _grid_points(points, work, theta_pred_B23.device)
        diff_B2P = (theta_pred_B23.to(work) - theta_true_B23.to(work)) @ P_3P  # both warps are linear
        return diff_B2P.square().sum(1).mean(1)


def inlier_score(
    affinity_B_HW_hw: torch.Tensor,
    theta_B23: torch.Tensor,
    frame_hw: tuple[int, int],
    patch_hw: tuple[int, int],
    *,
    eps: float = 1e-5,
) -> torch.Tensor:
    """TimeCycle's weak inlier count: how much affinity mass agrees with the transform -> [B] (fp32+).

    affinity_B_HW_hw: [B, H*W, h, w] (or [B, H*W, h*w]): axis 1 indexes frame positions row-major
    (y * W + x), the trailing axes patch positions; each patch position's column is a softmax over the
    H*W frame positions (upstream's affinity fed to the tracker). theta maps patch to frame coordinates.

    Reference semantics: an identity one-hot tensor of H*W channels over the H x W frame (channel k is 1 at
    position k), warped by theta to h x w with affine_crop, is a mask [B, H*W, h, w] holding, for every
    patch position, the bilinear weights of the frame positions it samples. It is normalised by its total
    mass plus eps per element (upstream's normalize_inlier_count with epsilon 1e-5; no dilation, as
    upstream's training) and dotted with the affinity: score = sum(mask * affinity) / (sum(mask) +
    eps * H*W*h*w). In [0, ~1]: 1 when each patch position puts all its affinity where theta sends it.
    Computed without building the [B, H*W, h, w] mask: each patch position samples its own affinity map.
    """
    (H, W), (h, w) = frame_hw, patch_hw
    B = theta_B23.shape[0]
    if affinity_B_HW_hw.shape not in ((B, H * W, h, w), (B, H * W, h * w)):
        raise ValueError(
            f"affinity {list(affinity_B_HW_hw.shape)} must be [B, H*W, h, w] = [{B}, {H * W}, "
            f"{h}, {w}] for frame {frame_hw} and patch {patch_hw}"
        )
    work = torch.promote_types(_working_dtype(affinity_B_HW_hw.dtype), theta_B23.dtype)
    with torch.autocast(affinity_B_HW_hw.device.type, enabled=False):
        grid_Bhw2 = F.affine_grid(theta_B23.to(work), [B, 1, h, w], align_corners=False)
        # One frame-sized map per patch position, read at that position's sampling point.
        maps_b1HW = (
            affinity_B_HW_hw.to(work).reshape(B, H * W, h * w).transpose(1, 2).reshape(B * h * w, 1, H, W)
        )
        agree_B = F.grid_sample(maps_b1HW, grid_Bhw2.reshape(B * h * w, 1, 1, 2), align_corners=False)
        agree_B = agree_B.reshape(B, h * w).sum(1)
        # The warped identity's total mass: the in-frame share of each sample's bilinear weights.
        ones_B1HW = torch.ones(B, 1, H, W, dtype=work, device=affinity_B_HW_hw.device)
        mass_B = F.grid_sample(ones_B1HW, grid_Bhw2, align_corners=False).sum((1, 2, 3))
    return agree_B / (mass_B + eps * H * W * h * w)
