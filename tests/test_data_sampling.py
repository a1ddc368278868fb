"""Clip samplers and epoch plans (train/data/sampling.py) against naive references."""

from __future__ import annotations

import numpy as np
import pytest

from core.method import ClipSpec
from train.data.sampling import (
    build_clip_list,
    epoch_plan,
    offset_uniform_steps,
    offsets_clip,
    sample_clip,
    stride_steps,
    with_context,
)

CYCLETIME = ClipSpec(mode="offsets", offsets=(0, 2, 4, 6, 15, 17))
TCC = ClipSpec(mode="spread", num_steps=5, sampling="offset_uniform", context_steps=2, context_stride=3)


def test_offsets_clip_is_start_plus_offsets() -> None:
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = offsets_clip(rng, 30, CYCLETIME.offsets)
        start = int(idx[0])
        assert idx.tolist() == [start + o for o in CYCLETIME.offsets]
        assert 0 <= start <= 30 - 18
        starts.add(start)
    assert starts == set(range(13))  # every valid start is reachable
    bounded = [int(offsets_clip(rng, 100, CYCLETIME.offsets, 36, 53)[0]) for _ in range(100)]
    assert min(bounded) >= 36 and max(bounded) <= 53


def test_offsets_clip_of_short_video_repeats_last_frame() -> None:
    idx = offsets_clip(np.random.default_rng(0), 10, CYCLETIME.offsets)
    assert idx.tolist() == [0, 2, 4, 6, 9, 9]


def test_offset_uniform_sorted_distinct_and_short_fallback() -> None:
    rng = np.random.default_rng(1)
    for length in (5, 7, 40, 1000):
        steps = offset_uniform_steps(rng, length, 5)
        assert len(steps) == 5 and steps.dtype == np.int64
        assert np.all(np.diff(steps) > 0) and steps.min() >= 0 and steps.max() < length
    assert offset_uniform_steps(rng, 3, 5).tolist() == [0, 1, 2, 2, 2]  # upstream: 0..T-1, last repeated


def test_stride_steps_against_naive_loop() -> None:
    for seed in range(20):
        length, T, stride = 50, 6, 7
        got = stride_steps(np.random.default_rng(seed), length, T, stride)
        offset = int(np.random.default_rng(seed).integers(0, max(length - stride * (T - 1), 1)))
        naive = [min(offset + stride * t, length - 1) for t in range(T)]
        assert got.tolist() == naive
    clipped = stride_steps(np.random.default_rng(0), 10, 4, 5)  # 0, 5, 10 -> 9, 15 -> 9
    assert clipped.tolist() == [0, 5, 9, 9]


def test_with_context_step_major_against_naive_loop() -> None:
    steps = np.array([0, 4, 20, 31])
    K, s = 3, 5
    naive = []
    for t in steps:
        for k in range(K - 1, -1, -1):
            naive.append(max(int(t) - k * s, 0))
    assert with_context(steps, K, s).tolist() == naive
    assert with_context(steps, 1, 7).tolist() == steps.tolist()


def test_spread_clip_shape_and_structure() -> None:
    rng = np.random.default_rng(3)
    idx = sample_clip(TCC, 60, rng)
    assert idx.shape == (TCC.frames_per_clip,) == (10,)
    steps = idx.reshape(5, 2)[:, 1]
    assert np.all(np.diff(steps) > 0)
    assert idx.reshape(5, 2)[:, 0].tolist() == np.maximum(steps - 3, 0).tolist()
    stride_spec = ClipSpec(mode="spread", num_steps=4, sampling="stride", stride=5, context_steps=1)
    s = sample_clip(stride_spec, 60, rng)
    assert np.all(np.diff(s) == 5)


def test_clip_list_counts_and_short_videos() -> None:
    lengths = np.array([18, 40, 10, 100])
    pad = build_clip_list(lengths, CYCLETIME, "pad")
    # span 18: 1, 2, 1 (padded), 5 clips
    assert np.bincount(pad.video_id).tolist() == [1, 2, 1, 5]
    assert pad.padded == (2,) and pad.skipped == ()
    skip = build_clip_list(lengths, CYCLETIME, "skip")
    assert 2 not in skip.video_id and skip.skipped == (2,) and len(skip) == 8
    spread = build_clip_list(np.array([3, 40, 10]), TCC, "skip")  # TCC min length = num_steps = 5
    assert spread.video_id.tolist() == [1, 2] and spread.skipped == (0,)
    for vid, (lo, hi) in zip(pad.video_id, pad.segment, strict=True):
        if lengths[vid] >= 18:
            assert 0 <= lo <= lengths[vid] - 18 and hi >= lo


def _plan(rank: int, world: int, epoch: int = 0, seed: int = 0, batch: int = 3):
    clips = build_clip_list(np.array([40, 18, 60, 25, 90]), CYCLETIME, "skip")
    lengths = np.array([40, 18, 60, 25, 90])
    return epoch_plan(
        clips, CYCLETIME, lengths, seed=seed, epoch=epoch, rank=rank, world_size=world, batch_size=batch
    )


def test_two_ranks_disjoint_equal_and_padded() -> None:
    plans = [_plan(r, 2) for r in range(2)]
    n_clips = len(plans[0].clips)  # 2 + 1 + 3 + 1 + 5 = 12
    assert n_clips == 12
    assert plans[0].batches == plans[1].batches == 2  # ceil(12 / (2 * 3))
    positions = [np.concatenate([p.positions(b) for b in range(p.batches)]) for p in plans]
    assert len(positions[0]) == len(positions[1])
    assert not set(positions[0]) & set(positions[1])
    samples = [s for p in plans for b in range(p.batches) for s in p.batch(b)]
    valid = [s for s in samples if s.valid]
    assert len(valid) == n_clips  # every clip once; the rest is wrap padding
    clip_ids = [int(plans[0].order_N[s.position]) for s in valid]
    assert sorted(clip_ids) == list(range(n_clips))
    uneven = [_plan(r, 2, batch=5) for r in range(2)]  # 12 clips -> 2 x 10 positions, 8 padded
    flags = [s.valid for p in uneven for b in range(p.batches) for s in p.batch(b)]
    assert len(flags) == 20 and sum(flags) == 12


def test_plan_is_pure_in_seed_and_epoch() -> None:
    a, b = _plan(0, 1), _plan(0, 1)
    for i in range(a.batches):
        for x, y in zip(a.batch(i), b.batch(i), strict=True):
            assert x.video_id == y.video_id and np.array_equal(x.frame_idx, y.frame_idx)
            assert x.crop_xy == y.crop_xy and x.flip == y.flip
    assert not np.array_equal(_plan(0, 1, epoch=1).order_N, a.order_N)
    assert not np.array_equal(_plan(0, 1, seed=5).order_N, a.order_N)


def test_sample_at_a_position_does_not_depend_on_world_size() -> None:
    one, two = _plan(0, 1, batch=2), _plan(1, 2, batch=1)
    for position in range(12):
        x, y = one.sample(position), two.sample(position)
        assert x.video_id == y.video_id and np.array_equal(x.frame_idx, y.frame_idx)


def test_replacement_avoids_excluded_videos_and_is_deterministic() -> None:
    plan = _plan(0, 1)
    for attempt in range(20):
        stand_in = plan.replacement(3, attempt, {4, 2})
        assert stand_in is not None and stand_in.video_id not in (2, 4)
        again = plan.replacement(3, attempt, {4, 2})
        assert again is not None and np.array_equal(stand_in.frame_idx, again.frame_idx)
    assert plan.replacement(3, 0, {0, 1, 2, 3, 4}) is None


def test_plan_rejects_bad_rank_and_empty_clip_list() -> None:
    clips = build_clip_list(np.array([40]), CYCLETIME, "skip")
    with pytest.raises(ValueError, match="rank"):
        epoch_plan(clips, CYCLETIME, np.array([40]), seed=0, epoch=0, rank=2, world_size=2, batch_size=1)
    empty = build_clip_list(np.array([5]), CYCLETIME, "skip")
    with pytest.raises(ValueError, match="short_videos"):
        epoch_plan(empty, CYCLETIME, np.array([5]), seed=0, epoch=0, rank=0, world_size=1, batch_size=1)
