"""TCC loss against literal per-pair loop references of the official code, plus numerics and gathering."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tcc.loss import LOSS_TYPES, SIMILARITY_TYPES, cycle_consistency_loss, gather_embeddings, sample_cycles

N, T, D = 3, 5, 4


def _batch(seed: int = 0, n: int = N, t: int = T, d: int = D, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    embs = torch.randn(n, t, d, generator=g, dtype=dtype)
    lens = torch.randint(t + 2, 40, (n,), generator=g)
    steps = torch.stack([torch.randperm(int(length), generator=g)[:t].sort().values for length in lens])
    return embs, steps, lens


# ---- literal references: scalar loops, upstream's formulas one by one --------------------------------


def _ref_similarity(x, y, similarity_type, temperature):
    """[M, D] x [K, D] -> [M, K], one element at a time."""
    out = torch.zeros(x.shape[0], y.shape[0], dtype=x.dtype)
    for i in range(x.shape[0]):
        for j in range(y.shape[0]):
            if similarity_type == "l2":
                out[i, j] = -max(sum((x[i, c] - y[j, c]) ** 2 for c in range(x.shape[1])), 0.0)
            else:
                out[i, j] = sum(x[i, c] * y[j, c] for c in range(x.shape[1]))
    return out / x.shape[1] / temperature


def _ref_row_loss(z, label, times, loss_type, ls=0.1, lam=0.001, delta=0.1, floor=1e-6):
    """One row: logits z [K], true class, candidate times [K]."""
    k = len(z)
    beta = torch.softmax(z, 0)
    true_t = times[label]
    mu = sum(beta[q] * times[q] for q in range(k))
    if loss_type == "classification":
        target = [(1.0 - ls) * (q == label) + ls / k for q in range(k)]  # tf.keras label smoothing
        log_p = torch.log_softmax(z, 0)
        return -sum(target[q] * log_p[q] for q in range(k))
    if loss_type == "regression_mse":
        return (true_t - mu) ** 2
    if loss_type == "regression_huber":
        err = abs(true_t - mu)
        return 0.5 * err**2 if err <= delta else delta * err - 0.5 * delta**2
    var = max(sum(beta[q] * (times[q] - mu) ** 2 for q in range(k)), torch.tensor(floor, dtype=z.dtype))
    return (true_t - mu) ** 2 / var + lam * torch.log(var)


def _ref_deterministic(embs, steps, lens, loss_type, similarity_type, normalize_indices=True):
    rows = []
    n, t, _ = embs.shape
    for a in range(n):
        for b in range(n):
            if a == b:
                continue
            alpha = torch.softmax(_ref_similarity(embs[a], embs[b], similarity_type, 0.1), dim=1)
            soft_nn = torch.stack([sum(alpha[i, j] * embs[b][j] for j in range(t)) for i in range(t)])
            logits = _ref_similarity(soft_nn, embs[a], similarity_type, 0.1)
            times = steps[a].double() / (lens[a].double() if normalize_indices else 1.0)
            rows += [_ref_row_loss(logits[i], i, times, loss_type) for i in range(t)]
    return sum(rows) / len(rows)


def _ref_stochastic(embs, steps, lens, cycles, starts, loss_type, similarity_type):
    rows = []
    t = embs.shape[1]
    for cycle, start in zip(cycles.tolist(), starts.tolist(), strict=True):
        query = embs[cycle[0], start : start + 1]
        for video in cycle[1:]:
            logits = _ref_similarity(query, embs[video], similarity_type, 0.1)[0]
            beta = torch.softmax(logits, 0)
            query = sum(beta[j] * embs[video][j] for j in range(t)).unsqueeze(0)
        times = steps[cycle[0]].double() / lens[cycle[0]].double()
        rows.append(_ref_row_loss(logits, start, times, loss_type))
    return sum(rows) / len(rows)


# ---- against the references ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loss_type", "similarity_type"), list(itertools.product(LOSS_TYPES, SIMILARITY_TYPES))
)
def test_deterministic_matches_loop_reference(loss_type: str, similarity_type: str) -> None:
    embs, steps, lens = _batch(1)
    total, parts = cycle_consistency_loss(
        embs, steps, lens, loss_type=loss_type, similarity_type=similarity_type
    )
    ref = _ref_deterministic(embs, steps, lens, loss_type, similarity_type)
    torch.testing.assert_close(total, ref, rtol=1e-10, atol=1e-12)
    assert total.dtype == torch.float64 and not parts["loss"].requires_grad


def test_unnormalised_indices_match_reference() -> None:
    embs, steps, lens = _batch(2)
    total, _ = cycle_consistency_loss(embs, steps, lens, loss_type="regression_mse", normalize_indices=False)
    ref = _ref_deterministic(embs, steps, lens, "regression_mse", "l2", normalize_indices=False)
    torch.testing.assert_close(total, ref)


@pytest.mark.parametrize(
    ("loss_type", "similarity_type"), list(itertools.product(LOSS_TYPES, SIMILARITY_TYPES))
)
@pytest.mark.parametrize("cycle_length", [2, 3])
def test_stochastic_matches_loop_reference(loss_type: str, similarity_type: str, cycle_length: int) -> None:
    embs, steps, lens = _batch(3, n=4)
    kwargs = dict(loss_type=loss_type, similarity_type=similarity_type, cycle_length=cycle_length)
    total, _ = cycle_consistency_loss(
        embs,
        steps,
        lens,
        stochastic_matching=True,
        num_cycles=7,
        generator=torch.Generator().manual_seed(5),
        **kwargs,
    )
    cycles, starts = sample_cycles(7, 4, cycle_length, T, generator=torch.Generator().manual_seed(5))
    ref = _ref_stochastic(embs, steps, lens, cycles, starts, loss_type, similarity_type)
    torch.testing.assert_close(total, ref, rtol=1e-10, atol=1e-12)


def test_classification_smoothing_is_tf_keras() -> None:
    # torch's label_smoothing target is (1 - ls) onehot + ls / K, tf.keras's formula.
    z = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    target = torch.nn.functional.one_hot(y, 5) * 0.9 + 0.1 / 5
    tf_ce = -(target * torch.log_softmax(z, 1)).sum(1).mean()
    torch.testing.assert_close(torch.nn.functional.cross_entropy(z, y, label_smoothing=0.1), tf_ce)


# ---- known answers and numerics -------------------------------------------------------------------------


@pytest.mark.parametrize("similarity_type", SIMILARITY_TYPES)
def test_identical_videos_cycle_back_exactly(similarity_type: str) -> None:
    # Well-separated frames (orthogonal, large) repeated in every video: each frame's neighbour is itself.
    frames = 10.0 * torch.eye(T, dtype=torch.float64)
    embs = frames.expand(N, T, T).clone()
    steps = torch.arange(0, 2 * T, 2).expand(N, T)
    lens = torch.full((N,), 2 * T)
    for loss_type in ("regression_mse", "regression_mse_var", "regression_huber"):
        _, parts = cycle_consistency_loss(
            embs, steps, lens, loss_type=loss_type, similarity_type=similarity_type
        )
        assert parts["time_error"] < 1e-6
    mse, _ = cycle_consistency_loss(
        embs, steps, lens, loss_type="regression_mse", similarity_type=similarity_type
    )
    assert mse < 1e-12


def test_float64_in_float64_out_and_gradcheck() -> None:
    embs, steps, lens = _batch(4, n=3, t=4, d=3)
    for loss_type, similarity_type in itertools.product(LOSS_TYPES, SIMILARITY_TYPES):
        x = embs.clone().requires_grad_(True)
        total, parts = cycle_consistency_loss(
            x, steps, lens, loss_type=loss_type, similarity_type=similarity_type
        )
        assert total.dtype == torch.float64 and all(v.dtype == torch.float64 for v in parts.values())

        def f(e, lt=loss_type, st=similarity_type):
            return cycle_consistency_loss(e, steps, lens, loss_type=lt, similarity_type=st)[0]

        assert torch.autograd.gradcheck(f, (x,))


def test_stochastic_gradcheck_with_fixed_generator() -> None:
    embs, steps, lens = _batch(6, n=3, t=4, d=3)

    def f(e):
        g = torch.Generator().manual_seed(0)
        return cycle_consistency_loss(e, steps, lens, stochastic_matching=True, cycle_length=3, generator=g)[
            0
        ]

    assert torch.autograd.gradcheck(f, (embs.clone().requires_grad_(True),))


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("scale", [1.0, 1e3])
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_autocast_gradients_finite(loss_type: str, scale: float, low: torch.dtype) -> None:
    # scale 1e3 makes every softmax one-hot: var is exactly 0, which upstream turns into -inf / NaN.
    embs, steps, lens = _batch(7, n=4, t=8, d=16, dtype=torch.float32)
    proj = torch.nn.Linear(16, 16)
    x = (embs * scale).requires_grad_(True)
    with torch.autocast("cpu", dtype=low):
        out = proj(x)
        assert out.dtype == low
        out.retain_grad()
        total, parts = cycle_consistency_loss(out, steps, lens, loss_type=loss_type)
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    assert out.grad.dtype == low and torch.isfinite(out.grad).all() and torch.isfinite(x.grad).all()
    if low == torch.bfloat16:  # fp16's weight gradient of 1e3-sized inputs overflows in the layer itself
        assert torch.isfinite(proj.weight.grad).all()
    if loss_type == "regression_mse_var" and scale > 1:
        assert parts["var_floored"] > 0.5  # the guard was what kept it finite


@pytest.mark.parametrize("stochastic", [False, True])
def test_bf16_tensors_compute_in_fp32(stochastic: bool) -> None:
    # DeepSpeed's bf16 mode hands over bf16 embeddings with no autocast around the loss.
    embs, steps, lens = _batch(11, n=3, t=6, d=8, dtype=torch.float32)
    x = embs.to(torch.bfloat16).requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    total, _ = cycle_consistency_loss(x, steps, lens, stochastic_matching=stochastic, generator=g)
    ref, _ = cycle_consistency_loss(
        x.detach().float(),
        steps,
        lens,
        stochastic_matching=stochastic,
        generator=torch.Generator().manual_seed(0),
    )
    assert total.dtype == torch.float32
    torch.testing.assert_close(total, ref)  # same fp32 arithmetic on the same (rounded) values
    total.backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


def test_collapsed_variance_is_floored_not_nan() -> None:
    embs, steps, lens = _batch(8)
    x = (embs * 1e4).requires_grad_(True)
    total, parts = cycle_consistency_loss(x, steps, lens, loss_type="regression_mse_var", variance_floor=1e-6)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(x.grad).all()
    assert parts["log_var"] >= math.log(1e-6) - 1e-9


# ---- stochastic cycles ------------------------------------------------------------------------------------


def test_cycles_are_random_distinct_videos_and_reproducible() -> None:
    g = torch.Generator().manual_seed(0)
    cycles, starts = sample_cycles(400, 4, 2, T, generator=g)
    assert cycles.shape == (400, 3) and starts.shape == (400,)
    assert (cycles[:, 0] == cycles[:, -1]).all()
    assert (cycles[:, 1:] != cycles[:, :-1]).all()  # never a video with itself
    assert {tuple(p) for p in cycles[:, :2].tolist()} == {
        (a, b) for a in range(4) for b in range(4) if a != b
    }
    assert set(starts.tolist()) == set(range(T))
    long_cycles, _ = sample_cycles(300, 5, 4, T, generator=g)
    assert all(len(set(c[:-1])) == 4 for c in long_cycles.tolist())
    again = sample_cycles(400, 4, 2, T, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], cycles) and torch.equal(again[1], starts)


def test_stochastic_loss_reproducible_and_default_cycle_count() -> None:
    embs, steps, lens = _batch(9)
    run = [
        cycle_consistency_loss(
            embs, steps, lens, stochastic_matching=True, generator=torch.Generator().manual_seed(3)
        )
        for _ in range(2)
    ]
    assert torch.equal(run[0][0], run[1][0])
    cycles, starts = sample_cycles(N * T, N, 2, T, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        run[0][0], _ref_stochastic(embs, steps, lens, cycles, starts, "regression_mse_var", "l2")
    )


def test_user_errors_name_the_setting() -> None:
    embs, steps, lens = _batch(0)
    with pytest.raises(ValueError, match="loss_type"):
        cycle_consistency_loss(embs, steps, lens, loss_type="mse")
    with pytest.raises(ValueError, match="similarity_type"):
        cycle_consistency_loss(embs, steps, lens, similarity_type="dot")
    with pytest.raises(ValueError, match="cycle_length"):
        cycle_consistency_loss(embs, steps, lens, stochastic_matching=True, cycle_length=4)
    with pytest.raises(ValueError, match="steps"):
        cycle_consistency_loss(embs, steps[:, :2], lens)


# ---- gathering across ranks -------------------------------------------------------------------------------


def test_gather_is_identity_without_a_group() -> None:
    embs, steps, lens = _batch(0)
    assert all(a is b for a, b in zip(gather_embeddings(embs, steps, lens), (embs, steps, lens), strict=True))


def _gather_worker(rank: int, world: int, out_dir: str) -> None:
    # A file store: no port to pick, so nothing else on the machine can collide with it.
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        proj = torch.nn.Linear(D, D, dtype=torch.float64)  # same weights on both ranks
        inputs, steps, lens = _batch(10, n=2 * world)
        local = slice(2 * rank, 2 * rank + 2)
        x = inputs[local].clone().requires_grad_(True)
        emb_all, steps_all, lens_all = gather_embeddings(proj(x), steps[local], lens[local])
        total, _ = cycle_consistency_loss(emb_all, steps_all, lens_all)
        total.backward()
        for p in proj.parameters():  # what DDP / DeepSpeed do with gradients: average over ranks
            dist.all_reduce(p.grad)
            p.grad /= world
        torch.save(
            {"loss": total.detach(), "x_grad": x.grad, "w_grad": proj.weight.grad}, f"{out_dir}/{rank}.pt"
        )
    finally:
        dist.destroy_process_group()


def test_gathered_loss_and_gradients_match_single_process(tmp_path) -> None:
    world = 2
    mp.spawn(_gather_worker, args=(world, str(tmp_path)), nprocs=world, join=True)

    torch.manual_seed(0)
    proj = torch.nn.Linear(D, D, dtype=torch.float64)
    inputs, steps, lens = _batch(10, n=2 * world)
    x = inputs.clone().requires_grad_(True)
    total, _ = cycle_consistency_loss(proj(x), steps, lens)
    total.backward()
    for rank in range(world):
        got = torch.load(tmp_path / f"{rank}.pt")
        torch.testing.assert_close(got["loss"], total.detach())
        torch.testing.assert_close(got["w_grad"], proj.weight.grad)
        # The local slice gets the sum over ranks of identical losses' gradients: world x dL/dslice.
        torch.testing.assert_close(got["x_grad"], world * x.grad[2 * rank : 2 * rank + 2])


@pytest.mark.parametrize("similarity_type", SIMILARITY_TYPES)
def test_divide_by_dim_off_equals_embeddings_scaled_by_sqrt_dim(similarity_type: str) -> None:
    # Both similarities are quadratic in the embeddings, so dropping upstream's 1/D is the same as
    # scaling every embedding by sqrt(D): a check that the switch reaches the similarity and nothing else.
    embs, steps, lens = _batch(seed=3)
    off, _ = cycle_consistency_loss(embs, steps, lens, similarity_type=similarity_type, divide_by_dim=False)
    on, _ = cycle_consistency_loss(embs * math.sqrt(D), steps, lens, similarity_type=similarity_type)
    torch.testing.assert_close(off, on)


def test_video_embeddings_centres_each_video_then_normalises_each_frame() -> None:
    from tcc.config import Config
    from tcc.model import video_embeddings

    embs = torch.randn(2, 6, 4, dtype=torch.float64) + torch.tensor([[[5.0]], [[-3.0]]], dtype=torch.float64)
    assert torch.equal(video_embeddings(embs, Config()), embs)  # upstream: both off
    out = video_embeddings(embs, Config(center_per_video=True, normalize_embeddings=True))
    centred = embs - embs.mean(dim=1, keepdim=True)
    torch.testing.assert_close(out, centred / centred.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 6, dtype=torch.float64))
