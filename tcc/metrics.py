"""TCC's evaluation metrics on frozen per-frame embeddings, as pure functions (numpy/scipy/sklearn).

Each follows the official protocol (tcc/evaluation/*.py upstream); docs/tcc-loss.md lists them.
Embeddings of one video are [T, D] (numpy arrays or tensors; tensors are copied to the host, so
call these at evaluation time only), per-frame phase labels are [T] integers 0..K-1 in time order.

Shape letters: T frames of a video, D embedding size, M query frames, K candidate frames,
E key events (phase boundaries, K_classes - 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist
from scipy.stats import kendalltau
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.svm import SVC

ArrayLike = Any  # np.ndarray, torch.Tensor or nested lists


def _np(x: ArrayLike) -> np.ndarray:
    """A float64/int numpy copy of an array or tensor (tensors leave the device here)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def nearest_neighbours(
    query_MD: ArrayLike, candidates_KD: ArrayLike, distance: str = "sqeuclidean"
) -> np.ndarray:
    """Index of each query frame's nearest candidate frame under a scipy `cdist` metric: [M] ints."""
    dists_MK = cdist(_np(query_MD).astype(np.float64), _np(candidates_KD).astype(np.float64), distance)
    return np.argmin(dists_MK, axis=1)


def align_to_reference(
    embs_list: Sequence[ArrayLike], reference: int = 0, distance: str = "sqeuclidean"
) -> list[np.ndarray]:
    """For each video, the frame matching each reference frame: a list of [T_ref] index arrays.

    Showing frame `aligned[v][r]` of every video v at time r plays all videos in step with the
    reference (the reference maps to itself).
    """
    if not 0 <= reference < len(embs_list):
        raise ValueError(f"reference must index one of the {len(embs_list)} videos, got {reference}")
    ref_TD = embs_list[reference]
    return [nearest_neighbours(ref_TD, embs_TD, distance) for embs_TD in embs_list]


def kendalls_tau(embs_list: Sequence[ArrayLike], stride: int = 1, distance: str = "sqeuclidean") -> float:
    """Mean Kendall's tau of nearest-neighbour alignment over every ordered pair of distinct videos.

    Upstream `_get_kendalls_tau`: both videos are strided (query and candidates), each query frame
    takes its nearest candidate, tau of (query index, match index); pairs with an undefined tau (a
    constant match) are dropped. Upstream strides: 2 on Pouring, 5 on Penn Action.
    """
    if len(embs_list) < 2:
        raise ValueError(f"kendalls_tau needs at least 2 videos, got {len(embs_list)}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    strided = [_np(e)[::stride] for e in embs_list]
    taus = []
    for i, query_MD in enumerate(strided):
        for j, cand_KD in enumerate(strided):
            if i != j:
                nns_M = nearest_neighbours(query_MD, cand_KD, distance)
                taus.append(kendalltau(np.arange(len(nns_M)), nns_M).statistic)
    taus_arr = np.asarray(taus, dtype=np.float64)
    taus_arr = taus_arr[~np.isnan(taus_arr)]
    return float(np.mean(taus_arr)) if taus_arr.size else float("nan")


def _videos_used(num_videos: int, fraction: float, seed: int | None) -> np.ndarray:
    """Which training videos a fraction keeps: max(1, int(fraction x count)) of them.

    seed None takes the first ones in the given order (upstream); an int takes a seeded random subset.
    """
    count = max(1, int(fraction * num_videos))
    order = np.arange(num_videos) if seed is None else np.random.default_rng(seed).permutation(num_videos)
    return order[:count]


def _build_classifier(classifier: str) -> Any:
    # Upstream's settings (tcc/evaluation/classification.py): default RBF SVC, one-vs-one decisions;
    # multinomial lbfgs logistic regression run to convergence.
    if classifier == "svm":
        return SVC(decision_function_shape="ovo")
    if classifier == "linear":
        return LogisticRegression(max_iter=100000, solver="lbfgs")
    raise ValueError(f"classifier must be 'svm' or 'linear', got {classifier!r}")


def phase_classification(
    train_embs: Sequence[ArrayLike],
    train_labels: Sequence[ArrayLike],
    val_embs: Sequence[ArrayLike],
    val_labels: Sequence[ArrayLike],
    fractions: Sequence[float] = (0.1, 0.5, 1.0),
    classifier: str = "svm",
    seed: int | None = 0,
) -> dict[float, float]:
    """Per-frame phase accuracy on the validation videos of a classifier trained on a fraction of the
    training videos: {fraction: accuracy}. Frames of the kept videos are pooled (upstream).
    """
    _check_pairs(train_embs, train_labels, "train")
    _check_pairs(val_embs, val_labels, "val")
    val_X = np.concatenate([_np(e) for e in val_embs])
    val_y = np.concatenate([_np(y) for y in val_labels])
    scores = {}
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise ValueError(f"fractions must lie in (0, 1], got {fraction}")
        used = _videos_used(len(train_embs), fraction, seed)
        X = np.concatenate([_np(train_embs[v]) for v in used])
        y = np.concatenate([_np(train_labels[v]) for v in used])
        model = _build_classifier(classifier).fit(X, y)
        scores[fraction] = float(model.score(val_X, val_y))
    return scores


def event_frame(labels_T: ArrayLike, event: int) -> int:
    """The frame of key event `event`: the last frame of phase `event`.

    Upstream (later task_utils.py) when the phase is missing: the first frame of a later phase,
    or the last frame when none follows. (Upstream's loop starts at frame 1, so for a video that
    starts past the phase it says 1; here it is 0.)
    """
    labels = _np(labels_T)
    inside = np.flatnonzero(labels == event)
    if inside.size:
        return int(inside[-1])
    later = np.flatnonzero(labels > event)
    return int(later[0]) if later.size else len(labels) - 1


def progression_targets(labels_T: ArrayLike, num_classes: int) -> np.ndarray:
    """Per key event, (frame - event frame) / video length: [T, E] with E = num_classes - 1."""
    labels = _np(labels_T)
    length = len(labels)
    frames_T = np.arange(length, dtype=np.float64)
    return np.stack([(frames_T - event_frame(labels, e)) / length for e in range(num_classes - 1)], axis=1)


def phase_progression(
    train_embs: Sequence[ArrayLike],
    train_labels: Sequence[ArrayLike],
    val_embs: Sequence[ArrayLike],
    val_labels: Sequence[ArrayLike],
    num_classes: int | None = None,
) -> float:
    """Mean validation R^2 over key events of one linear regression per event from the embeddings.

    Upstream `event_completion.py` (VectorRegression of LinearRegression, all training videos).
    `num_classes` defaults to 1 + the largest label seen.
    """
    _check_pairs(train_embs, train_labels, "train")
    _check_pairs(val_embs, val_labels, "val")
    if num_classes is None:
        num_classes = 1 + int(max(_np(y).max() for y in (*train_labels, *val_labels)))
    if num_classes < 2:
        raise ValueError(f"phase_progression needs at least 2 phases (one key event), got {num_classes}")
    X = np.concatenate([_np(e) for e in train_embs])
    Y_TE = np.concatenate([progression_targets(y, num_classes) for y in train_labels])
    val_X = np.concatenate([_np(e) for e in val_embs])
    val_Y_TE = np.concatenate([progression_targets(y, num_classes) for y in val_labels])
    r2 = [LinearRegression().fit(X, Y_TE[:, e]).score(val_X, val_Y_TE[:, e]) for e in range(num_classes - 1)]
    return float(np.mean(r2))


def alignment_error(
    embs_a: ArrayLike,
    embs_b: ArrayLike,
    canonical_a: ArrayLike,
    canonical_b: ArrayLike,
    distance: str = "sqeuclidean",
) -> float:
    """Mean |canonical_b[nn(i)] - canonical_a[i]| over the frames i of video a.

    nn(i) is frame i's nearest neighbour in video b; canonical_* [T] place each frame on a common
    time axis (e.g. b is a known time warp of a), so a perfect alignment scores 0.
    """
    canon_a, canon_b = _np(canonical_a).astype(np.float64), _np(canonical_b).astype(np.float64)
    if len(canon_a) != len(_np(embs_a)) or len(canon_b) != len(_np(embs_b)):
        raise ValueError("canonical_a and canonical_b need one time per frame of embs_a and embs_b")
    nns = nearest_neighbours(embs_a, embs_b, distance)
    return float(np.mean(np.abs(canon_b[nns] - canon_a)))


def _check_pairs(embs: Sequence[ArrayLike], labels: Sequence[ArrayLike], split: str) -> None:
    if len(embs) == 0 or len(embs) != len(labels):
        raise ValueError(f"{split}: need one label array per video and at least one video")
    for v, (e, y) in enumerate(zip(embs, labels, strict=True)):
        if len(_np(e)) != len(_np(y)):
            raise ValueError(f"{split} video {v}: {len(_np(e))} embeddings but {len(_np(y))} labels")
