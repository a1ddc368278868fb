"""TCC's cycle-consistency loss (Dwibedi et al., CVPR 2019), as pure functions.

Follows the official TensorFlow code (`tcc/deterministic_alignment.py`, `stochastic_alignment.py`,
`losses.py`) term by term; the deviations are deliberate and listed in docs/tcc-loss.md:
a floor on the variance before its log (upstream has none), one random permutation per stochastic
cycle (upstream's shuffle can pair a video with itself), and fp32 arithmetic for low-precision inputs.

Shape letters:
    N videos in the batch, T sampled frames per video, D embedding size,
    P ordered pairs of distinct videos (N (N - 1)), R rows of the cycle-back problem (P T or C),
    K candidate frames of a row (= T), C stochastic cycles, L videos per cycle (cycle_length).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from core.correlation import SimilarityKind, pairwise_similarity
from core.method import LossOut

# Upstream's names -> core's kinds. "l2": -max(|x|^2 + |y|^2 - 2 x.y, 0) (the max is upstream's: the
# expanded form can dip below zero by rounding); "cosine": raw dot products, without normalisation.
_SIMILARITIES: dict[str, SimilarityKind] = {
    "l2": "neg_sq_l2",
    "cosine": "dot",
}
SIMILARITY_TYPES = tuple(_SIMILARITIES)


def scaled_similarity(
    x_BMD: torch.Tensor,
    y_BKD: torch.Tensor,
    similarity_type: str,
    temperature: float,
    divide_by_dim: bool = True,
) -> torch.Tensor:
    """Similarity of every x row to every y row, divided by D and then by the temperature: [B, M, K].

    Two divisions, in upstream's order, rather than one by D x temperature. `divide_by_dim` False
    skips the division by D (xirl does for L2-normalised embeddings, whose distances are at most 2).
    """
    sim_BMK = pairwise_similarity(x_BMD, y_BKD, _SIMILARITIES[similarity_type])
    if divide_by_dim:
        sim_BMK = sim_BMK / x_BMD.shape[-1]
    return sim_BMK / temperature


def _pair_indices(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs (a, b), a != b, in upstream's loop order (a outer, b inner): two [P] tensors.

    Arithmetic rather than a boolean mask, so nothing waits on the device.
    """
    p_P = torch.arange(n * (n - 1), device=device)
    a_P = p_P // (n - 1)
    k_P = p_P % (n - 1)
    b_P = k_P + (k_P >= a_P).long()
    return a_P, b_P


def deterministic_logits(
    embs_NTD: torch.Tensor, similarity_type: str, temperature: float, divide_by_dim: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cycle-back logits of every frame of every ordered pair: (logits [P, T, K], first video a [P]).

    Row (p, i): frame i of video a_p -> soft nearest neighbour in video b_p -> similarity to each
    frame k of a_p. The true class of row (p, i) is i. Memory: the [P, T, K] similarities and the
    [P, T, D] gathered copies, O(N^2 T^2 + N^2 T D) elements.
    """
    a_P, b_P = _pair_indices(embs_NTD.shape[0], embs_NTD.device)
    emb_a_PTD, emb_b_PTD = embs_NTD[a_P], embs_NTD[b_P]
    scale = (similarity_type, temperature, divide_by_dim)
    alpha_PTK = torch.softmax(scaled_similarity(emb_a_PTD, emb_b_PTD, *scale), dim=-1)
    soft_nn_PTD = alpha_PTK @ emb_b_PTD
    return scaled_similarity(soft_nn_PTD, emb_a_PTD, *scale), a_P


def sample_cycles(
    num_cycles: int,
    num_videos: int,
    cycle_length: int,
    num_steps: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random cycles over videos and their start frames: (cycles [C, L + 1], start frames [C]).

    Each cycle is the first L entries of its own random permutation of the N videos (argsort of
    random keys), closed by repeating the first: consecutive videos always differ. Drawn on the
    generator's device, then moved to `device`.
    """
    if cycle_length > num_videos:
        raise ValueError(
            f"tcc.loss.cycle_length ({cycle_length}) must be <= the number of videos in the batch "
            f"({num_videos}): a cycle visits distinct videos"
        )
    rng_device = generator.device if generator is not None else device
    keys_CN = torch.rand(num_cycles, num_videos, generator=generator, device=rng_device)
    visits_CL = keys_CN.argsort(dim=1)[:, :cycle_length]
    cycles_CL1 = torch.cat([visits_CL, visits_CL[:, :1]], dim=1)
    start_C = torch.randint(0, num_steps, (num_cycles,), generator=generator, device=rng_device)
    return cycles_CL1.to(device), start_C.to(device)


def stochastic_logits(
    embs_NTD: torch.Tensor,
    cycles_CL1: torch.Tensor,
    start_C: torch.Tensor,
    similarity_type: str,
    temperature: float,
    divide_by_dim: bool = True,
) -> torch.Tensor:
    """Cycle-back logits of stochastic cycles: [C, K] over the frames of each cycle's first video.

    Upstream's `_align_single_cycle`, batched over cycles: frame start_c of video cycles[c, 0] is the
    query; each hop replaces it by its soft nearest neighbour in the next video; the last hop's
    similarities (against the first video's frames) are the logits. The loop runs over the L hops
    of a cycle, never over pairs.
    """
    assert cycles_CL1.shape[1] >= 3, "a cycle visits at least two videos and closes"
    query_C1D = embs_NTD[cycles_CL1[:, 0], start_C].unsqueeze(1)
    for hop in range(1, cycles_CL1.shape[1]):
        cand_CKD = embs_NTD[cycles_CL1[:, hop]]
        logits_C1K = scaled_similarity(query_C1D, cand_CKD, similarity_type, temperature, divide_by_dim)
        query_C1D = torch.softmax(logits_C1K, dim=-1) @ cand_CKD
    return logits_C1K.squeeze(1)


@dataclass(frozen=True)
class CycleBackRows:
    """The stacked cycle-back problems: R rows, each a distribution over K candidate frames."""

    logits_RK: torch.Tensor  # similarity of the cycled-back embedding to each candidate frame
    labels_R: torch.Tensor  # index of the frame the cycle started from (the true class)
    times_RK: torch.Tensor  # time of each candidate frame (no gradient)
    beta_RK: torch.Tensor  # softmax of the logits
    true_R: torch.Tensor  # time of the true frame
    mu_R: torch.Tensor  # predicted time, sum_k beta_k t_k


def _classification(rows: CycleBackRows, *, label_smoothing: float, **_: float) -> LossOut:
    # torch's smoothed target (1 - ls) onehot + ls / K is tf.keras's categorical_crossentropy's.
    return F.cross_entropy(rows.logits_RK, rows.labels_R, label_smoothing=label_smoothing), {}


def _regression_mse(rows: CycleBackRows, **_: float) -> LossOut:
    return (rows.true_R - rows.mu_R).pow(2).mean(), {}


def _regression_huber(rows: CycleBackRows, *, huber_delta: float, **_: float) -> LossOut:
    # tf.keras huber_loss: 0.5 x^2 for |x| <= delta, else delta (|x| - delta / 2); torch's is the same.
    return F.huber_loss(rows.mu_R, rows.true_R, delta=huber_delta), {}


def _regression_mse_var(
    rows: CycleBackRows, *, variance_lambda: float, variance_floor: float, **_: float
) -> LossOut:
    var_R = (rows.beta_RK * (rows.times_RK - rows.mu_R.unsqueeze(1)).pow(2)).sum(-1)
    # The guard (not upstream): a one-hot beta gives var 0, so log var = -inf and NaN gradients.
    floored_R = var_R.clamp_min(variance_floor)
    log_var_R = floored_R.log()
    total = ((rows.true_R - rows.mu_R).pow(2) / floored_R + variance_lambda * log_var_R).mean()
    floored_share = (var_R < variance_floor).to(total.dtype).mean()
    return total, {"log_var": log_var_R.mean().detach(), "var_floored": floored_share.detach()}


_LOSSES: dict[str, Callable[..., LossOut]] = {
    "classification": _classification,
    "regression_mse": _regression_mse,
    "regression_mse_var": _regression_mse_var,
    "regression_huber": _regression_huber,
}
LOSS_TYPES = tuple(_LOSSES)


def cycle_back_loss(
    logits_RK: torch.Tensor,
    labels_R: torch.Tensor,
    times_RK: torch.Tensor,
    *,
    loss_type: str,
    label_smoothing: float,
    variance_lambda: float,
    huber_delta: float,
    variance_floor: float,
) -> LossOut:
    """Upstream's `classification_loss` / `regression_loss` on stacked rows: (scalar, parts).

    labels_R [R] is the true class index of each row; times_RK the time of each candidate frame.
    parts: "loss", "time_error" (mean |t - mu|, for every loss type) and the loss's own terms.
    """
    times_RK = times_RK.detach()
    beta_RK = torch.softmax(logits_RK, dim=-1)
    true_R = times_RK.gather(1, labels_R.unsqueeze(1)).squeeze(1)
    mu_R = (beta_RK * times_RK).sum(-1)
    rows = CycleBackRows(logits_RK, labels_R, times_RK, beta_RK, true_R, mu_R)
    total, parts = _LOSSES[loss_type](
        rows,
        label_smoothing=label_smoothing,
        variance_lambda=variance_lambda,
        huber_delta=huber_delta,
        variance_floor=variance_floor,
    )
    return total, {"loss": total.detach(), "time_error": (true_R - mu_R).abs().mean().detach(), **parts}


def _check_inputs(
    embs_NTD: torch.Tensor,
    steps_NT: torch.Tensor,
    seq_lens_N: torch.Tensor,
    loss_type: str,
    similarity_type: str,
) -> None:
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"tcc.loss.loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if similarity_type not in SIMILARITY_TYPES:
        raise ValueError(
            f"tcc.loss.similarity_type must be one of {SIMILARITY_TYPES}, got {similarity_type!r}"
        )
    if embs_NTD.ndim != 3 or embs_NTD.shape[0] < 2:
        raise ValueError(f"embs must be [N >= 2 videos, T, D], got shape {tuple(embs_NTD.shape)}")
    n, t = embs_NTD.shape[:2]
    if tuple(steps_NT.shape) != (n, t) or tuple(seq_lens_N.shape) != (n,):
        raise ValueError(
            f"steps must be [N, T] = [{n}, {t}] and seq_lens [N] = [{n}], "
            f"got {tuple(steps_NT.shape)} and {tuple(seq_lens_N.shape)}"
        )


def cycle_consistency_loss(
    embs: torch.Tensor,
    steps: torch.Tensor,
    seq_lens: torch.Tensor,
    *,
    loss_type: str = "regression_mse_var",
    similarity_type: str = "l2",
    temperature: float = 0.1,
    divide_by_dim: bool = True,
    label_smoothing: float = 0.1,
    variance_lambda: float = 0.001,
    huber_delta: float = 0.1,
    normalize_indices: bool = True,
    stochastic_matching: bool = False,
    num_cycles: int = 0,
    cycle_length: int = 2,
    variance_floor: float = 1e-6,
    generator: torch.Generator | None = None,
) -> LossOut:
    """TCC's loss on embeddings [N, T, D] of frames `steps` [N, T] of videos `seq_lens` [N] frames long.

    Returns (scalar loss, {name: detached scalar}). Defaults are upstream's (tcc/config.py).
    Float64 inputs compute in float64; anything narrower computes in float32 with autocast off (the
    l2 similarity cancels catastrophically in bf16 and the softmaxes need the range); the loss is
    then float32, and gradients flow back into the input's dtype.
    `num_cycles` 0 means N T cycles (upstream: batch x steps x fraction 1.0).
    """
    _check_inputs(embs, steps, seq_lens, loss_type, similarity_type)
    n, t = embs.shape[:2]
    dtype = torch.promote_types(embs.dtype, torch.float32)
    with torch.autocast(embs.device.type, enabled=False):
        embs_NTD = embs.to(dtype)
        times_NK = steps.detach().to(dtype)
        if normalize_indices:
            times_NK = times_NK / seq_lens.detach().to(dtype).unsqueeze(1)
        if stochastic_matching:
            cycles_CL1, start_C = sample_cycles(
                num_cycles or n * t, n, cycle_length, t, generator=generator, device=embs.device
            )
            logits_RK = stochastic_logits(
                embs_NTD, cycles_CL1, start_C, similarity_type, temperature, divide_by_dim
            )
            labels_R = start_C
            times_RK = times_NK[cycles_CL1[:, 0]]
        else:
            logits_PTK, a_P = deterministic_logits(embs_NTD, similarity_type, temperature, divide_by_dim)
            logits_RK = logits_PTK.flatten(0, 1)
            labels_R = torch.arange(t, device=embs.device).repeat(a_P.shape[0])
            times_RK = times_NK[a_P].repeat_interleave(t, dim=0)
        return cycle_back_loss(
            logits_RK,
            labels_R,
            times_RK,
            loss_type=loss_type,
            label_smoothing=label_smoothing,
            variance_lambda=variance_lambda,
            huber_delta=huber_delta,
            variance_floor=variance_floor,
        )


def _all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's x, concatenated along dim 0 in rank order (no gradient)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class _GatherRows(torch.autograd.Function):
    """all_gather along dim 0 whose backward hands each rank the sum over ranks of its slice's gradient.

    An all_reduce then a slice, rather than a reduce_scatter, because gloo has no reduce_scatter;
    the gradient is only N T D numbers.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.rows = slice(dist.get_rank() * x.shape[0], (dist.get_rank() + 1) * x.shape[0])
        return _all_gather_rows(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce works in place; the incoming gradient is not ours
        dist.all_reduce(grad)
        return grad[ctx.rows]


def gather_embeddings(
    embs: torch.Tensor, steps: torch.Tensor, seq_lens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate every rank's [N, T, D], [N, T], [N] along N (rank order); identity without a group.

    Pairs then cross GPUs (upstream pairs only within one device). Every rank must hold the same N
    and T. Every rank computes the same loss on the gathered batch; in the backward each rank's slice
    receives the sum over ranks of their gradients, world size x dL/dslice, which the trainer's
    gradient averaging over ranks (DDP, DeepSpeed) turns back into exactly dL/dparameters.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embs, steps, seq_lens
    return _GatherRows.apply(embs), _all_gather_rows(steps), _all_gather_rows(seq_lens)
