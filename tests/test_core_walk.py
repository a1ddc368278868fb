"""core.walk (CRW's palindrome random walk) against a naive loop, known answers, gradients; core.affine's
CRW patch grid and batched crops."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.affine import affine_crop, affine_crops, sample_grid_patches
from core.walk import palindrome_walk_loss


def _nodes(B: int, T: int, N: int, C: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(B, T, N, C, generator=g, dtype=dtype), dim=-1)


def naive_walk_loss(nodes_BTNC: torch.Tensor, temperature: float) -> torch.Tensor:
    """Each palindrome's round-trip matrix multiplied out step by step, one clip at a time."""
    B, T, N, _ = nodes_BTNC.shape
    total = 0.0
    for k in range(1, T):
        for b in range(B):
            x = nodes_BTNC[b]
            trip = torch.eye(N, dtype=x.dtype)
            for t in range(k):
                trip = trip @ torch.softmax(x[t] @ x[t + 1].T / temperature, dim=1)
            for t in range(k, 0, -1):
                trip = trip @ torch.softmax(x[t] @ x[t - 1].T / temperature, dim=1)
            total = total - torch.log(torch.diagonal(trip) + 1e-20).mean() / B
    return total / (T - 1)


def test_walk_loss_matches_naive_loop() -> None:
    nodes = _nodes(2, 4, 5, 8, seed=0)
    loss, _ = palindrome_walk_loss(nodes, temperature=0.3)
    torch.testing.assert_close(loss, naive_walk_loss(nodes, 0.3).to(loss.dtype), rtol=1e-5, atol=1e-6)


def test_identical_distinct_frames_walk_home() -> None:
    # Every frame the same set of well-separated nodes: each walk returns home almost surely.
    frame = F.normalize(torch.eye(6, 16, dtype=torch.float64), dim=-1)
    nodes = frame.expand(3, 5, 6, 16).clone()
    loss, acc = palindrome_walk_loss(nodes, temperature=0.05)
    assert loss.item() < 1e-6 and acc.item() == 1.0
    # Shuffled nodes in the next frames: the walk still returns (a palindrome retraces its steps)...
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    shuffled = torch.stack([frame, frame[perm], frame, frame[perm]])[None]
    assert palindrome_walk_loss(shuffled, 0.05)[1].item() == 1.0
    # ...while identical nodes (nothing to tell them apart) give the uniform walk: loss log N.
    same = torch.ones(1, 3, 6, 4, dtype=torch.float64) / 2
    torch.testing.assert_close(
        palindrome_walk_loss(same, 0.05)[0], torch.tensor(6.0, dtype=torch.float64).log()
    )


def test_walk_gradcheck_and_low_precision() -> None:
    nodes = _nodes(1, 3, 4, 6, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: palindrome_walk_loss(x, 0.5)[0], (nodes,))
    loss32, _ = palindrome_walk_loss(nodes.detach().float(), 0.5)
    loss16, _ = palindrome_walk_loss(nodes.detach().bfloat16(), 0.5)
    assert loss16.dtype == torch.float32  # computed in fp32 whatever comes in
    torch.testing.assert_close(loss16, loss32, rtol=2e-2, atol=2e-2)


def test_edge_dropout_changes_the_walk_but_stays_finite() -> None:
    nodes = _nodes(2, 4, 9, 8, seed=2)
    torch.manual_seed(0)
    dropped, _ = palindrome_walk_loss(nodes, 0.1, edge_dropout=0.5)
    assert torch.isfinite(dropped) and dropped.item() != palindrome_walk_loss(nodes, 0.1)[0].item()
    torch.manual_seed(0)
    assert torch.isfinite(palindrome_walk_loss(nodes, 0.1, edge_dropout=0.99)[0])  # rows may lose every edge


def test_walk_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="T >= 2"):
        palindrome_walk_loss(torch.zeros(1, 1, 3, 2), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        palindrome_walk_loss(torch.zeros(1, 2, 3, 2), 0.0)
    with pytest.raises(ValueError, match="edge_dropout"):
        palindrome_walk_loss(torch.zeros(1, 2, 3, 2), 0.1, edge_dropout=1.0)


def test_affine_crops_equals_one_crop_at_a_time() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 20, 24, generator=g, dtype=torch.float64)
    theta = sample_grid_patches((3,), g, grid=3, patch_scale=0.4, dtype=torch.float64)
    crops = affine_crops(x, theta, (5, 6))
    assert crops.shape == (3, 9, 2, 5, 6)
    for n in range(9):
        torch.testing.assert_close(crops[:, n], affine_crop(x, theta[:, n], (5, 6)))
    with pytest.raises(ValueError, match="expected x"):
        affine_crops(x, theta[:2], (5, 6))


def test_grid_patches_without_jitter_tile_the_frame() -> None:
    # No random crop of frame or patch: a 2 x 2 grid of half-side patches is the four quadrants.
    theta = sample_grid_patches(
        (1,),
        None,
        grid=2,
        patch_scale=0.5,
        frame_area=(1, 1),
        frame_ratio=(1, 1),
        patch_area=(1, 1),
        patch_ratio=(1, 1),
        dtype=torch.float64,
    )[0]
    x = torch.arange(16, dtype=torch.float64).view(1, 1, 4, 4)
    crops = affine_crops(x, theta[None], (2, 2))[0, :, 0]
    torch.testing.assert_close(crops[0], x[0, 0, :2, :2])
    torch.testing.assert_close(crops[3], x[0, 0, 2:, 2:])


def test_grid_patches_stay_inside_the_frame_and_differ_per_frame() -> None:
    g = torch.Generator().manual_seed(4)
    theta = sample_grid_patches((2, 5), g, grid=7, patch_scale=0.25)
    assert theta.shape == (2, 5, 49, 2, 3)
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, 1.0, 1.0]]).T  # [3, 2]: patch corners
    reach = (theta @ corners).abs().amax()
    assert reach <= 1.0 + 1e-6  # every patch lies in the frame
    assert not torch.allclose(theta[0, 0], theta[0, 1])  # each frame has its own random crop
