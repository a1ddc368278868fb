"""Label propagation: exact on an oracle sequence, chunk-invariant, equal to a naive loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cycletime import metrics
from cycletime.propagation import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    QUERY_TILE,
    LabelPropagator,
    PropagationSettings,
    heatmaps_to_keypoints,
    keypoints_to_heatmaps,
    labels_to_mask,
    masks_to_labels,
    propagate_video,
    resized_hw,
)

CELL = 8
ROWS, COLS = 6, 5  # the world: 30 cells, each a unique colour


def _world():
    """A torus of ROWS x COLS cells of 8x8 px, cell id i coloured R = 8 i + 4; object 1 is cell row 1,
    object 2 is cell row 3 (full-width bands: straight edges, which bilinear upsampling keeps exact)."""
    ids = np.arange(ROWS * COLS).reshape(ROWS, COLS)
    image = np.zeros((ROWS * CELL, COLS * CELL, 3), np.uint8)
    image[..., 0] = np.kron(ids * 8 + 4, np.ones((CELL, CELL), int))
    labels = np.zeros((ROWS, COLS), np.uint8)
    labels[1], labels[3] = 1, 2
    return image, np.kron(labels, np.ones((CELL, CELL), np.uint8))


def _oracle_sequence(T):
    """The world rolled one cell down and one right per frame: every cell stays visible."""
    image, mask = _world()
    shift = [(t * CELL, t * CELL) for t in range(T)]
    frames = [np.roll(image, s, axis=(0, 1)) for s in shift]
    masks = [np.roll(mask, s, axis=(0, 1)) for s in shift]
    return frames, masks


def oracle_encoder(frames_B3HW):
    """One-hot of the cell id decoded from the colour: identical cells match with similarity 1,
    all others 0."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    red = F.avg_pool2d((frames_B3HW * std + mean) * 255, CELL)[:, 0]
    ids = ((red - 4) / 8).round().long()
    return F.one_hot(ids, ROWS * COLS).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("context", [0, 3])
def test_oracle_sequence_gives_perfect_masks(context):
    frames, masks = _oracle_sequence(T=9)
    settings = PropagationSettings(context=context, topk=4, radius=2.5, temperature=0.05)
    first = masks[0]
    stream = propagate_video(
        oracle_encoder,
        iter(frames),
        lambda hw: masks_to_labels(first, 3, hw),
        settings,
        size=48,
        device="cpu",
    )
    preds = [labels_to_mask(labels, first.shape).numpy() for _, labels in stream]
    assert len(preds) == len(frames)
    for t in range(1, len(frames)):
        np.testing.assert_array_equal(preds[t], masks[t], err_msg=f"frame {t}")
    scores = metrics.davis_scores(preds, masks, num_objects=2)
    np.testing.assert_allclose(scores.J, [1.0, 1.0])
    np.testing.assert_allclose(scores.F, [1.0, 1.0])


def _random_video(T=7, C=6, h=5, w=7, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(T, C, h, w, generator=g, dtype=torch.float64), dim=1)
    labels0 = torch.softmax(torch.randn(D, h, w, generator=g, dtype=torch.float64), dim=0)
    return feats, labels0


def _run(feats, labels0, settings):
    prop = LabelPropagator(feats[0], labels0, settings)
    return [prop.step(f) for f in feats[1:]]


def test_chunked_and_unchunked_give_identical_results():
    feats, labels0 = _random_video()
    base = dict(context=3, topk=5, radius=2.0, temperature=0.07)
    one_row = _run(feats, labels0, PropagationSettings(**base, max_chunk_elements=1))
    at_once = _run(feats, labels0, PropagationSettings(**base, max_chunk_elements=10**9))
    for a, b in zip(one_row, at_once, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        np.testing.assert_array_equal(labels_to_mask(a, (20, 28)), labels_to_mask(b, (20, 28)))


@pytest.mark.parametrize("max_elements", [1, 5_000, 2**25])
def test_tile_size_keeps_a_tile_within_the_memory_knob(max_elements):
    settings = PropagationSettings(radius=12.0, max_chunk_elements=max_elements)
    tile = settings.tile_size(num_free=6420, local_frames=20)  # a 480p DAVIS frame, context 20
    assert 1 <= tile <= QUERY_TILE
    if tile > 1:
        assert tile * tile * (6420 + 20 * (tile + 22) ** 2) <= max_elements  # 11 cells of reach a side
    assert PropagationSettings().tile_size(6420, 20) == QUERY_TILE  # the default knob never shrinks it


def _naive_propagation(feats, labels0, context, topk, radius, temperature):
    """CRW's protocol written as loops: context = frame 0 (all cells) + the `context` previous frames
    (indices below 0 are frame 0 again, as CRW pads the video start), those restricted to cells at
    distance < radius; top-k over all context cells, softmax(sim / temperature), weighted sum."""
    T, _, h, w = feats.shape
    labels = [labels0.flatten(1).t()]
    for t in range(1, T):
        keys, values, allowed = [], [], []
        for src, restricted in [(0, False)] + [(max(0, s), True) for s in range(t - context, t)]:
            for y in range(h):
                for x in range(w):
                    keys.append(feats[src, :, y, x])
                    values.append(labels[src][y * w + x])
                    allowed.append((restricted, y, x))
        out = torch.zeros(h * w, labels0.shape[0], dtype=torch.float64)
        for qy in range(h):
            for qx in range(w):
                q = feats[t, :, qy, qx]
                cands = []
                for key, (restricted, y, x) in zip(keys, allowed, strict=True):
                    ok = not restricted or math.hypot(y - qy, x - qx) < radius
                    cands.append(float(q @ key) if ok else -math.inf)
                sims = torch.tensor(cands, dtype=torch.float64)
                vals, idx = sims.topk(topk)
                weights = torch.softmax(vals / temperature, 0)
                out[qy * w + qx] = sum(wk * values[i] for wk, i in zip(weights, idx.tolist(), strict=True))
        labels.append(out)
    return [lab.t().reshape(-1, h, w) for lab in labels[1:]]


@pytest.mark.parametrize("context,radius", [(2, 2.0), (4, 1.5), (0, 3.0)])
def test_matches_naive_loop_reference(context, radius):
    feats, labels0 = _random_video(T=6, C=4, h=4, w=5, D=2, seed=context)
    settings = PropagationSettings(
        context=context, topk=3, radius=radius, temperature=0.1, max_chunk_elements=64
    )
    got = _run(feats, labels0, settings)
    want = _naive_propagation(feats, labels0, context, 3, radius, 0.1)
    for t, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a, b.float(), msg=f"target frame {t + 1}")


def test_radius_is_strict_like_crw():
    # Two context frames of one cell row; the only matching key sits exactly `radius` cells away.
    h, w = 1, 5
    feats = torch.zeros(3, 2, h, w)
    feats[:, 1] = 1.0  # everything dissimilar to the query's direction (1, 0)...
    feats[1, :, 0, 4] = torch.tensor([1.0, 0.0])  # ...except cell 4 of frame 1
    feats[2, :, 0, 0] = torch.tensor([1.0, 0.0])  # the query: cell 0 of frame 2
    labels0 = torch.zeros(2, h, w)
    labels0[0] = 1.0
    prop = LabelPropagator(feats[0], labels0, PropagationSettings(context=1, topk=1, radius=4.0))
    prop.step(feats[1])  # frame 1 enters the context with background labels
    prop._values_SND[1, 4] = torch.tensor([0.0, 1.0])  # give its matching cell a foreground label
    out = prop.step(feats[2])
    assert out[1, 0, 0] == 0.0  # distance 4 == radius: excluded (CRW keeps distance < radius)


def test_masks_to_labels_area_averages():
    mask = np.zeros((16, 16), np.uint8)
    mask[:4, :8] = 1  # half of cell (0, 0)
    mask[8:, 8:] = 2  # all of cell (1, 1)
    labels = masks_to_labels(mask, 3, (2, 2))
    torch.testing.assert_close(labels[:, 0, 0], torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(labels[:, 1, 1], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(labels.sum(0), torch.ones(2, 2))
    with pytest.raises(ValueError, match="id 2"):
        masks_to_labels(mask, 2, (2, 2))


def test_keypoint_heatmaps_round_trip():
    image_hw, grid_hw = (48, 40), (6, 5)
    centres = np.array([[3.5, 3.5], [19.5, 27.5], [35.5, 43.5]])  # pixel centres of cells (0,0), (3,2), (5,4)
    heat = keypoints_to_heatmaps(centres, image_hw, grid_hw)
    assert heat.shape == (4, 6, 5)
    # CRW's top-3 readout picks 2 of the 4 equal neighbours of a centred peak: a bias of ~0.1 cell.
    np.testing.assert_allclose(heatmaps_to_keypoints(heat, image_hw), centres, atol=0.15 * CELL)
    off_grid = np.array([[10.0, 20.0], [30.0, 5.0]])
    xy = heatmaps_to_keypoints(keypoints_to_heatmaps(off_grid, image_hw, grid_hw), image_hw)
    assert np.abs(xy - off_grid).max() < CELL / 2  # top-3 weighted mean: within half a cell
    empty = torch.zeros(2, 6, 5)
    assert np.isnan(heatmaps_to_keypoints(empty, image_hw)).all()


def test_oracle_keypoints_are_tracked():
    # Joints at the centres of cells (1, 1) and (1, 2), so that their heatmaps do not wrap around the
    # torus within 3 frames.
    frames, _ = _oracle_sequence(T=3)
    image_hw = frames[0].shape[:2]
    joints0 = np.array([[11.5, 11.5], [11.5, 19.5]])
    settings = PropagationSettings(context=2, topk=4, radius=2.5, temperature=0.05)
    stream = propagate_video(
        oracle_encoder,
        iter(frames),
        lambda hw: keypoints_to_heatmaps(joints0, image_hw, hw),
        settings,
        size=48,
        device="cpu",
    )
    H, W = image_hw
    for t, (_, labels) in enumerate(stream):
        want = (joints0 + t * CELL) % [W, H]
        got = heatmaps_to_keypoints(labels, image_hw)
        np.testing.assert_allclose(got, want, atol=0.15 * CELL, err_msg=f"t={t}")


def test_resized_hw_keeps_aspect_on_the_stride_grid():
    assert resized_hw(480, 854, 480) == (480, 856)
    assert resized_hw(480, 854, 240) == (240, 424)
    assert resized_hw(240, 320, 320) == (320, 424)
    with pytest.raises(ValueError, match="multiple of 8"):
        resized_hw(480, 854, 250)


def test_propagator_rejects_mismatched_grids():
    feats, labels0 = _random_video()
    with pytest.raises(ValueError, match="feature grid"):
        LabelPropagator(feats[0], labels0[:, :3], PropagationSettings())
    prop = LabelPropagator(feats[0], labels0, PropagationSettings(context=1, topk=2))
    with pytest.raises(ValueError, match="differ"):
        prop.step(feats[1][:, :3])
