"""Label-propagation metrics with the DAVIS toolkit's and the CRW/UVC JHMDB script's exact semantics.

J (region similarity) and F (boundary accuracy) follow the DAVIS-2017 evaluation toolkit
(`davis2017-evaluation`, `metrics.py`): J is the IoU, 1 when both masks are empty; F matches the
one-pixel boundaries of `seg2bmap` within a disk of radius ceil(0.008 x image diagonal). A sequence is
scored on its frames without the first (given) and the last; J&F = (J + F) / 2. "Overall" is the mean
over every object of every sequence, as the DAVIS-2017 benchmark's global score.

PCK follows the JHMDB script of CRW and UVC (`eval_pck.py`): the distance between predicted and
ground-truth joint divided by a per-frame size of the ground-truth pose box, counted correct when
<= threshold; the first frame is excluded; PCK is computed per joint over all frames (of all clips)
and then averaged over joints.

All scores are fractions in [0, 1] (papers print them x 100).

Legend: H x W image, T frames, O objects, J joints.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

BOUND_TH = 0.008  # DAVIS toolkit: boundary tolerance as a fraction of the image diagonal
PCK_THRESHOLDS = (0.1, 0.2)  # CRW / UVC report PCK@0.1 and PCK@0.2
BoxKind = Literal["diag0.6", "max_side"]


def jaccard(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """Region IoU of two binary masks [H, W]; 1 when both are empty (DAVIS toolkit)."""
    pred, gt = np.asarray(pred_mask, bool), np.asarray(gt_mask, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary [H, W] of a binary mask, as the DAVIS toolkit's `_seg2bmap`.

    A pixel is boundary when it differs from its east, south or south-east neighbour; the last row
    compares with east only, the last column with south only, and the corner pixel is never boundary.
    """
    seg = np.asarray(mask, bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _dilate_disk(boundary: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation by skimage's disk(radius) (offsets with dy^2 + dx^2 <= radius^2).

    Same pixels as the toolkit's cv2.dilate with that disk, computed through the exact Euclidean
    distance transform, which costs O(HW) instead of O(HW r^2).
    """
    if not boundary.any():
        return np.zeros_like(boundary)
    dist = ndimage.distance_transform_edt(~boundary)
    return dist * dist <= radius * radius


def boundary_tolerance(shape: Sequence[int], bound_th: float = BOUND_TH) -> float:
    """Disk radius in pixels: bound_th itself when >= 1, else ceil(bound_th x image diagonal)."""
    return bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(shape[0], shape[1]))


def f_measure(pred_mask: np.ndarray, gt_mask: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure of two binary masks [H, W], the DAVIS toolkit's `f_measure`.

    Both boundaries empty -> 1; exactly one empty -> 0 (precision or recall is 0).
    """
    pred, gt = np.asarray(pred_mask, bool), np.asarray(gt_mask, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: prediction {pred.shape}, ground truth {gt.shape}")
    radius = boundary_tolerance(pred.shape, bound_th)
    pred_b, gt_b = seg2bmap(pred), seg2bmap(gt)
    n_pred, n_gt = np.count_nonzero(pred_b), np.count_nonzero(gt_b)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    precision = np.count_nonzero(pred_b & _dilate_disk(gt_b, radius)) / n_pred
    recall = np.count_nonzero(gt_b & _dilate_disk(pred_b, radius)) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def frame_scores(
    pred_ids: np.ndarray, gt_ids: np.ndarray, num_objects: int, bound_th: float = BOUND_TH
) -> tuple[np.ndarray, np.ndarray]:
    """J and F of objects 1..num_objects on one frame of id maps [H, W] -> (J [O], F [O])."""
    j_O = np.empty(num_objects)
    f_O = np.empty(num_objects)
    for o in range(num_objects):
        pred, gt = pred_ids == o + 1, gt_ids == o + 1
        j_O[o] = jaccard(pred, gt)
        f_O[o] = f_measure(pred, gt, bound_th)
    return j_O, f_O


@dataclass(frozen=True)
class SequenceScores:
    """Per-object means over the scored frames of one sequence."""

    J: np.ndarray  # [O]
    F: np.ndarray  # [O]
    scored_frames: int

    @classmethod
    def from_frames(cls, j_TO: np.ndarray, f_TO: np.ndarray) -> SequenceScores:
        """Per-frame scores of ALL T frames [T, O] -> means over frames 1..T-2 (DAVIS drops the first
        and the last frame)."""
        j_TO, f_TO = np.asarray(j_TO, float), np.asarray(f_TO, float)
        if j_TO.shape != f_TO.shape or j_TO.ndim != 2:
            raise ValueError(f"expected two [T, O] arrays, got {j_TO.shape} and {f_TO.shape}")
        if j_TO.shape[0] < 3:
            raise ValueError(
                f"a sequence needs >= 3 frames to be scored (first and last are excluded), "
                f"got {j_TO.shape[0]}"
            )
        inner = slice(1, -1)
        return cls(
            J=np.nanmean(j_TO[inner], 0), F=np.nanmean(f_TO[inner], 0), scored_frames=j_TO.shape[0] - 2
        )


def davis_scores(
    pred_seq: Iterable[np.ndarray],
    gt_seq: Iterable[np.ndarray],
    num_objects: int,
    bound_th: float = BOUND_TH,
) -> SequenceScores:
    """Per-object J and F means of one sequence of id maps (all T frames, first and last excluded
    from the means). Consumes the two iterables frame by frame, so they may be lazy readers."""
    j_rows, f_rows = [], []
    for t, (pred, gt) in enumerate(zip(pred_seq, gt_seq, strict=True)):
        if pred.shape != gt.shape:
            raise ValueError(f"frame {t}: prediction {pred.shape} and ground truth {gt.shape} differ")
        j_O, f_O = frame_scores(pred, gt, num_objects, bound_th)
        j_rows.append(j_O)
        f_rows.append(f_O)
    return SequenceScores.from_frames(
        np.array(j_rows).reshape(-1, num_objects), np.array(f_rows).reshape(-1, num_objects)
    )


def summarise(scores: Mapping[str, SequenceScores]) -> dict:
    """Per sequence (mean over its objects) and overall (mean over all objects of all sequences):
    {"sequences": {name: {"J", "F", "J&F", "objects": [{"J", "F"}...]}}, "overall": {"J", "F", "J&F"}}."""
    if not scores:
        raise ValueError("no sequences to summarise")
    sequences = {}
    for name, s in scores.items():
        j, f = float(np.mean(s.J)), float(np.mean(s.F))
        sequences[name] = {
            "J": j,
            "F": f,
            "J&F": (j + f) / 2,
            "objects": [{"J": float(a), "F": float(b)} for a, b in zip(s.J, s.F, strict=True)],
        }
    all_j = np.concatenate([s.J for s in scores.values()])
    all_f = np.concatenate([s.F for s in scores.values()])
    j, f = float(all_j.mean()), float(all_f.mean())
    return {"sequences": sequences, "overall": {"J": j, "F": f, "J&F": (j + f) / 2}}


def pose_box_size(gt_xy: np.ndarray, kind: BoxKind = "diag0.6") -> np.ndarray:
    """Size of the ground-truth pose box per frame, [T, J, 2] -> [T] (joints with NaN ignored).

    "diag0.6": 0.6 x the diagonal of the joints' bounding box, what CRW's and UVC's `eval_pck.py`
    compute (their max-side line is commented out), so the published PCK numbers use it.
    "max_side": max(width, height) of that box.
    """
    xy = np.asarray(gt_xy, float)
    lo, hi = np.nanmin(xy, axis=1), np.nanmax(xy, axis=1)  # [T, 2]
    if kind == "diag0.6":
        return 0.6 * np.hypot(hi[:, 0] - lo[:, 0], hi[:, 1] - lo[:, 1])
    if kind == "max_side":
        return np.max(hi - lo, axis=1)
    raise ValueError(f"pose box kind {kind!r} is unknown; use 'diag0.6' or 'max_side'")


def normalised_distances(pred_xy: np.ndarray, gt_xy: np.ndarray, bbox_sizes: np.ndarray) -> np.ndarray:
    """|pred - gt| / box size for frames 1..T-1 -> [T-1, J]; NaN where the prediction is missing (NaN)."""
    pred, gt = np.asarray(pred_xy, float), np.asarray(gt_xy, float)
    sizes = np.asarray(bbox_sizes, float)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"expected [T, J, 2] predictions and ground truth, got {pred.shape}, {gt.shape}")
    if sizes.shape != (pred.shape[0],):
        raise ValueError(f"bbox_sizes must be [T] = [{pred.shape[0]}], got {list(sizes.shape)}")
    dist_TJ = np.linalg.norm(pred - gt, axis=-1) / sizes[:, None]
    return dist_TJ[1:]


def pck_from_distances(
    dists: Sequence[np.ndarray], thresholds: Sequence[float] = PCK_THRESHOLDS
) -> dict[float, float]:
    """PCK from normalised distances of one or more clips ([T_i, J] each): per joint, the fraction of
    its (non-NaN) distances <= threshold over all clips; then the mean over joints."""
    dist_TJ = np.concatenate([np.asarray(d, float) for d in dists], axis=0)
    valid_TJ = ~np.isnan(dist_TJ)
    counts_J = valid_TJ.sum(0)
    if not (counts_J > 0).any():
        raise ValueError("no valid joint predictions to score")
    out = {}
    for thr in thresholds:
        hits_J = ((dist_TJ <= thr) & valid_TJ).sum(0)
        out[float(thr)] = float(np.mean(hits_J[counts_J > 0] / counts_J[counts_J > 0]))
    return out


def pck(
    pred_xy: np.ndarray,
    gt_xy: np.ndarray,
    bbox_sizes: np.ndarray,
    thresholds: Sequence[float] = PCK_THRESHOLDS,
) -> dict[float, float]:
    """PCK of one clip: [T, J, 2] predicted and true (x, y), box sizes [T] (see `pose_box_size`),
    first frame excluded -> {threshold: PCK}."""
    return pck_from_distances([normalised_distances(pred_xy, gt_xy, bbox_sizes)], thresholds)
