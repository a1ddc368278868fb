"""core.correlation against naive Python-loop references, gradcheck, chunked == direct, bf16 tolerance."""

from __future__ import annotations

import math

import pytest
import torch

from core.correlation import (
    chunked_soft_nearest_neighbour,
    chunked_topk_affinity,
    local_topk_affinity,
    local_window_mask,
    pairwise_similarity,
    propagate,
    soft_nearest_neighbour,
    softmax_affinity,
    topk_affinity,
    window_mask_fn,
)

KINDS = ("dot", "cosine", "neg_sq_l2")


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) + 0.1  # offset: never centred on zero


def naive_similarity(a_BNC: torch.Tensor, b_BMC: torch.Tensor, kind: str) -> torch.Tensor:
    B, N, _ = a_BNC.shape
    M = b_BMC.shape[1]
    out = torch.empty(B, N, M, dtype=torch.float64)
    for b in range(B):
        for n in range(N):
            for m in range(M):
                x, y = a_BNC[b, n].double().tolist(), b_BMC[b, m].double().tolist()
                dot = sum(p * q for p, q in zip(x, y, strict=True))
                if kind == "dot":
                    out[b, n, m] = dot
                elif kind == "cosine":
                    out[b, n, m] = dot / (math.sqrt(sum(p * p for p in x)) * math.sqrt(sum(q * q for q in y)))
                else:
                    out[b, n, m] = -sum((p - q) ** 2 for p, q in zip(x, y, strict=True))
    return out


def naive_softmax_rows(sim_BNM: torch.Tensor, temperature: float) -> torch.Tensor:
    out = torch.empty_like(sim_BNM, dtype=torch.float64)
    for b in range(sim_BNM.shape[0]):
        for n in range(sim_BNM.shape[1]):
            row = [v / temperature for v in sim_BNM[b, n].double().tolist()]
            top = max(row)
            exps = [math.exp(v - top) for v in row]
            out[b, n] = torch.tensor([e / sum(exps) for e in exps], dtype=torch.float64)
    return out


def naive_topk(sim_BNM: torch.Tensor, k: int, temperature: float, mask_BNM: torch.Tensor | None = None):
    B, N, _ = sim_BNM.shape
    weights = torch.zeros(B, N, k, dtype=torch.float64)
    index = torch.zeros(B, N, k, dtype=torch.int64)
    for b in range(B):
        for n in range(N):
            cands = [
                (v, m) for m, v in enumerate(sim_BNM[b, n].tolist()) if mask_BNM is None or mask_BNM[b, n, m]
            ]
            cands.sort(key=lambda vm: -vm[0])
            chosen = cands[:k]
            exps = [math.exp((v - chosen[0][0]) / temperature) for v, _ in chosen]
            for j, ((_, m), e) in enumerate(zip(chosen, exps, strict=True)):
                weights[b, n, j] = e / sum(exps)
                index[b, n, j] = m
    return weights, index


@pytest.mark.parametrize("kind", KINDS)
def test_similarity_matches_loop(kind: str) -> None:
    a, b = _rand(2, 5, 4, seed=1), _rand(2, 6, 4, seed=2)
    torch.testing.assert_close(pairwise_similarity(a, b, kind), naive_similarity(a, b, kind))
    # Unbatched inputs drop B.
    torch.testing.assert_close(pairwise_similarity(a[1], b[1], kind), naive_similarity(a, b, kind)[1])


def test_neg_sq_l2_is_clamped_at_zero_for_identical_vectors() -> None:
    # Large, equal vectors: the expanded |a|^2 + |b|^2 - 2ab rounds to +-ulps; TCC clamps it at 0.
    a = _rand(1, 64, 64, seed=3, dtype=torch.float32) * 1000
    sq = a.square().sum(-1)
    raw = sq[..., :, None] + sq[..., None, :] - 2 * a @ a.transpose(1, 2)
    assert (raw < 0).any()  # the clamp has work to do
    sim = pairwise_similarity(a, a.clone(), "neg_sq_l2")
    assert (sim <= 0).all()
    diag = torch.diagonal(sim, dim1=-2, dim2=-1)
    assert (diag.abs() <= 1e-5 * sq).all()


@pytest.mark.parametrize("dim", [-1, 1])
def test_softmax_affinity_matches_loop_and_rows_sum_to_one(dim: int) -> None:
    sim = _rand(2, 5, 7, seed=4)
    alpha = softmax_affinity(sim, 0.3, dim=dim)
    ref = naive_softmax_rows(sim if dim == -1 else sim.transpose(1, 2), 0.3)
    torch.testing.assert_close(alpha, ref if dim == -1 else ref.transpose(1, 2))
    torch.testing.assert_close(alpha.sum(dim), torch.ones(2, 7 if dim == 1 else 5, dtype=torch.float64))


def test_softmax_affinity_dtypes() -> None:
    sim = _rand(2, 3, 4, seed=5, dtype=torch.float32).bfloat16()
    assert softmax_affinity(sim, 0.1).dtype == torch.bfloat16
    assert softmax_affinity(sim, 0.1, out_dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="temperature"):
        softmax_affinity(sim, 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_soft_nearest_neighbour_matches_loop(kind: str) -> None:
    q, k = _rand(2, 4, 3, seed=6), _rand(2, 5, 3, seed=7)
    nn, alpha = soft_nearest_neighbour(q, k, 0.5, kind)
    ref_alpha = naive_softmax_rows(naive_similarity(q, k, kind), 0.5)
    ref_nn = torch.zeros(2, 4, 3, dtype=torch.float64)
    for b in range(2):
        for n in range(4):
            for m in range(5):
                ref_nn[b, n] += ref_alpha[b, n, m] * k[b, m]
    torch.testing.assert_close(alpha, ref_alpha)
    torch.testing.assert_close(nn, ref_nn)
    values = _rand(2, 5, 2, seed=8)
    nn_v, _ = soft_nearest_neighbour(q, k, 0.5, kind, values_BMD=values)
    torch.testing.assert_close(nn_v, torch.einsum("bnm,bmd->bnd", ref_alpha, values))


@pytest.mark.parametrize("kind", KINDS)
def test_topk_matches_loop(kind: str) -> None:
    q, k = _rand(2, 6, 4, seed=9), _rand(2, 11, 4, seed=10)
    weights, index = topk_affinity(q, k, 4, 0.2, kind)
    ref_w, ref_i = naive_topk(naive_similarity(q, k, kind), 4, 0.2)
    assert torch.equal(index, ref_i)
    torch.testing.assert_close(weights, ref_w)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 6, dtype=torch.float64))


def test_topk_mask_never_picks_masked_keys() -> None:
    q, k = _rand(2, 6, 4, seed=11), _rand(2, 12, 4, seed=12)
    mask = torch.rand(2, 6, 12, generator=torch.Generator().manual_seed(0)) > 0.4
    mask[..., :3] = True  # at least 3 valid keys per row
    weights, index = topk_affinity(q, k, 3, 0.2, "dot", mask_BNM=mask)
    assert torch.gather(mask, 2, index).all()
    ref_w, ref_i = naive_topk(naive_similarity(q, k, "dot"), 3, 0.2, mask)
    assert torch.equal(index, ref_i)
    torch.testing.assert_close(weights, ref_w)


def test_topk_with_too_few_valid_keys_gives_zero_weights_not_nan() -> None:
    q, k = _rand(1, 3, 4, seed=13, dtype=torch.float32), _rand(1, 8, 4, seed=14, dtype=torch.float32)
    q.requires_grad_(True)
    mask = torch.zeros(1, 3, 8, dtype=torch.bool)
    mask[0, 0, :2] = True  # row 0: 2 valid keys for k=4; row 1: one; row 2: none
    mask[0, 1, 5] = True
    weights, index = topk_affinity(q, k, 4, 0.1, "dot", mask_BNM=mask)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights.sum(-1), torch.tensor([[1.0, 1.0, 0.0]]))
    assert set(index[0, 0, :2].tolist()) == {0, 1} and index[0, 1, 0] == 5
    assert (weights[0, 0, 2:] == 0).all() and (weights[0, 1, 1:] == 0).all()
    (weights * torch.arange(4.0)).sum().backward()
    assert torch.isfinite(q.grad).all()


def test_propagate_matches_loop() -> None:
    g = torch.Generator().manual_seed(15)
    weights = torch.rand(2, 5, 3, generator=g, dtype=torch.float64)
    index = torch.randint(0, 7, (2, 5, 3), generator=g)
    values = _rand(2, 7, 4, seed=16)
    ref = torch.zeros(2, 5, 4, dtype=torch.float64)
    for b in range(2):
        for n in range(5):
            for j in range(3):
                ref[b, n] += weights[b, n, j] * values[b, index[b, n, j]]
    torch.testing.assert_close(propagate(weights, index, values), ref)
    torch.testing.assert_close(propagate(weights[1], index[1], values[1]), ref[1])


def test_local_window_mask_matches_loop() -> None:
    h, w, r = 4, 5, 1.5
    ref = torch.zeros(h * w, h * w, dtype=torch.bool)
    for qy in range(h):
        for qx in range(w):
            for ky in range(h):
                for kx in range(w):
                    ref[qy * w + qx, ky * w + kx] = math.hypot(qy - ky, qx - kx) <= r
    assert torch.equal(local_window_mask(h, w, r), ref)
    fn = window_mask_fn(h, w, r, frames=3, unrestricted_frames=(0,))
    full = torch.cat([torch.ones_like(ref), ref, ref], dim=1)
    assert torch.equal(fn(3, 11)[0], full[3:11])


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 13, 40])
@pytest.mark.parametrize("masked", ["none", "tensor", "fn"])
def test_chunked_topk_equals_direct(chunk_size: int, masked: str) -> None:
    h, w, frames = 3, 4, 3  # 12 queries (one frame), 36 keys
    q = _rand(2, h * w, 8, seed=17, dtype=torch.float32)
    k = _rand(2, frames * h * w, 8, seed=18, dtype=torch.float32)
    fn = window_mask_fn(h, w, 1.0, frames=frames, unrestricted_frames=(0,))
    mask = fn(0, h * w).expand(2, -1, -1) if masked != "none" else None
    direct_w, direct_i = topk_affinity(q, k, 5, 0.1, "cosine", mask_BNM=mask)
    chunked_w, chunked_i = chunked_topk_affinity(
        q,
        k,
        5,
        0.1,
        "cosine",
        mask_BNM=mask if masked == "tensor" else None,
        mask_fn=fn if masked == "fn" else None,
        chunk_size=chunk_size,
    )
    assert torch.equal(chunked_i, direct_i)
    torch.testing.assert_close(chunked_w, direct_w)


@pytest.mark.parametrize(
    "h,w,frames,radius,k,tile",
    [
        (5, 7, 3, 2.0, 5, 2),  # tiles that do not divide the grid
        (9, 11, 4, 2.9, 10, 3),  # a fractional radius
        (6, 6, 0, 1.0, 3, 4),  # no local frames: the free keys alone
        (7, 13, 2, 0.0, 4, 1),  # radius 0: each local frame offers only the query's own cell
        (8, 9, 3, 20.0, 7, 5),  # a radius wider than the grid: nothing masked
        (4, 5, 2, 1.5, 9, 8),  # one tile larger than the grid
    ],
)
@pytest.mark.parametrize("kind", ["dot", "cosine"])
def test_local_topk_equals_masked_full(h, w, frames, radius, k, tile, kind) -> None:
    # The windowed op scores only the keys within reach; the full op scores all and masks: same picks.
    query = _rand(h, w, 6, seed=31)
    free = _rand(h * w, 6, seed=32)
    local = _rand(frames, h, w, 6, seed=33)
    got_w, got_i = local_topk_affinity(query, free, local, k, 0.07, radius, kind, tile=tile)
    fn = window_mask_fn(h, w, radius, frames=1 + frames, unrestricted_frames=(0,))
    keys = torch.cat([free, local.reshape(-1, 6)])
    want_w, want_i = chunked_topk_affinity(
        query.reshape(-1, 6), keys, k, 0.07, kind, mask_fn=fn, chunk_size=7
    )
    assert torch.equal(got_i, want_i)
    torch.testing.assert_close(got_w, want_w)


def test_local_topk_pads_when_fewer_candidates_than_k() -> None:
    # 2 free keys + 1 local frame at radius 0 gives 3 candidates per query; k = 5 adds zero-weight picks.
    query, free, local = _rand(2, 2, 3, seed=34), _rand(2, 3, seed=35), _rand(1, 2, 2, 3, seed=36)
    weights, index = local_topk_affinity(query, free, local, 5, 0.1, 0.0, tile=1)
    assert weights.shape == index.shape == (4, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, dtype=torch.float64))
    assert (weights[:, 3:] == 0).all()


def test_local_topk_errors() -> None:
    query, free, local = _rand(3, 4, 2), _rand(5, 2), _rand(2, 3, 4, 2)
    with pytest.raises(ValueError, match="query grid"):
        local_topk_affinity(query, free, _rand(2, 4, 3, 2), 3, 0.1, 1.0)
    with pytest.raises(ValueError, match="expected query"):
        local_topk_affinity(query.flatten(0, 1), free, local, 3, 0.1, 1.0)
    with pytest.raises(ValueError, match="radius"):
        local_topk_affinity(query, free, local, 3, 0.1, -1.0)
    with pytest.raises(ValueError, match="tile"):
        local_topk_affinity(query, free, local, 3, 0.1, 1.0, tile=0)
    with pytest.raises(ValueError, match="k must be"):
        local_topk_affinity(query, free, local, 30, 0.1, 1.0)


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 9])
def test_chunked_gradients_equal_direct(chunk_size: int) -> None:
    q, k, v = _rand(2, 9, 4, seed=19), _rand(2, 10, 4, seed=20), _rand(2, 10, 3, seed=21)
    grads = []
    for chunked in (False, True):
        qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
        if chunked:
            nn = chunked_soft_nearest_neighbour(
                qq, kk, 0.4, "neg_sq_l2", values_BMD=vv, chunk_size=chunk_size
            )
            w, i = chunked_topk_affinity(qq, kk, 3, 0.4, "dot", chunk_size=chunk_size)
        else:
            nn = soft_nearest_neighbour(qq, kk, 0.4, "neg_sq_l2", values_BMD=vv)[0]
            w, i = topk_affinity(qq, kk, 3, 0.4, "dot")
        loss = (nn * torch.linspace(-1, 1, 3, dtype=torch.float64)).sum() + (w * i.double().sin()).sum()
        loss.backward()
        grads.append((nn.detach(), qq.grad, kk.grad, vv.grad))
    for direct, chunked in zip(*grads, strict=True):
        torch.testing.assert_close(chunked, direct)


def test_chunked_unbatched_and_errors() -> None:
    q, k = _rand(6, 4, seed=22), _rand(9, 4, seed=23)
    w, i = chunked_topk_affinity(q, k, 2, 0.1, chunk_size=4)
    dw, di = topk_affinity(q, k, 2, 0.1)
    assert torch.equal(i, di) and w.shape == (6, 2)
    torch.testing.assert_close(w, dw)
    torch.testing.assert_close(
        chunked_soft_nearest_neighbour(q, k, 0.1, chunk_size=4), soft_nearest_neighbour(q, k, 0.1)[0]
    )
    with pytest.raises(ValueError, match="k must be"):
        topk_affinity(q, k, 10, 0.1)
    with pytest.raises(ValueError, match="unknown"):
        pairwise_similarity(q, k, "l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        chunked_topk_affinity(
            q,
            k,
            2,
            0.1,
            mask_BNM=torch.ones(6, 9, dtype=torch.bool),
            chunk_size=2,
            mask_fn=window_mask_fn(2, 3, 1.0),
        )
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_topk_affinity(q, k, 2, 0.1, chunk_size=0)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_float64(kind: str) -> None:
    q = _rand(2, 3, 4, seed=24).requires_grad_(True)
    k = _rand(2, 5, 4, seed=25).requires_grad_(True)
    v = _rand(2, 5, 2, seed=26).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: pairwise_similarity(a, b, kind), (q, k))
    assert torch.autograd.gradcheck(
        lambda s: softmax_affinity(s, 0.7, dim=1), (_rand(2, 3, 4, seed=27).requires_grad_(),)
    )
    assert torch.autograd.gradcheck(
        lambda a, b, c: soft_nearest_neighbour(a, b, 0.7, kind, values_BMD=c), (q, k, v)
    )
    assert torch.autograd.gradcheck(lambda a, b: topk_affinity(a, b, 3, 0.7, kind)[0], (q, k))
    assert torch.autograd.gradcheck(
        lambda a, b, c: chunked_soft_nearest_neighbour(a, b, 0.7, kind, values_BMD=c, chunk_size=2), (q, k, v)
    )


# bf16 keeps 8 bits of mantissa (relative step 2^-8). Documented bounds (docs/core.md), for unit-norm
# 512-d features (CycleTime's) at temperature 512^-0.5 (top-k: 0.05), absolute, bf16 vs fp32 inputs:
# similarity 0.02, affinity entries 0.01, soft-NN 0.002, top-k weights 0.01. Measured maxima over three
# seeds: 0.0091, 0.0031, 0.0005, 0.0043 (neg_sq_l2 is the worst kind: its inputs' norms are rounded).
BF16_TOL = {"sim": 0.02, "alpha": 0.01, "nn": 0.002, "topk": 0.01}


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_within_documented_tolerance(kind: str) -> None:
    q = torch.nn.functional.normalize(_rand(2, 100, 512, seed=28, dtype=torch.float32), dim=-1)
    k = torch.nn.functional.normalize(_rand(2, 900, 512, seed=29, dtype=torch.float32), dim=-1)
    t = 512**-0.5
    sim32, sim16 = pairwise_similarity(q, k, kind), pairwise_similarity(q.bfloat16(), k.bfloat16(), kind)
    assert sim16.dtype == torch.bfloat16
    assert (sim16.float() - sim32).abs().max() < BF16_TOL["sim"]
    nn32, a32 = soft_nearest_neighbour(q, k, t, kind)
    nn16, a16 = soft_nearest_neighbour(q.bfloat16(), k.bfloat16(), t, kind)
    assert (a16.float() - a32).abs().max() < BF16_TOL["alpha"]
    assert (nn16.float() - nn32).abs().max() < BF16_TOL["nn"]
    assert a16.dtype == nn16.dtype == torch.bfloat16
    w32, _ = topk_affinity(q, k, 10, 0.05, kind)
    w16, _ = topk_affinity(q.bfloat16(), k.bfloat16(), 10, 0.05, kind)
    # Compare sorted weights: near-ties may swap neighbours, whose weights are then nearly equal.
    assert (w16.float() - w32).abs().max() < BF16_TOL["topk"]


def test_autocast_cpu_bf16() -> None:
    q, k = _rand(2, 6, 16, seed=30, dtype=torch.float32), _rand(2, 7, 16, seed=31, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dot = pairwise_similarity(q, k, "dot")
        l2 = pairwise_similarity(q, k, "neg_sq_l2")
        nn, alpha = soft_nearest_neighbour(q, k, 0.5, "dot")
        w, _ = topk_affinity(q, k, 3, 0.5, "neg_sq_l2")
    assert dot.dtype == torch.bfloat16  # autocast decides the matmul's dtype
    assert l2.dtype == torch.float32  # computed with autocast off, in the input dtype
    torch.testing.assert_close(l2, pairwise_similarity(q, k, "neg_sq_l2"))
    torch.testing.assert_close(alpha.float().sum(-1), torch.ones(2, 6), atol=0.02, rtol=0)
    assert torch.isfinite(nn.float()).all() and w.dtype == torch.float32


@pytest.mark.gpu  # skipped, and listed as skipped, without a GPU (tests/conftest.py)
@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_cuda_chunked_equals_direct_and_autocast(half: torch.dtype) -> None:
    q = _rand(1, 300, 64, seed=32, dtype=torch.float32).cuda()
    k = _rand(1, 3 * 300, 64, seed=33, dtype=torch.float32).cuda()
    fn = window_mask_fn(15, 20, 4.0, frames=3, unrestricted_frames=(0,), device="cuda")
    direct_w, direct_i = topk_affinity(q, k, 10, 0.05, "cosine", mask_BNM=fn(0, 300))
    chunked_w, chunked_i = chunked_topk_affinity(q, k, 10, 0.05, "cosine", mask_fn=fn, chunk_size=77)
    assert torch.equal(chunked_i, direct_i)
    torch.testing.assert_close(chunked_w, direct_w)
    with torch.autocast("cuda", dtype=half):
        nn_direct, alpha = soft_nearest_neighbour(q, k, 0.1, "neg_sq_l2")
        nn_chunked = chunked_soft_nearest_neighbour(q, k, 0.1, "neg_sq_l2", chunk_size=77)
        w, _ = topk_affinity(q, k, 10, 0.05, "dot")
    # Under autocast the weighted sum is a half-precision matmul whose kernel (and so rounding) depends
    # on the chunk's shape: equal to half-precision tolerance, not bitwise.
    torch.testing.assert_close(nn_chunked, nn_direct, atol=5e-3, rtol=2e-2)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(1, 300, device="cuda"))
    assert torch.isfinite(w).all() and w.dtype == torch.float32


@pytest.mark.gpu  # skipped, and listed as skipped, without a GPU (tests/conftest.py)
def test_cuda_local_topk_equals_masked_full() -> None:
    query = _rand(15, 20, 64, seed=37, dtype=torch.float64).cuda()
    keys = _rand(3 * 300, 64, seed=38, dtype=torch.float64).cuda()
    fn = window_mask_fn(15, 20, 4.0, frames=3, unrestricted_frames=(0,), device="cuda")
    want_w, want_i = chunked_topk_affinity(
        query.view(300, 64), keys, 10, 0.05, "dot", mask_fn=fn, chunk_size=77
    )
    got_w, got_i = local_topk_affinity(
        query, keys[:300], keys[300:].view(2, 15, 20, 64), 10, 0.05, 4.0, tile=6
    )
    assert torch.equal(got_i, want_i)
    torch.testing.assert_close(got_w, want_w)
