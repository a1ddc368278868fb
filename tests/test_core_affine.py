"""core.affine: known crops, a naive bilinear loop, compose/invert, gradcheck, bf16/autocast, patch sampling,
the transformed-grid loss and the weak inlier score."""

from __future__ import annotations

import math

import pytest
import torch

from core.affine import (
    affine_crop,
    compose,
    inlier_score,
    invert,
    sample_patch_transforms,
    theta_from_params,
    to_3x3,
    transformed_grid_loss,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_thetas(B: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = _gen(seed)
    tx, ty = (torch.rand(B, generator=g, dtype=dtype) - 0.5 for _ in range(2))
    angle = (torch.rand(B, generator=g, dtype=dtype) - 0.5) * 1.5
    scale = 0.3 + 0.4 * torch.rand(B, generator=g, dtype=dtype)
    return theta_from_params(tx, ty, angle, scale)


def naive_crop(x_CHW: torch.Tensor, theta_23: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear sampling, align_corners=False, zero padding, one output pixel at a time."""
    C, H, W = x_CHW.shape
    t = theta_23.tolist()
    out = torch.zeros(C, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            xo, yo = (2 * j + 1) / w - 1, (2 * i + 1) / h - 1
            xi = t[0][0] * xo + t[0][1] * yo + t[0][2]
            yi = t[1][0] * xo + t[1][1] * yo + t[1][2]
            px, py = ((xi + 1) * W - 1) / 2, ((yi + 1) * H - 1) / 2
            x0, y0 = math.floor(px), math.floor(py)
            for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
                for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                    if 0 <= yy < H and 0 <= xx < W:
                        out[:, i, j] += wy * wx * x_CHW[:, yy, xx].double()
    return out


def test_theta_from_params_matches_formula() -> None:
    tx, ty, angle = torch.tensor([0.1, -0.4]), torch.tensor([0.3, 0.2]), torch.tensor([0.5, -0.7])
    theta = theta_from_params(tx, ty, angle, 1 / 3)
    for b in range(2):
        c, s = math.cos(angle[b]) / 3, math.sin(angle[b]) / 3
        ref = torch.tensor([[c, -s, tx[b].item()], [s, c, ty[b].item()]])
        torch.testing.assert_close(theta[b], ref)
    assert theta_from_params(0, 0, 0, 1).shape == (1, 2, 3)
    assert theta_from_params(0.0, 0.0, torch.zeros(3, dtype=torch.float64), 0.5).dtype == torch.float64


def _theta64(tx: float, ty: float, angle: float, scale: float) -> torch.Tensor:
    return theta_from_params(torch.tensor(tx, dtype=torch.float64), ty, angle, scale)


def test_central_third_crop_is_exact_on_a_known_pattern() -> None:
    # float64 so that the only error left is rounding at 1e-13 (in fp32, 1/3 itself is off by 1e-8,
    # which moves samples by ~1e-5 pixel and leaks a little zero padding in at the border).
    # Pattern: value = 100 * row + col + 1, on 30x30 and on a 3-channel 240x240 image.
    small = (torch.arange(30)[:, None] * 100 + torch.arange(30)[None] + 1).double()[None, None]
    crop = affine_crop(small, _theta64(0, 0, 0, 1 / 3), (10, 10))
    torch.testing.assert_close(crop, small[..., 10:20, 10:20])
    image = torch.rand(2, 3, 240, 240, generator=_gen(0), dtype=torch.float64) + 0.5
    crop = affine_crop(image, _theta64(0, 0, 0, 1 / 3), (80, 80))
    torch.testing.assert_close(crop, image[..., 80:160, 80:160])
    # Top-right window of a 3x3 layout: centre (2/3, -2/3) in normalised coordinates.
    corner = affine_crop(small, _theta64(2 / 3, -2 / 3, 0, 1 / 3), (10, 10))
    torch.testing.assert_close(corner, small[..., 0:10, 20:30])
    # The identity returns the whole image; in fp32 too, the central third is right to fp32 rounding.
    torch.testing.assert_close(affine_crop(small, _theta64(0, 0, 0, 1), (30, 30)), small)
    crop32 = affine_crop(small.float(), theta_from_params(0, 0, 0, 1 / 3), (10, 10))
    torch.testing.assert_close(crop32, small[..., 10:20, 10:20].float())


def test_affine_crop_matches_naive_bilinear_loop() -> None:
    x = torch.randn(3, 2, 9, 11, generator=_gen(1), dtype=torch.float64) + 0.2
    theta = _random_thetas(3, seed=2)
    theta[:, :, :2] *= 2  # reach outside the image too: exercises zero padding
    crop = affine_crop(x, theta, (5, 6))
    for b in range(3):
        torch.testing.assert_close(crop[b], naive_crop(x[b], theta[b], 5, 6))


def test_affine_crop_batch_broadcast_and_channels_last() -> None:
    x = torch.randn(1, 4, 12, 12, generator=_gen(3)) + 0.1
    theta = _random_thetas(3, seed=4, dtype=torch.float32)
    many = affine_crop(x, theta, (4, 4))
    assert many.shape == (3, 4, 4, 4)
    torch.testing.assert_close(many[2:], affine_crop(x, theta[2:], (4, 4)))
    xs = x.expand(3, -1, -1, -1).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(affine_crop(xs, theta, (4, 4)), many)
    with pytest.raises(ValueError, match="batch sizes"):
        affine_crop(torch.zeros(2, 1, 4, 4), theta, (2, 2))


def test_compose_invert_round_trip() -> None:
    a, b, c = _random_thetas(4, seed=5), _random_thetas(4, seed=6), _random_thetas(4, seed=7)
    identity = theta_from_params(0.0, 0.0, torch.zeros(4, dtype=torch.float64), 1.0)
    torch.testing.assert_close(compose(a, invert(a)), identity)
    torch.testing.assert_close(compose(invert(a), a), identity)
    torch.testing.assert_close(invert(invert(a)), a)
    torch.testing.assert_close(to_3x3(compose(a, b)), to_3x3(a) @ to_3x3(b))
    torch.testing.assert_close(compose(compose(a, b), c), compose(a, compose(b, c)))
    torch.testing.assert_close(invert(compose(a, b)), compose(invert(b), invert(a)))
    # Order as point maps: compose(a, b)(p) = a(b(p)).
    p = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    b_p = torch.cat([b @ p, torch.ones(4, 1, dtype=torch.float64)], dim=1)
    torch.testing.assert_close(compose(a, b) @ p, torch.einsum("bij,bj->bi", a, b_p))


def test_crop_of_crop_equals_crop_by_composition() -> None:
    # Bilinear sampling reproduces an affine image exactly (inside the frame), so the order is checked
    # without interpolation error: crop by a, then crop that by b == crop by compose(a, b).
    H = W = 32
    ys, xs = torch.meshgrid(
        torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
    )
    image = torch.stack([0.3 * xs - 0.7 * ys + 2, 0.1 * xs + 0.5 * ys - 1])[None]
    a = theta_from_params(0.1, -0.05, 0.4, 0.6).double()
    b = theta_from_params(-0.2, 0.1, -0.3, 0.5).double()
    twice = affine_crop(affine_crop(image, a, (24, 24)), b, (8, 8))
    once = affine_crop(image, compose(a, b), (8, 8))
    torch.testing.assert_close(twice, once)


def test_gradcheck_float64() -> None:
    x = (torch.randn(2, 2, 6, 7, generator=_gen(8), dtype=torch.float64) + 0.3).requires_grad_()
    theta = _random_thetas(2, seed=9).requires_grad_()
    theta2 = _random_thetas(2, seed=10).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, t: affine_crop(a, t, (4, 5)), (x, theta))
    assert torch.autograd.gradcheck(lambda a, b: transformed_grid_loss(a, b, points=5), (theta, theta2))
    assert torch.autograd.gradcheck(compose, (theta, theta2))
    assert torch.autograd.gradcheck(invert, (theta,))
    params = [torch.rand(2, generator=_gen(11 + i), dtype=torch.float64).requires_grad_() for i in range(4)]
    assert torch.autograd.gradcheck(theta_from_params, tuple(params))
    affinity = torch.softmax(
        torch.randn(2, 30, 3, 3, generator=_gen(15), dtype=torch.float64), 1
    ).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, t: inlier_score(a, t, (5, 6), (3, 3)), (affinity, theta))


def test_transformed_grid_loss_matches_loop() -> None:
    a, b = _random_thetas(3, seed=16), _random_thetas(3, seed=17)
    loss = transformed_grid_loss(a, b, points=20)
    coords = [-1 + 2 * i / 19 for i in range(20)]
    for n in range(3):
        total = 0.0
        for y in coords:
            for x in coords:
                pa = [a[n, r, 0] * x + a[n, r, 1] * y + a[n, r, 2] for r in range(2)]
                pb = [b[n, r, 0] * x + b[n, r, 1] * y + b[n, r, 2] for r in range(2)]
                total += float((pa[0] - pb[0]) ** 2 + (pa[1] - pb[1]) ** 2)
        torch.testing.assert_close(loss[n], torch.tensor(total / 400, dtype=torch.float64))
    assert (transformed_grid_loss(a, a) == 0).all()


def _literal_inlier(
    affinity: torch.Tensor, theta: torch.Tensor, frame_hw, patch_hw, eps=1e-5
) -> torch.Tensor:
    """Upstream's recipe, as written: warp an identity one-hot tensor, normalise, dot with the affinity."""
    (H, W), (h, w) = frame_hw, patch_hw
    identity = torch.eye(H * W, dtype=affinity.dtype).view(1, H * W, H, W).expand(theta.shape[0], -1, -1, -1)
    mask = affine_crop(identity, theta, (h, w))
    mask = mask / (mask + eps).sum((1, 2, 3), keepdim=True)
    return (mask * affinity).sum((1, 2, 3))


def test_inlier_score_matches_literal_recipe() -> None:
    frame, patch = (9, 8), (3, 4)
    affinity = torch.softmax(torch.randn(4, 72, 3, 4, generator=_gen(18), dtype=torch.float64) * 3, dim=1)
    theta = _random_thetas(4, seed=19)
    theta[0, :, 2] += 0.9  # partly outside the frame
    score = inlier_score(affinity, theta, frame, patch)
    torch.testing.assert_close(score, _literal_inlier(affinity, theta, frame, patch))
    torch.testing.assert_close(inlier_score(affinity.flatten(2), theta, frame, patch), score)
    with pytest.raises(ValueError, match="affinity"):
        inlier_score(affinity, theta, (9, 9), patch)


def test_inlier_score_is_high_for_agreeing_affinity() -> None:
    # Affinity that puts each patch position's mass on the frame cell the transform samples: score ~ 1;
    # the same affinity scored against another transform: much lower.
    theta = theta_from_params(0, 0, 0, 1 / 3).double()
    affinity = torch.zeros(1, 900, 10, 10, dtype=torch.float64)
    for i in range(10):
        for j in range(10):
            affinity[0, (10 + i) * 30 + (10 + j), i, j] = 1.0
    good = inlier_score(affinity, theta, (30, 30), (10, 10))
    bad = inlier_score(affinity, theta_from_params(0.5, 0.5, 0.3, 1 / 3).double(), (30, 30), (10, 10))
    torch.testing.assert_close(good, torch.tensor([100 / (100 + 1e-5 * 90000)], dtype=torch.float64))
    assert bad < 0.1 * good


# bf16 inputs are sampled in fp32, so the only error is the rounding of the input and of the output:
# documented bound 2^-7 relative to the input's magnitude (measured in this test: below 2^-8).
def test_bf16_and_autocast() -> None:
    x = torch.randn(2, 8, 30, 30, generator=_gen(20)) + 0.2
    theta = _random_thetas(2, seed=21, dtype=torch.float32)
    ref = affine_crop(x, theta, (10, 10))
    out16 = affine_crop(x.bfloat16(), theta, (10, 10))
    assert out16.dtype == torch.bfloat16
    assert (out16.float() - ref).abs().max() <= 2**-7 * x.abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = affine_crop(x, theta, (10, 10))
        auto16 = affine_crop(x.bfloat16(), theta.bfloat16(), (10, 10))
        loss = transformed_grid_loss(theta.bfloat16(), theta)
        score = inlier_score(torch.rand(2, 900, 10, 10).bfloat16(), theta, (30, 30), (10, 10))
    assert auto.dtype == torch.float32 and torch.equal(auto, ref)
    assert auto16.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and score.dtype == torch.float32


def _window_centres(windows: int = 7, grid: int = 9, cells: int = 3) -> list[float]:
    return [2 * (i + cells / 2) / grid - 1 for i in range(windows)]


def _naive_top_windows(
    motion_HW: torch.Tensor, top: int, grid: int = 9, cells: int = 3
) -> list[tuple[int, int]]:
    H, W = motion_HW.shape
    scores = []
    for wy in range(grid - cells + 1):
        for wx in range(grid - cells + 1):
            total = 0.0
            for y in range(H):
                for x in range(W):
                    if wy <= y * grid // H < wy + cells and wx <= x * grid // W < wx + cells:
                        total += float(motion_HW[y, x])
            scores.append((total, wy, wx))
    scores.sort(key=lambda s: -s[0])
    return [(wy, wx) for _, wy, wx in scores[:top]]


def test_sample_patch_transforms_geometry_and_windows() -> None:
    g = _gen(22)
    motion = torch.rand(3, 45, 45, generator=g) * 0.01
    motion[0, 0:15, 30:45] += 1.0  # top-right window
    motion[1, 20:35, 5:20] += 1.0
    motion[2] = torch.rand(45, 45, generator=g)
    motion = motion.repeat(40, 1, 1)  # 120 clips
    theta = sample_patch_transforms(motion, _gen(23))
    scale = torch.linalg.vector_norm(theta[:, :, 0], dim=1)
    torch.testing.assert_close(scale, torch.full((120,), 1 / 3))
    torch.testing.assert_close(theta[:, 0, 0], theta[:, 1, 1])
    torch.testing.assert_close(theta[:, 0, 1], -theta[:, 1, 0])
    angle = torch.atan2(theta[:, 1, 0], theta[:, 0, 0])
    assert (angle.abs() <= math.pi / 4 + 1e-6).all()
    assert angle.max() > 0.5 and angle.min() < -0.5  # spread over the range
    centres = _window_centres()
    jitter = (1 / 12) * (4 / 3)  # +-1/12 of the range of window centres
    tops = [_naive_top_windows(motion[i], 10) for i in range(3)]
    chosen = [set(), set(), set()]
    for n in range(120):
        cx, cy = theta[n, 0, 2].item(), theta[n, 1, 2].item()
        near = [
            (wy, wx)
            for wy, wx in tops[n % 3]
            if abs(cx - centres[wx]) <= jitter + 1e-6 and abs(cy - centres[wy]) <= jitter + 1e-6
        ]
        assert near, f"clip {n}: centre ({cx:.3f}, {cy:.3f}) is not near any of the top-10 windows"
        assert -2 / 3 - 1e-6 <= cx <= 2 / 3 + 1e-6 and -2 / 3 - 1e-6 <= cy <= 2 / 3 + 1e-6
        chosen[n % 3].update(near)
    assert len(chosen[2]) >= 5  # the choice is spread over the top windows, not always the best one


def test_sample_patch_transforms_exact_window_without_jitter_and_determinism() -> None:
    motion = torch.rand(4, 36, 36, generator=_gen(24)) * 0.01
    motion[:, 8:20, 4:16] += 1.0  # rows 2..4 of 9 cells, cols 1..3: window (wy, wx) = (2, 1)
    theta = sample_patch_transforms(motion, _gen(25), top=1, jitter=0.0)
    centres = _window_centres()
    torch.testing.assert_close(theta[:, 0, 2], torch.full((4,), centres[1]))
    torch.testing.assert_close(theta[:, 1, 2], torch.full((4,), centres[2]))
    again = sample_patch_transforms(motion, _gen(25), top=1, jitter=0.0)
    assert torch.equal(theta, again)
    a, b = sample_patch_transforms(motion, _gen(26)), sample_patch_transforms(motion, _gen(26))
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_patch_transforms(motion, _gen(27)))
    with pytest.raises(ValueError, match="top"):
        sample_patch_transforms(motion, _gen(0), top=50)


@pytest.mark.gpu  # skipped, and listed as skipped, without a GPU (tests/conftest.py)
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_cuda_autocast_and_generator(half: torch.dtype) -> None:
    x = torch.randn(4, 16, 30, 30, generator=_gen(28)).cuda() + 0.2
    theta = _random_thetas(4, seed=29, dtype=torch.float32).cuda()
    ref = affine_crop(x, theta, (10, 10))
    with torch.autocast("cuda", dtype=half):
        auto = affine_crop(x, theta, (10, 10))
        low = affine_crop(x.to(half), theta.to(half), (10, 10))
        score = inlier_score(
            torch.softmax(torch.randn(4, 900, 10, 10, device="cuda"), 1), theta, (30, 30), (10, 10)
        )
    assert auto.dtype == torch.float32 and low.dtype == half and score.dtype == torch.float32
    torch.testing.assert_close(auto, ref)
    # The fp16 theta itself is rounded (2^-11 relative): bound the crop error by 2^-6 of the input's range.
    assert (low.float() - ref).abs().max() <= 2**-6 * x.abs().max()
    motion = torch.rand(8, 60, 60, device="cuda")
    a = sample_patch_transforms(motion, torch.Generator(device="cuda").manual_seed(3))
    b = sample_patch_transforms(motion, torch.Generator(device="cuda").manual_seed(3))
    assert a.device.type == "cuda" and torch.equal(a, b)
    with pytest.raises(ValueError, match="generator"):
        sample_patch_transforms(motion, _gen(0))
