"""DAVIS J / F and JHMDB PCK against hand-computed cases and naive loop references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cycletime import metrics


def _box(shape, rows, cols):
    m = np.zeros(shape, bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


def test_jaccard_hand_cases():
    gt = _box((10, 10), (4, 8), (4, 8))  # 16 px
    pred = _box((10, 10), (2, 6), (2, 6))  # 16 px, 2x2 overlap
    assert metrics.jaccard(pred, gt) == pytest.approx(4 / 28)
    assert metrics.jaccard(gt, gt) == 1.0
    empty = np.zeros((10, 10), bool)
    assert metrics.jaccard(empty, empty) == 1.0  # DAVIS toolkit: empty union -> 1
    assert metrics.jaccard(empty, gt) == 0.0
    assert metrics.jaccard(gt, empty) == 0.0


def test_seg2bmap_hand_case():
    seg = _box((6, 6), (1, 4), (1, 4))  # 3x3 square at rows/cols 1..3
    expected = {
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 3),
        (1, 0),
        (2, 0),
        (3, 0),
        (1, 3),
        (2, 3),
        (3, 1),
        (3, 2),
        (3, 3),
    }
    got = {tuple(int(v) for v in p) for p in np.argwhere(metrics.seg2bmap(seg))}
    assert got == expected


def test_seg2bmap_full_mask_has_no_boundary():
    # The toolkit's last-row / last-column rules: a mask covering the image has no boundary.
    assert not metrics.seg2bmap(np.ones((5, 7), bool)).any()
    edge = np.zeros((4, 4), bool)
    edge[3, :] = True  # the last row: compared with east only, the corner never counts
    assert {tuple(int(v) for v in p) for p in np.argwhere(metrics.seg2bmap(edge))} == {
        (2, 0), (2, 1), (2, 2), (2, 3)
    }  # fmt: skip


def test_boundary_tolerance_is_ceil_of_diagonal_fraction():
    assert metrics.boundary_tolerance((10, 10)) == 1  # ceil(0.008 * 14.1)
    assert metrics.boundary_tolerance((480, 854)) == 8  # ceil(0.008 * 979.6) at DAVIS 480p
    assert metrics.boundary_tolerance((10, 10), bound_th=3) == 3  # >= 1: pixels as given


def _pixel(r, c, shape=(10, 10)):
    m = np.zeros(shape, bool)
    m[r, c] = True
    return m


def test_f_measure_hand_cases():
    # A single pixel's boundary is the 2x2 block ending at it; on 10x10 the tolerance is 1 px.
    gt = _pixel(4, 4)
    assert metrics.f_measure(_pixel(4, 5), gt) == pytest.approx(1.0)  # every boundary pixel within 1
    assert metrics.f_measure(_pixel(4, 6), gt) == pytest.approx(0.5)  # half the pixels within 1: P = R = 0.5
    assert metrics.f_measure(_pixel(4, 7), gt) == 0.0  # P = R = 0
    assert metrics.f_measure(_pixel(5, 5), gt) == pytest.approx(
        2 * (3 / 4) * (3 / 4) / (3 / 2)
    )  # diagonal shift: 3 of 4 within the disk (the far corner is at sqrt(2) > 1)


def test_f_measure_empty_cases():
    empty, full = np.zeros((10, 10), bool), np.ones((10, 10), bool)
    obj = _box((10, 10), (2, 6), (2, 6))
    assert metrics.f_measure(empty, empty) == 1.0
    assert metrics.f_measure(full, empty) == 1.0  # both boundaries empty
    assert metrics.f_measure(empty, obj) == 0.0
    assert metrics.f_measure(obj, empty) == 0.0


def _naive_f(pred, gt, radius):
    """The toolkit's F with the disk dilation written as a loop over boundary pixels."""
    pb, gb = metrics.seg2bmap(pred), metrics.seg2bmap(gt)

    def dilate(b):
        out = np.zeros_like(b)
        r = math.ceil(radius)
        for y, x in np.argwhere(b):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    yy, xx = y + dy, x + dx
                    if dy * dy + dx * dx <= radius * radius and 0 <= yy < b.shape[0] and 0 <= xx < b.shape[1]:
                        out[yy, xx] = True
        return out

    n_p, n_g = pb.sum(), gb.sum()
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    p, r = (pb & dilate(gb)).sum() / n_p, (gb & dilate(pb)).sum() / n_g
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def test_f_measure_matches_naive_loop_on_random_blobs():
    rng = np.random.default_rng(0)
    for _ in range(5):
        pred = rng.random((30, 40)) < 0.3
        gt = rng.random((30, 40)) < 0.3
        for th in (0.008, 2, 3.5):
            radius = metrics.boundary_tolerance(pred.shape, th)
            assert metrics.f_measure(pred, gt, th) == pytest.approx(_naive_f(pred, gt, radius))


def test_davis_scores_exclude_first_and_last_frame():
    gt = [_box((10, 10), (4, 8), (4, 8)).astype(np.uint8) for _ in range(5)]
    wrong = np.zeros((10, 10), np.uint8)
    pred = [wrong, gt[1], gt[2], gt[3], wrong]
    s = metrics.davis_scores(pred, gt, num_objects=1)
    assert s.scored_frames == 3
    np.testing.assert_allclose(s.J, [1.0])
    np.testing.assert_allclose(s.F, [1.0])

    pred[2] = _box((10, 10), (2, 6), (2, 6)).astype(np.uint8)
    s = metrics.davis_scores(pred, gt, num_objects=1)
    np.testing.assert_allclose(s.J, [(1 + 4 / 28 + 1) / 3])


def test_davis_scores_per_object_and_absent_object():
    gt = np.zeros((3, 10, 10), np.uint8)
    gt[:, 1:4, 1:4] = 1
    gt[:, 6:9, 6:9] = 2
    pred = gt.copy()
    pred[1][pred[1] == 2] = 0  # object 2 missed on the middle frame
    s = metrics.davis_scores(pred, gt, num_objects=3)  # object 3 absent everywhere: J = F = 1
    np.testing.assert_allclose(s.J, [1.0, 0.0, 1.0])
    np.testing.assert_allclose(s.F, [1.0, 0.0, 1.0])


def test_davis_scores_needs_three_frames():
    with pytest.raises(ValueError, match=">= 3 frames"):
        metrics.davis_scores([np.zeros((4, 4), np.uint8)] * 2, [np.zeros((4, 4), np.uint8)] * 2, 1)


def test_summarise_overall_is_mean_over_all_objects():
    scores = {
        "a": metrics.SequenceScores(J=np.array([1.0]), F=np.array([0.5]), scored_frames=3),
        "b": metrics.SequenceScores(J=np.array([0.0, 0.5]), F=np.array([0.25, 0.25]), scored_frames=3),
    }
    out = metrics.summarise(scores)
    assert out["sequences"]["b"]["J"] == pytest.approx(0.25)
    assert out["sequences"]["b"]["J&F"] == pytest.approx((0.25 + 0.25) / 2)
    assert out["overall"]["J"] == pytest.approx(1.5 / 3)  # not the mean of sequence means (0.625)
    assert out["overall"]["F"] == pytest.approx(1.0 / 3)
    assert out["overall"]["J&F"] == pytest.approx((1.5 / 3 + 1.0 / 3) / 2)


def test_pose_box_size():
    gt = np.array([[[0.0, 0.0], [30.0, 40.0], [10.0, 5.0]]])  # one frame, box 30 x 40
    np.testing.assert_allclose(metrics.pose_box_size(gt), [0.6 * 50])
    np.testing.assert_allclose(metrics.pose_box_size(gt, "max_side"), [40])


def test_pck_hand_points():
    gt = np.tile(np.array([[0.0, 0.0], [30.0, 40.0]]), (3, 1, 1))  # T=3, J=2, box 0.6 * 50 = 30
    pred = gt.copy()
    pred[0] += 1000  # frame 0 is excluded
    pred[1, 0] += [2.9, 0]  # 0.0967: within 0.1
    pred[1, 1] += [3, 4]  # 5 / 30 = 0.167: within 0.2 only
    pred[2, 0] += [0, 7]  # 0.233: outside both
    pred[2, 1] = np.nan  # missing prediction: not counted
    boxes = metrics.pose_box_size(gt)
    out = metrics.pck(pred, gt, boxes)
    assert out[0.1] == pytest.approx((1 / 2 + 0 / 1) / 2)  # per joint, then mean over joints
    assert out[0.2] == pytest.approx((1 / 2 + 1 / 1) / 2)


def test_pck_pools_clips_per_joint():
    d1 = np.array([[0.05, 0.3]])
    d2 = np.array([[0.15, 0.05], [0.05, 0.05]])
    out = metrics.pck_from_distances([d1, d2], thresholds=(0.1,))
    assert out[0.1] == pytest.approx((2 / 3 + 2 / 3) / 2)
