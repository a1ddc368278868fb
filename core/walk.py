"""The palindrome random walk of the contrastive random walk (CRW; Jabri, Owens and Efros, NeurIPS 2020):
a frame-level cycle-consistency signal over nodes (patches) of consecutive frames.

Legend: B clips, T frames, N nodes per frame, C channels.

Transitions between consecutive frames are softmax(similarity / temperature) over the next frame's
nodes; a walk from frame 0 to frame k and back (a palindrome) should return every node to itself, so
the loss is the cross-entropy of the round trip's distribution against the identity. With edge dropout
(some transitions removed at random) the walk cannot rely on one path, which spreads the signal over
similar nodes (CRW's "dropedge").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_LOG_EPS = 1e-20  # CRW's floor inside the log of the round-trip probability


def _transitions(
    a_BNC: torch.Tensor, b_BNC: torch.Tensor, temperature: float, edge_dropout: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward a -> b and backward b -> a transition matrices [B, N, N] (rows sum to 1), fp32 or wider.

    Each direction draws its own dropped edges (CRW drops edges of both directions independently).
    """
    work = torch.promote_types(a_BNC.dtype, torch.float32)
    sim_BNN = torch.bmm(a_BNC.to(work), b_BNC.to(work).transpose(1, 2)) / temperature
    pair = torch.stack([sim_BNN, sim_BNN.transpose(1, 2)])
    if edge_dropout > 0:
        # A large finite negative rather than -inf (CRW's -1e20): a row that lost every edge becomes
        # uniform instead of NaN.
        pair = pair.masked_fill(torch.rand_like(pair) < edge_dropout, -1e20)
    forward, backward = torch.softmax(pair, dim=-1).unbind(0)
    return forward, backward


def palindrome_walk_loss(
    nodes_BTNC: torch.Tensor, temperature: float, edge_dropout: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, round-trip accuracy), each averaged over the palindromes 0 -> k -> 0 for k = 1..T-1.

    nodes: [B, T, N, C], L2-normalised node embeddings of T frames in time order. The loss is the mean
    over palindromes, clips and start nodes of -log P(return to the start node); the accuracy (no
    gradient) is the share of start nodes whose most probable end node is themselves.
    Computed in fp32 (fp64 inputs: fp64) whatever the input dtype (products of T softmax matrices).
    """
    if nodes_BTNC.dim() != 4 or nodes_BTNC.shape[1] < 2:
        raise ValueError(f"nodes must be [B, T >= 2, N, C], got {list(nodes_BTNC.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 <= edge_dropout < 1:
        raise ValueError(f"edge_dropout must be in [0, 1), got {edge_dropout}")
    B, T, N, _ = nodes_BTNC.shape
    target_BN = torch.arange(N, device=nodes_BTNC.device).expand(B, N)
    with torch.autocast(nodes_BTNC.device.type, enabled=False):
        out_and_back = [
            _transitions(nodes_BTNC[:, t], nodes_BTNC[:, t + 1], temperature, edge_dropout)
            for t in range(T - 1)
        ]
        losses, hits = [], []
        there = None  # frame 0 -> frame k
        for k in range(1, T):
            forward, _ = out_and_back[k - 1]
            there = forward if there is None else torch.bmm(there, forward)
            trip = there
            for t in range(k - 1, -1, -1):  # frame k -> frame 0
                trip = torch.bmm(trip, out_and_back[t][1])
            log_p_BNN = torch.log(trip + _LOG_EPS)
            losses.append(F.nll_loss(log_p_BNN.flatten(0, 1), target_BN.flatten()))
            hits.append((trip.detach().argmax(-1) == target_BN).float().mean())
    return torch.stack(losses).mean(), torch.stack(hits).mean()
