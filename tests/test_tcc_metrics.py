"""TCC evaluation metrics: known answers, hand-computed values and literal loop references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from tcc.metrics import (
    align_to_reference,
    alignment_error,
    event_frame,
    kendalls_tau,
    nearest_neighbours,
    phase_classification,
    phase_progression,
    progression_targets,
)


def _trajectory(length: int, dim: int = 6, seed: int = 0) -> np.ndarray:
    """A smooth, non-self-intersecting curve: frame t's embedding is a function of t / length."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(3, dim))
    s = np.linspace(0.0, 1.0, length)[:, None]
    return np.hstack([s, s**2, np.sin(3 * s)]) @ basis + 5.0 * s * np.eye(1, dim)


def test_identical_videos_tau_one_and_zero_alignment_error() -> None:
    video = _trajectory(30)
    assert kendalls_tau([video, video, video]) == pytest.approx(1.0)
    t = np.arange(30.0)
    assert alignment_error(video, video, t, t) == 0.0
    assert all(np.array_equal(a, np.arange(30)) for a in align_to_reference([video, video]))


def test_reversed_video_tau_minus_one() -> None:
    video = _trajectory(25)
    assert kendalls_tau([video, video[::-1]]) == pytest.approx(-1.0)
    assert kendalls_tau([video, video[::-1]], stride=3) == pytest.approx(-1.0)


def test_tau_matches_loop_reference_with_stride_and_drops_nan() -> None:
    rng = np.random.default_rng(1)
    videos = [rng.normal(size=(n, 4)) for n in (11, 14, 9)]
    videos.append(np.zeros((10, 4)))  # constant matches to and from it: tau undefined, dropped
    taus = []
    for i, a in enumerate(videos):
        for j, b in enumerate(videos):
            if i != j:
                q, c = a[::2], b[::2]  # upstream strides both videos
                nns = [min(range(len(c)), key=lambda k, x=x: ((x - c[k]) ** 2).sum()) for x in q]
                taus.append(kendalltau(np.arange(len(nns)), nns).statistic)
    expected = np.nanmean(taus)
    assert np.isnan(taus).sum() == 6
    assert kendalls_tau(videos, stride=2) == pytest.approx(expected)
    assert kendalls_tau([torch.from_numpy(v) for v in videos], stride=2) == pytest.approx(expected)


def test_known_warp_alignment_error_by_hand() -> None:
    # Frames on a line at their canonical times; video b is a (quadratic) time warp of a.
    canon_a = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    canon_b = np.array([0.0, 0.25, 1.0, 2.25, 4.0])  # b's frame k shows canonical time k^2 / 4
    embs_a, embs_b = canon_a[:, None], canon_b[:, None]
    # nearest b frame of each a frame: 0->0, 1->2 (time 1), 2->3 (2.25: 0.25 < 1), 3->3 (2.25: 0.75 < 1), 4->4
    assert list(nearest_neighbours(embs_a, embs_b)) == [0, 2, 3, 3, 4]
    # errors |canon_b[nn] - canon_a|: 0, 0, 0.25, 0.75, 0 -> mean 0.2
    assert alignment_error(embs_a, embs_b, canon_a, canon_b) == pytest.approx(0.2)


def _phased_videos(lengths: list[int], seed: int, num_phases: int = 3) -> tuple[list, list]:
    """Videos whose frames sit at one well-separated point per phase (plus small noise)."""
    rng = np.random.default_rng(seed)
    centres = 10.0 * np.eye(num_phases, 5)
    embs, labels = [], []
    for n in lengths:
        cuts = np.sort(rng.choice(np.arange(2, n - 1), num_phases - 1, replace=False))
        y = np.searchsorted(cuts, np.arange(n), side="right")
        embs.append(centres[y] + 0.1 * rng.normal(size=(n, 5)))
        labels.append(y)
    return embs, labels


@pytest.mark.parametrize("classifier", ["svm", "linear"])
def test_phase_classification_separable(classifier: str) -> None:
    train_e, train_y = _phased_videos([20, 24, 18, 22, 30, 26, 21, 19, 25, 23], seed=0)
    val_e, val_y = _phased_videos([22, 27, 20], seed=1)
    scores = phase_classification(train_e, train_y, val_e, val_y, classifier=classifier)
    assert set(scores) == {0.1, 0.5, 1.0}
    assert all(acc == pytest.approx(1.0) for acc in scores.values())


def test_progression_targets_follow_upstream() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    assert event_frame(labels, 0) == 2 and event_frame(labels, 1) == 4
    expected = np.stack([(np.arange(8) - 2) / 8, (np.arange(8) - 4) / 8], axis=1)
    np.testing.assert_allclose(progression_targets(labels, 3), expected)
    assert event_frame(np.array([0, 0, 2, 2]), 1) == 2  # a missing phase: the next phase's first frame
    assert event_frame(np.array([0, 0, 0]), 1) == 2  # nothing follows: the last frame


def test_phase_progression_linear_embeddings_score_one() -> None:
    # Embeddings that hold the frame position and the phase boundaries linearly: R^2 = 1.
    def video(n: int, cuts: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        y = np.searchsorted(np.array(cuts), np.arange(n), side="right")
        targets = progression_targets(y, 3)
        return np.hstack([targets, np.ones((n, 1))]), y

    train = [video(n, c) for n, c in [(20, (5, 12)), (30, (9, 20)), (25, (4, 18)), (16, (7, 10))]]
    val = [video(n, c) for n, c in [(22, (6, 15)), (28, (10, 21))]]
    r2 = phase_progression(
        [e for e, _ in train], [y for _, y in train], [e for e, _ in val], [y for _, y in val]
    )
    assert r2 == pytest.approx(1.0)


def test_user_errors() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        kendalls_tau([np.zeros((3, 2))])
    with pytest.raises(ValueError, match="classifier"):
        phase_classification(
            [np.zeros((3, 2))], [np.zeros(3)], [np.zeros((3, 2))], [np.zeros(3)], classifier="knn"
        )
    with pytest.raises(ValueError, match="labels"):
        phase_progression([np.zeros((3, 2))], [np.zeros(2)], [np.zeros((3, 2))], [np.zeros(3)])
