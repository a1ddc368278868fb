"""Correlation between sets of feature vectors: similarity, softmax affinity, soft nearest neighbour,
sparse top-k affinity for label propagation, and chunked variants whose peak memory is bounded.

Legend: B batch, N query items, M key items, C channels, K top-k, D value channels (e.g. one-hot
labels), h x w a feature map, n rows of a chunk.

Every op takes batched `[B, N, C]` / `[B, M, C]` inputs; the public ones also take unbatched `[N, C]` /
`[M, C]` pairs and then drop B from their outputs.

Precision (one rule for the module): outputs come back in the query's dtype, and the two steps that lose
accuracy in half precision run in at least float32 inside:
- the neg_sq_l2 similarity, because |a|^2 + |b|^2 - 2 a.b cancels catastrophically in bf16/fp16; inside
  soft_nearest_neighbour and the top-k ops it reaches the softmax in fp32, unrounded;
- every softmax, because exp and the row sum need the range (torch autocast does the same).
The dot/cosine matmuls run in the inputs' dtype, or in autocast's dtype while autocast is on (so
pairwise_similarity(kind="dot") under bf16 autocast returns bf16). Tolerances: docs/core.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

SimilarityKind = Literal["dot", "cosine", "neg_sq_l2"]
MaskFn = Callable[[int, int], "torch.Tensor | None"]
Temperature = float | torch.Tensor

_COSINE_EPS = 1e-8


def _dot(a_BNC: torch.Tensor, b_BMC: torch.Tensor) -> torch.Tensor:
    return torch.matmul(a_BNC, b_BMC.transpose(-1, -2))


def _cosine(a_BNC: torch.Tensor, b_BMC: torch.Tensor) -> torch.Tensor:
    return _dot(F.normalize(a_BNC, dim=-1, eps=_COSINE_EPS), F.normalize(b_BMC, dim=-1, eps=_COSINE_EPS))


def _neg_sq_l2(a_BNC: torch.Tensor, b_BMC: torch.Tensor) -> torch.Tensor:
    # TCC's 'l2' similarity, clamp included: rounding can make the expanded distance slightly negative.
    # Returned in the fp32 (or fp64) working dtype so that a following softmax sees the exact values:
    # rounding a distance of ~2 to bf16 moves it by ~0.008, i.e. 0.2 logits at temperature 512^-0.5.
    work = torch.promote_types(a_BNC.dtype, torch.float32)
    with torch.autocast(a_BNC.device.type, enabled=False):
        a, b = a_BNC.to(work), b_BMC.to(work)
        sq_BNM = a.square().sum(-1, keepdim=True) + b.square().sum(-1).unsqueeze(-2) - 2 * _dot(a, b)
        return -sq_BNM.clamp_min(0)


_SIMILARITIES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "dot": _dot,  # TCC calls the raw dot product 'cosine'; use "dot" to reproduce it
    "cosine": _cosine,
    "neg_sq_l2": _neg_sq_l2,
}


def _as_batched(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if a.dim() == 2 and b.dim() == 2:
        return a.unsqueeze(0), b.unsqueeze(0), True
    if a.dim() == 3 and b.dim() == 3:
        return a, b, False
    raise ValueError(
        f"expected [B, N, C] and [B, M, C] (or [N, C] and [M, C]); got {list(a.shape)} and {list(b.shape)}"
    )


def _batched_values(values_BMD: torch.Tensor | None, keys_BMC: torch.Tensor, unbatched: bool) -> torch.Tensor:
    """The values of a soft nearest neighbour (the already batched keys by default), batched like them."""
    if values_BMD is None:
        return keys_BMC
    v = values_BMD.unsqueeze(0) if unbatched else values_BMD
    if v.shape[:2] != keys_BMC.shape[:2]:
        raise ValueError(
            f"values {list(v.shape)} must have the keys' leading dims {list(keys_BMC.shape[:2])}"
        )
    return v


def _similarity(a_BNC: torch.Tensor, b_BMC: torch.Tensor, kind: str) -> torch.Tensor:
    if kind not in _SIMILARITIES:
        raise ValueError(f"similarity kind {kind!r} is unknown; use one of {sorted(_SIMILARITIES)}")
    if a_BNC.shape[-1] != b_BMC.shape[-1]:
        raise ValueError(f"channel counts differ: {a_BNC.shape[-1]} vs {b_BMC.shape[-1]}")
    return _SIMILARITIES[kind](a_BNC, b_BMC)


def pairwise_similarity(
    a_BNC: torch.Tensor, b_BMC: torch.Tensor, kind: SimilarityKind = "dot"
) -> torch.Tensor:
    """Similarity of every query to every key: [B, N, C] x [B, M, C] -> [B, N, M] ([N, C] x [M, C] -> [N, M]).

    kind "dot": a.b; "cosine": a.b / (|a| |b|) (norms floored at 1e-8); "neg_sq_l2": TCC's
    -max(|a|^2 + |b|^2 - 2 a.b, 0), computed in at least fp32 and returned in the input dtype.
    """
    a, b, unbatched = _as_batched(a_BNC, b_BMC)
    sim_BNM = _similarity(a, b, kind)
    if kind == "neg_sq_l2":  # the internal working dtype back to the inputs' (dot/cosine follow autocast)
        sim_BNM = sim_BNM.to(a.dtype)
    return sim_BNM.squeeze(0) if unbatched else sim_BNM


def _check_temperature(temperature: Temperature) -> None:
    if not isinstance(temperature, torch.Tensor) and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def softmax_affinity(
    sim: torch.Tensor, temperature: Temperature, dim: int = -1, *, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """softmax(sim / temperature) along `dim`, any shape. Computed in at least fp32 (bf16/fp16 are
    upcast, autocast is switched off inside); returned in `out_dtype`, by default sim's dtype."""
    _check_temperature(temperature)
    work = torch.promote_types(sim.dtype, torch.float32)
    with torch.autocast(sim.device.type, enabled=False):
        alpha = torch.softmax(sim.to(work) / temperature, dim=dim)
    return alpha.to(out_dtype or sim.dtype)


def _soft_nn(
    query_BNC: torch.Tensor,
    keys_BMC: torch.Tensor,
    values_BMD: torch.Tensor,
    temperature: Temperature,
    kind: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    alpha_BNM = softmax_affinity(
        _similarity(query_BNC, keys_BMC, kind), temperature, out_dtype=query_BNC.dtype
    )
    return torch.matmul(alpha_BNM.to(values_BMD.dtype), values_BMD), alpha_BNM


def soft_nearest_neighbour(
    query_BNC: torch.Tensor,
    keys_BMC: torch.Tensor,
    temperature: Temperature,
    kind: SimilarityKind = "dot",
    *,
    values_BMD: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft nearest neighbour of each query among the keys (TCC's V_i = sum_j alpha_ij B_j).

    alpha_BNM = softmax over keys of similarity / temperature; returns (alpha @ values, alpha), values
    defaulting to the keys: nn is [B, N, D] ([B, N, C] without values), alpha [B, N, M].
    """
    q, k, unbatched = _as_batched(query_BNC, keys_BMC)
    v = _batched_values(values_BMD, k, unbatched)
    nn_BND, alpha_BNM = _soft_nn(q, k, v, temperature, kind)
    return (nn_BND.squeeze(0), alpha_BNM.squeeze(0)) if unbatched else (nn_BND, alpha_BNM)


def _topk_softmax(vals_BNK: torch.Tensor, temperature: Temperature) -> torch.Tensor:
    """Softmax over the last axis where -inf marks a masked-out pick: those get weight exactly 0 and a
    row with no valid pick gets all zeros (not NaN), with finite gradients everywhere."""
    work = torch.promote_types(vals_BNK.dtype, torch.float32)
    with torch.autocast(vals_BNK.device.type, enabled=False):
        logits = vals_BNK.to(work)
        valid = torch.isfinite(logits)
        logits = torch.where(valid, logits, torch.zeros((), dtype=work, device=logits.device)) / temperature
        row_max = torch.where(valid, logits, torch.finfo(work).min).amax(-1, keepdim=True).detach()
        e = torch.where(valid, torch.exp(logits - row_max), torch.zeros((), dtype=work, device=logits.device))
        return e / e.sum(-1, keepdim=True).clamp_min(torch.finfo(work).tiny)


def _topk(
    query_BNC: torch.Tensor,
    keys_BMC: torch.Tensor,
    k: int,
    temperature: Temperature,
    kind: str,
    mask_BNM: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    sim_BNM = _similarity(query_BNC, keys_BMC, kind)
    if mask_BNM is not None:
        sim_BNM = sim_BNM.masked_fill(~mask_BNM, float("-inf"))
    vals_BNK, index_BNK = sim_BNM.topk(k, dim=-1)
    return _topk_softmax(vals_BNK, temperature).to(query_BNC.dtype), index_BNK


def _check_topk(k: int, num_keys: int) -> None:
    if not 1 <= k <= num_keys:
        raise ValueError(f"k must be in [1, {num_keys}] (the number of keys), got {k}")


def topk_affinity(
    query_BNC: torch.Tensor,
    keys_BMC: torch.Tensor,
    k: int,
    temperature: Temperature,
    kind: SimilarityKind = "dot",
    mask_BNM: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse affinity for label propagation: the k most similar keys of each query, softmax over those k.

    mask_BNM (bool, broadcastable to [B, N, M]; True = allowed) removes keys before the top-k, so a masked
    key is never chosen while k valid keys remain; picks beyond the valid ones get weight 0. Returns
    (weights_BNK in the inputs' dtype, rows summing to 1; index_BNK int64 into M), sorted by similarity.
    """
    q, kk, unbatched = _as_batched(query_BNC, keys_BMC)
    _check_topk(k, kk.shape[1])
    weights, index = _topk(q, kk, k, temperature, kind, mask_BNM)
    return (weights.squeeze(0), index.squeeze(0)) if unbatched else (weights, index)


def _chunk_mask(
    mask_BNM: torch.Tensor | None, mask_fn: MaskFn | None, start: int, stop: int
) -> torch.Tensor | None:
    if mask_fn is not None:
        return mask_fn(start, stop)
    if mask_BNM is None:
        return None
    # A mask may broadcast over N (size 1): only slice a real N axis.
    return mask_BNM if mask_BNM.shape[-2] == 1 else mask_BNM[..., start:stop, :]


def _topk_chunk(
    query_BnC: torch.Tensor,
    keys_BMC: torch.Tensor,
    *,
    k: int,
    temperature: Temperature,
    kind: str,
    mask_BNM: torch.Tensor | None,
    mask_fn: MaskFn | None,
    start: int,
    stop: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    # The mask is built inside so that recomputation rebuilds it instead of keeping every chunk's mask.
    return _topk(query_BnC, keys_BMC, k, temperature, kind, _chunk_mask(mask_BNM, mask_fn, start, stop))


def _snn_chunk(
    query_BnC: torch.Tensor,
    keys_BMC: torch.Tensor,
    values_BMD: torch.Tensor,
    *,
    temperature: Temperature,
    kind: str,
) -> torch.Tensor:
    return _soft_nn(query_BnC, keys_BMC, values_BMD, temperature, kind)[0]


def _needs_recompute(recompute: bool, *tensors: object) -> bool:
    return (
        recompute
        and torch.is_grad_enabled()
        and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)
    )


def _chunk_bounds(n: int, chunk_size: int) -> Sequence[tuple[int, int]]:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def chunked_topk_affinity(
    query_BNC: torch.Tensor,
    keys_BMC: torch.Tensor,
    k: int,
    temperature: Temperature,
    kind: SimilarityKind = "dot",
    mask_BNM: torch.Tensor | None = None,
    *,
    chunk_size: int,
    mask_fn: MaskFn | None = None,
    recompute: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`topk_affinity` over chunks of `chunk_size` query rows: same result, peak memory O(B chunk M)
    instead of O(B N M).

    mask_fn(start, stop) -> bool mask broadcastable to [B, stop - start, M] (or None) builds each chunk's
    mask on demand (see `window_mask_fn`), so no [N, M] mask is ever held; give mask_fn or mask_BNM, not
    both. With `recompute` and gradients on, each chunk is recomputed in backward (activation
    checkpointing) so training memory is bounded too.
    """
    if mask_BNM is not None and mask_fn is not None:
        raise ValueError("give mask_BNM or mask_fn, not both")
    q, kk, unbatched = _as_batched(query_BNC, keys_BMC)
    _check_topk(k, kk.shape[1])
    use_ckpt = _needs_recompute(recompute, q, kk, temperature)
    weights, index = [], []
    for start, stop in _chunk_bounds(q.shape[1], chunk_size):
        kwargs = dict(k=k, temperature=temperature, kind=kind, mask_BNM=mask_BNM, mask_fn=mask_fn)
        q_chunk = q[:, start:stop]
        if use_ckpt:
            w, i = checkpoint(_topk_chunk, q_chunk, kk, start=start, stop=stop, use_reentrant=False, **kwargs)
        else:
            w, i = _topk_chunk(q_chunk, kk, start=start, stop=stop, **kwargs)
        weights.append(w)
        index.append(i)
    weights_BNK, index_BNK = torch.cat(weights, dim=1), torch.cat(index, dim=1)
    return (weights_BNK.squeeze(0), index_BNK.squeeze(0)) if unbatched else (weights_BNK, index_BNK)


def chunked_soft_nearest_neighbour(
    query_BNC: torch.Tensor,
    keys_BMC: torch.Tensor,
    temperature: Temperature,
    kind: SimilarityKind = "dot",
    *,
    chunk_size: int,
    values_BMD: torch.Tensor | None = None,
    recompute: bool = True,
) -> torch.Tensor:
    """The soft nearest neighbour (softmax-weighted sum of values over all keys) over chunks of query
    rows: same result as `soft_nearest_neighbour(...)[0]`, peak memory O(B chunk M). The full affinity
    is never held, so only the weighted sum [B, N, D] is returned. `recompute`: as in
    `chunked_topk_affinity`."""
    q, kk, unbatched = _as_batched(query_BNC, keys_BMC)
    v = _batched_values(values_BMD, kk, unbatched)
    use_ckpt = _needs_recompute(recompute, q, kk, v, temperature)
    outs = []
    for start, stop in _chunk_bounds(q.shape[1], chunk_size):
        q_chunk = q[:, start:stop]
        if use_ckpt:
            outs.append(
                checkpoint(
                    _snn_chunk, q_chunk, kk, v, temperature=temperature, kind=kind, use_reentrant=False
                )
            )
        else:
            outs.append(_snn_chunk(q_chunk, kk, v, temperature=temperature, kind=kind))
    nn_BND = torch.cat(outs, dim=1)
    return nn_BND.squeeze(0) if unbatched else nn_BND


def propagate(weights_BNK: torch.Tensor, index_BNK: torch.Tensor, values_BMD: torch.Tensor) -> torch.Tensor:
    """Label propagation: out[b, n] = sum_k weights[b, n, k] * values[b, index[b, n, k]] -> [B, N, D].

    Unbatched [N, K], [N, K], [M, D] -> [N, D] works too. Computed in the promoted dtype of weights and
    values (bf16 weights with fp32 labels give fp32).
    """
    unbatched = values_BMD.dim() == 2
    if unbatched:
        weights_BNK, index_BNK, values_BMD = weights_BNK[None], index_BNK[None], values_BMD[None]
    if weights_BNK.shape != index_BNK.shape or weights_BNK.shape[0] != values_BMD.shape[0]:
        raise ValueError(
            f"weights {list(weights_BNK.shape)}, index {list(index_BNK.shape)} and values "
            f"{list(values_BMD.shape)} must share B (and weights/index their shape)"
        )
    B, M, D = values_BMD.shape
    dtype = torch.promote_types(weights_BNK.dtype, values_BMD.dtype)
    # One flat gather over B*M rows instead of a per-batch loop.
    offsets_B11 = (torch.arange(B, device=index_BNK.device) * M).view(B, 1, 1)
    gathered_BNKD = values_BMD.reshape(B * M, D).to(dtype)[index_BNK + offsets_B11]
    out_BND = torch.matmul(weights_BNK.to(dtype).unsqueeze(-2), gathered_BNKD).squeeze(-2)
    return out_BND.squeeze(0) if unbatched else out_BND


def _window_rows(
    h: int, w: int, radius: float, start: int, stop: int, device: torch.device | str | None
) -> torch.Tensor:
    rows = torch.arange(start, stop, device=device)
    cols = torch.arange(h * w, device=device)
    dy = rows.div(w, rounding_mode="floor")[:, None] - cols.div(w, rounding_mode="floor")[None]
    dx = (rows % w)[:, None] - (cols % w)[None]
    return dy * dy + dx * dx <= radius * radius


def local_window_mask(
    h: int, w: int, radius: float, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """bool [h*w, h*w]: entry (q, m) is True when key cell m lies within `radius` cells (Euclidean,
    inclusive) of query cell q. Cells are numbered row-major (y * w + x)."""
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    return _window_rows(h, w, radius, 0, h * w, device)


def window_mask_fn(
    h: int,
    w: int,
    radius: float,
    *,
    frames: int = 1,
    unrestricted_frames: Sequence[int] = (),
    device: torch.device | str | None = None,
) -> MaskFn:
    """A `mask_fn` for the chunked ops: queries are the h*w cells of one frame, keys are `frames`
    frames of h*w cells laid out frame-major (M = frames * h * w). Keys of each frame are limited to
    the local window of `local_window_mask`, except in `unrestricted_frames` (e.g. the first frame).
    The mask of rows [start, stop) is built on demand: bool [1, stop - start, M]."""
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    for f in unrestricted_frames:
        if not 0 <= f < frames:
            raise ValueError(f"unrestricted frame {f} is outside 0..{frames - 1}")
    return _WindowMask(h, w, radius, frames, tuple(unrestricted_frames), device)


class _WindowMask:
    """Callable mask builder (a class, not a closure, so it pickles and prints its settings)."""

    def __init__(
        self,
        h: int,
        w: int,
        radius: float,
        frames: int,
        free: tuple[int, ...],
        device: torch.device | str | None,
    ) -> None:
        self.h, self.w, self.radius, self.frames, self.free, self.device = h, w, radius, frames, free, device

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        hw = self.h * self.w
        mask = _window_rows(self.h, self.w, self.radius, start, stop, self.device).repeat(1, self.frames)
        for f in self.free:
            mask[:, f * hw : (f + 1) * hw] = True
        return mask.unsqueeze(0)

    def __repr__(self) -> str:
        return (
            f"window_mask_fn(h={self.h}, w={self.w}, radius={self.radius}, frames={self.frames}, "
            f"unrestricted_frames={self.free})"
        )


def local_topk_affinity(
    query_hwC: torch.Tensor,
    free_keys_MC: torch.Tensor,
    local_keys_ShwC: torch.Tensor,
    k: int,
    temperature: Temperature,
    radius: float,
    kind: SimilarityKind = "dot",
    *,
    tile: int = 12,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k affinity of one frame's cells over free keys (all allowed) and S frames of local keys,
    each local key allowed only within `radius` cells (Euclidean, inclusive) of the query cell.

    The same result as `chunked_topk_affinity(query, cat([free, local]), ..., mask_fn=window_mask_fn(h,
    w, radius, frames=1 + S, unrestricted_frames=(0,)))` when the free keys are one frame (M = h*w),
    up to the order of exactly tied picks. Indices point into that concatenation: [0, M) the free keys,
    M + s*h*w + y*w + x local frame s's cell (y, x). Returns (weights [N, K] in the query's dtype, rows
    summing to 1; index [N, K] int64), N = h*w, sorted by similarity.

    Why: the full op scores every query against every local key and then masks most of them away (a
    radius of 12 keeps 437 of a 480p frame's 6,420 cells). Here each `tile` x `tile` block of queries
    is scored only against the local keys within reach of the block, so the work on local frames
    falls from S*h*w to S*(tile + 2*radius)^2 keys per query. Peak memory is one tile's scores:
    tile^2 x (M + S*(tile + 2*radius)^2) entries. No gradients are kept (inference only).
    """
    if query_hwC.dim() != 3 or local_keys_ShwC.dim() != 4 or free_keys_MC.dim() != 2:
        raise ValueError(
            f"expected query [h, w, C], free keys [M, C] and local keys [S, h, w, C]; got "
            f"{list(query_hwC.shape)}, {list(free_keys_MC.shape)} and {list(local_keys_ShwC.shape)}"
        )
    h, w, C = query_hwC.shape
    S = local_keys_ShwC.shape[0]
    if local_keys_ShwC.shape[1:3] != (h, w):
        raise ValueError(f"local keys {list(local_keys_ShwC.shape)} must be on the query grid {h}x{w}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    M0 = free_keys_MC.shape[0]
    _check_topk(k, M0 + S * h * w)
    reach = math.floor(radius)
    if reach >= max(h, w) - 1:  # every cell is within reach of every other: one tile, nothing to skip
        tile = max(h, w)
    device = query_hwC.device
    free_1MC = free_keys_MC.unsqueeze(0)
    free_columns = torch.arange(M0, device=device)
    local_frame_start = M0 + torch.arange(S, device=device) * (h * w)
    weights_NK = torch.empty(h, w, k, dtype=query_hwC.dtype, device=device)
    index_NK = torch.empty(h, w, k, dtype=torch.long, device=device)
    with torch.no_grad():
        for y0 in range(0, h, tile):
            y1 = min(y0 + tile, h)
            ry0, ry1 = max(0, y0 - reach), min(h, y1 + reach)
            for x0 in range(0, w, tile):
                x1 = min(x0 + tile, w)
                rx0, rx1 = max(0, x0 - reach), min(w, x1 + reach)
                q_1nC = query_hwC[y0:y1, x0:x1].reshape(1, -1, C)
                region_1mC = local_keys_ShwC[:, ry0:ry1, rx0:rx1].reshape(1, -1, C)
                qy, qx = _grid_cells(y0, y1, x0, x1, device)
                ky, kx = _grid_cells(ry0, ry1, rx0, rx1, device)
                dy, dx = qy[:, None] - ky[None], qx[:, None] - kx[None]
                # The same comparison as `_window_rows`, so both ops agree on every boundary cell.
                near_nr = dy * dy + dx * dx <= radius * radius
                n, m = near_nr.shape
                local_nSm = _similarity(q_1nC, region_1mC, kind)[0].view(n, S, m)
                local_nSm = local_nSm.masked_fill(~near_nr[:, None, :], float("-inf"))
                sim_n_ = torch.cat([_similarity(q_1nC, free_1MC, kind)[0], local_nSm.flatten(1)], dim=1)
                picks = min(k, sim_n_.shape[1])
                vals_nK, col_nK = sim_n_.topk(picks, dim=-1)
                # Region columns -> indices into [free; local frames], frame-major.
                columns = torch.cat(
                    [free_columns, (local_frame_start[:, None] + (ky * w + kx)[None]).flatten()]
                )
                idx_nK = columns[col_nK]
                if picks < k:  # fewer candidates than k near the grid's corner: extra picks weigh 0
                    pad = k - picks
                    vals_nK = F.pad(vals_nK, (0, pad), value=float("-inf"))
                    idx_nK = F.pad(idx_nK, (0, pad), value=0)
                wts = _topk_softmax(vals_nK, temperature).to(query_hwC.dtype)
                weights_NK[y0:y1, x0:x1] = wts.view(y1 - y0, x1 - x0, k)
                index_NK[y0:y1, x0:x1] = idx_nK.view(y1 - y0, x1 - x0, k)
    return weights_NK.view(h * w, k), index_NK.view(h * w, k)


def _grid_cells(
    y0: int, y1: int, x0: int, x1: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of every cell of the block [y0, y1) x [x0, x1), row-major."""
    ys = torch.arange(y0, y1, device=device)
    xs = torch.arange(x0, x1, device=device)
    return ys.repeat_interleave(x1 - x0), xs.repeat(y1 - y0)
