"""Synthetic videos: real files, decoded pixels close to the generated ones, consistent ground truth,
DAVIS export, atomic generation and reuse, and the video I/O helpers (writer, reader, probe)."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import train.data.synthetic as synthetic
from train.config.schema import SyntheticConfig
from train.data.synthetic import generate_dataset, read_manifest
from train.data.synthetic_scenes import (
    PHASE_BOUNDARIES,
    PHASE_COLOURS,
    ball_position,
    make_phases_video,
    make_sprites_video,
    phase_of,
    sample_bilinear,
    sprite_frame_coords,
    sprite_local_coords,
)
from train.data.video_io import (
    probe_video,
    read_video_pyav,
    rgb_to_yuv420,
    suffix_for,
    to_yuv420,
    write_video,
    yuv420_to_rgb,
)

# Mean absolute error (0-255 levels) allowed between decoded and generated frames, per codec, at the
# writer's default quality. Measured on the test sizes: h264 0.27-0.59, vp9 0.44-1.01, hevc 0.62,
# mjpeg 1.39; PSNR 42.8-51.9 dB (docs/synthetic-data.md has the 160x128 figures).
MAE_TOLERANCE = {"h264": 1.0, "vp9": 1.5, "hevc": 1.0, "mjpeg": 2.5}
PSNR_MIN_DB = 40.0

SPRITES = SyntheticConfig(kind="sprites", videos=3, frames=20, width=96, height=80, codec="h264", seed=3)
PHASES = SyntheticConfig(kind="phases", videos=4, frames=24, width=96, height=64, codec="vp9", seed=5)


@pytest.fixture(scope="module")
def sprites_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "sprites"
    generate_dataset(SPRITES, root, davis=True)
    return root


@pytest.fixture(scope="module")
def phases_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "phases"
    generate_dataset(PHASES, root)
    return root


def _mae_psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    err = a.astype(np.float64) - b.astype(np.float64)
    return float(np.abs(err).mean()), float(10 * np.log10(255.0**2 / max((err**2).mean(), 1e-12)))


# ------------------------------------------------------------------------------------------ real files


@pytest.mark.parametrize("which", ["sprites", "phases"])
def test_files_are_real_videos_with_right_count_size_fps(which, sprites_root, phases_root):
    cfg, root = (SPRITES, sprites_root) if which == "sprites" else (PHASES, phases_root)
    container_format, codec = {"h264": ("mp4", "h264"), "vp9": ("webm", "vp9")}[cfg.codec]
    names = read_manifest(root)["videos"]
    assert names == [f"{cfg.kind}_{i:03d}{suffix_for(cfg.codec)}" for i in range(cfg.videos)]
    for name in names:
        path = root / name
        with av.open(str(path)) as container:
            assert container_format in container.format.name
            stream = container.streams.video[0]
            assert stream.codec_context.name == codec
            assert float(stream.average_rate) == pytest.approx(synthetic.FPS)
        assert probe_video(path) == {
            "frames": cfg.frames,
            "fps": pytest.approx(synthetic.FPS),
            "width": cfg.width,
            "height": cfg.height,
            "codec": codec,
        }
        assert read_video_pyav(path).shape == (cfg.frames, cfg.height, cfg.width, 3)


@pytest.mark.parametrize("which", ["sprites", "phases"])
def test_decoded_frames_close_to_generated(which, sprites_root, phases_root):
    cfg, root = (SPRITES, sprites_root) if which == "sprites" else (PHASES, phases_root)
    make = make_sprites_video if which == "sprites" else make_phases_video
    for i in range(cfg.videos):
        generated = make(cfg.seed, i, cfg.frames, cfg.width, cfg.height).frames_THWC
        decoded = read_video_pyav(root / f"{cfg.kind}_{i:03d}{suffix_for(cfg.codec)}")
        mae, psnr = _mae_psnr(decoded, generated)
        assert mae <= MAE_TOLERANCE[cfg.codec], (i, mae)
        assert psnr >= PSNR_MIN_DB, (i, psnr)


@pytest.mark.parametrize("codec", ["h264", "vp9", "hevc", "mjpeg"])
def test_every_codec_round_trips_within_tolerance(codec, tmp_path):
    frames = make_sprites_video(1, 0, 10, 64, 48).frames_THWC
    path = write_video(tmp_path / f"v{suffix_for(codec)}", frames, 30000 / 1001, codec)
    decoded = read_video_pyav(path)
    assert decoded.shape == frames.shape
    mae, psnr = _mae_psnr(decoded, frames)
    assert mae <= MAE_TOLERANCE[codec] and psnr >= PSNR_MIN_DB, (mae, psnr)
    info = probe_video(path)
    assert info["frames"] == 10 and info["fps"] == pytest.approx(30000 / 1001)
    assert not list(tmp_path.glob(".*")), "the partial file was left behind"


def test_height_not_multiple_of_four_round_trips(tmp_path):
    frames = make_sprites_video(1, 1, 3, 64, 18).frames_THWC
    decoded = read_video_pyav(write_video(tmp_path / "v.mp4", frames, 24))
    assert _mae_psnr(decoded, frames)[0] <= MAE_TOLERANCE["h264"]


@pytest.mark.parametrize("codec", ["h264", "hevc", "vp9"])
def test_keyframes_every_gop_and_no_reordering_by_default(codec, tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (21, 32, 64, 3), dtype=np.uint8)
    path = write_video(tmp_path / f"v{suffix_for(codec)}", frames, 25, codec, gop=5)
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    assert [i for i, p in enumerate(packets) if p.is_keyframe] == [0, 5, 10, 15, 20]
    pts = [p.pts for p in packets]
    assert pts == sorted(pts), "decode order must equal display order without B-frames"


def test_bframes_reorder_h264(tmp_path):
    frames = make_sprites_video(2, 0, 16, 48, 32).frames_THWC
    path = write_video(tmp_path / "v.mp4", frames, 25, "h264", gop=16, bframes=True)
    with av.open(str(path)) as container:
        pts = [p.pts for p in container.demux(video=0) if p.size]
    assert pts != sorted(pts)
    assert read_video_pyav(path).shape == frames.shape


def test_write_video_rejects_bad_arguments(tmp_path):
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 15, 16, 3), np.uint8), 24)
    with pytest.raises(ValueError, match="suffix"):
        write_video(tmp_path / "v.webm", frames, 24, "h264")
    with pytest.raises(ValueError, match="codec"):
        write_video(tmp_path / "v.mp4", frames, 24, "av1")
    with pytest.raises(ValueError, match="B-frames"):
        write_video(tmp_path / "v.avi", frames, 24, "mjpeg", bframes=True)
    with pytest.raises(ValueError, match="crf"):
        write_video(tmp_path / "v.mp4", frames, 24, "h264", crf=0)
    with pytest.raises(ValueError, match="64 px wide"):
        write_video(tmp_path / "v.mp4", frames, 24, "hevc")
    with pytest.raises(TypeError, match="uint8"):
        write_video(tmp_path / "v.mp4", frames.astype(np.float32), 24)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_probe_counts_what_a_truncated_file_holds(codec, tmp_path):
    frames = make_sprites_video(4, 0, 32, 64, 48).frames_THWC
    path = write_video(tmp_path / f"full{suffix_for(codec)}", frames, 24, codec)
    data = path.read_bytes()
    cut = tmp_path / f"cut{suffix_for(codec)}"
    cut.write_bytes(data[: len(data) // 2])
    full, half = probe_video(path), probe_video(cut)
    assert full["frames"] == 32
    assert 0 < half["frames"] < 32
    assert (half["width"], half["height"], half["codec"]) == (64, 48, full["codec"])
    assert len(read_video_pyav(cut)) <= half["frames"] + 1  # at most the cut-off packet decodes in part


# ------------------------------------------------------------------------------------ colour conversion


def test_rgb_yuv420_against_naive_loop():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    yuv = rgb_to_yuv420(rgb)
    H, W = 6, 8  # H / 2 odd: a chroma plane's rows straddle the array's rows
    for y in range(H):
        for x in range(W):
            r, g, b = (float(c) / 255 for c in rgb[y, x])
            assert yuv[y, x] == round(16 + 219 * (0.299 * r + 0.587 * g + 0.114 * b))
    for cy in range(H // 2):
        for cx in range(W // 2):
            cb = cr = 0.0
            for dy in (0, 1):
                for dx in (0, 1):
                    r, g, b = (float(c) / 255 for c in rgb[2 * cy + dy, 2 * cx + dx])
                    luma = 0.299 * r + 0.587 * g + 0.114 * b
                    cb += (b - luma) / 1.772 / 4
                    cr += (r - luma) / 1.402 / 4
            flat = cy * (W // 2) + cx
            assert yuv[H:].reshape(-1)[flat] == round(128 + 224 * cb)
            assert yuv[H:].reshape(-1)[H * W // 4 + flat] == round(128 + 224 * cr)
    back = yuv420_to_rgb(yuv)
    for y in range(H):
        for x in range(W):
            luma = (float(yuv[y, x]) - 16) / 219
            cb = (float(yuv[H:].reshape(-1)[(y // 2) * (W // 2) + x // 2]) - 128) / 224
            cr = (float(yuv[H:].reshape(-1)[H * W // 4 + (y // 2) * (W // 2) + x // 2]) - 128) / 224
            r, b = luma + 1.402 * cr, luma + 1.772 * cb
            g = (luma - 0.299 * r - 0.114 * b) / 0.587
            expect = [min(max(round(c * 255), 0), 255) for c in (r, g, b)]
            assert back[y, x].tolist() == expect


def test_rgb_to_yuv420_agrees_with_ffmpeg():
    """The numpy matrix is BT.601 limited range as swscale has it (within rounding)."""
    rgb = make_sprites_video(0, 0, 1, 64, 48).frames_THWC[0]
    ours = rgb_to_yuv420(rgb).astype(int)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
        format="yuv420p", dst_colorspace="ITU601", dst_color_range="MPEG", interpolation="AREA"
    )
    theirs = frame.to_ndarray().astype(int)
    assert np.abs(ours[:48] - theirs[:48]).max() <= 1  # luma
    assert np.abs(ours[48:] - theirs[48:]).mean() < 1.0  # chroma (swscale rounds the block mean its way)


def test_to_yuv420_is_a_projection():
    once = make_sprites_video(0, 1, 4, 64, 48).frames_THWC  # already passed through to_yuv420
    twice = to_yuv420(once)
    assert (once != twice).mean() < 0.01  # only pixels clipped at the RGB gamut's edge move


# ---------------------------------------------------------------------------------- sprite ground truth


def _naive_masks(gt: dict, t: int) -> np.ndarray:
    """Instance ids at frame t from the JSON alone, one pixel at a time (the reference)."""
    H, W = gt["height"], gt["width"]
    out = np.zeros((H, W), np.uint8)
    by_id = {s["id"]: s for s in gt["sprites"]}
    for y in range(H):
        for x in range(W):
            for sid in gt["draw_order"]:
                s = by_id[sid]
                cx, cy = s["centre"][t]
                angle, r = s["angle"][t], s["radius"] * s["scale"][t]
                u = (math.cos(angle) * (x - cx) + math.sin(angle) * (y - cy)) / r
                v = (-math.sin(angle) * (x - cx) + math.cos(angle) * (y - cy)) / r
                if s["shape"] == "disc":
                    inside = u * u + v * v <= 1
                elif s["shape"] == "square":
                    inside = max(abs(u), abs(v)) <= 1 / math.sqrt(2)
                else:
                    theta = math.atan2(v, u)
                    rho = 0.75 + sum(
                        a * math.cos(k * theta + p) for k, (a, p) in enumerate(s["lobes"], start=2)
                    )
                    inside = math.hypot(u, v) <= rho
                if inside:
                    out[y, x] = sid  # later in draw order = in front
    return out


def test_sprite_masks_match_ground_truth_with_occlusion(sprites_root):
    for i in range(SPRITES.videos):
        gt = json.loads((sprites_root / f"sprites_{i:03d}.json").read_text())
        masks = np.load(sprites_root / gt["masks"])["masks"]
        assert masks.shape == (SPRITES.frames, SPRITES.height, SPRITES.width) and masks.dtype == np.uint8
        assert set(np.unique(masks)) <= set(range(len(gt["sprites"]) + 1))
        for t in (0, SPRITES.frames // 2, SPRITES.frames - 1):
            np.testing.assert_array_equal(masks[t], _naive_masks(gt, t))


def test_sprite_centres_inside_masks_and_frame(sprites_root):
    for i in range(SPRITES.videos):
        gt = json.loads((sprites_root / f"sprites_{i:03d}.json").read_text())
        masks = np.load(sprites_root / gt["masks"])["masks"]
        order = gt["draw_order"]
        for s in gt["sprites"]:
            in_front = set(order[order.index(s["id"]) + 1 :])
            for t, (cx, cy) in enumerate(s["centre"]):
                reach = s["radius"] * s["scale"][t]
                assert reach <= cx <= SPRITES.width - 1 - reach and reach <= cy <= SPRITES.height - 1 - reach
                owner = masks[t, round(cy), round(cx)]
                assert owner == s["id"] or owner in in_front, (i, s["id"], t, owner)


def test_sprite_texture_moves_with_its_trajectory():
    """A sprite's pixels at t reappear at t + 1 where the trajectory maps them; the background pans."""
    video = make_sprites_video(7, 0, 12, 128, 96)
    frames = video.frames_THWC.astype(np.float64)
    masks, gt = video.masks_THW, video.gt
    ys, xs = np.mgrid[0:96, 0:128].astype(np.float64)
    tracked, static, steps = [], [], []
    for t in range(11):
        for s in gt["sprites"]:
            sel = masks[t] == s["id"]
            u, v = sprite_local_coords(s, t, xs[sel], ys[sel])
            sel_u = np.hypot(u, v) < 0.6  # well inside every shape
            qx, qy = sprite_frame_coords(s, t + 1, u[sel_u], v[sel_u])
            visible = masks[t + 1][np.rint(qy).astype(int), np.rint(qx).astype(int)] == s["id"]
            if visible.sum() < 20:
                continue
            src = frames[t][sel][sel_u][visible]
            tracked.append(np.abs(sample_bilinear(frames[t + 1], qx[visible], qy[visible]) - src).mean())
            static.append(np.abs(frames[t + 1][sel][sel_u][visible] - src).mean())
            steps.append(np.hypot(*np.subtract(s["centre"][t + 1], s["centre"][t])))
    # Resampling error grows with the texture's contrast; against the untracked error it stays a quarter.
    assert np.mean(tracked) < 8.0 and np.mean(tracked) < 0.35 * np.mean(static), (tracked, static)
    assert 1.0 < np.mean(steps) < 6.0  # "a few pixels per frame" at this size
    # background: pixels free of sprites at t and t + 1 follow the pan offset
    offset = np.array(gt["background_offset"])
    bg = (masks[0] == 0) & (masks[1] == 0)
    dx, dy = offset[1] - offset[0]
    inner = bg & (xs > 2) & (xs < 125) & (ys > 2) & (ys < 93)
    moved = sample_bilinear(frames[0], xs[inner] + dx, ys[inner] + dy)
    assert np.abs(moved - frames[1][inner]).mean() < 4.0
    assert np.hypot(dx, dy) > 0.2


def test_sprites_share_the_background_palette():
    """Colour alone does not single a sprite out: each is textured from the video's muted palette and
    shares at least one colour with the background, as objects and background do in real video."""
    for index in range(4):
        gt = make_sprites_video(5, index, 2, 64, 48).gt
        palette = [tuple(c) for c in gt["palette"]]
        for s in gt["sprites"]:
            colours = [tuple(c) for c in s["colours"]]
            assert len(set(colours)) == 2 and set(colours) <= set(palette)
            assert set(colours) & set(palette[:2])  # the background mixes palette colours 0 and 1
        for r, g, b in palette:
            saturation = 1 - min(r, g, b) / max(r, g, b)
            assert 0.19 < saturation < 0.46, (index, r, g, b)


# ---------------------------------------------------------------------------------- phase ground truth


def test_phase_labels_monotone_and_one_map_from_canonical_time(phases_root):
    labels = json.loads((phases_root / "labels.json").read_text())
    assert sorted(labels) == [f"phases_{i:03d}" for i in range(PHASES.videos)]
    pooled, warps = [], []
    for stem, phases in labels.items():
        gt = json.loads((phases_root / f"{stem}.json").read_text())
        tau = np.array(gt["canonical_time"])
        assert phases == gt["phase"] and len(phases) == PHASES.frames
        assert np.all(np.diff(phases) >= 0) and np.all(np.diff(tau) > 0)
        assert 0.0 <= tau[0] < tau[-1] <= 1.0
        np.testing.assert_allclose(
            tau,
            np.interp(np.arange(PHASES.frames) / (PHASES.frames - 1), *gt["warp"].values()),
            atol=1e-12,
        )
        pooled += list(zip(tau, phases, strict=True))
        warps.append(tau)
    pooled.sort()
    assert [p for _, p in pooled] == sorted(p for _, p in pooled), "one canonical time -> phase map"
    for tau, phase in pooled:
        assert phase == sum(tau >= b for b in PHASE_BOUNDARIES[1:-1])
    assert {p for _, p in pooled} == {0, 1, 2, 3}
    assert not np.allclose(warps[0], warps[1]), "each video has its own warp"


def test_phase_and_canonical_time_are_visible_in_decoded_frames(phases_root):
    H, W = PHASES.height, PHASES.width
    ys, xs = np.mgrid[0:H, 0:W]
    palette = np.array(PHASE_COLOURS) / np.linalg.norm(PHASE_COLOURS, axis=1, keepdims=True)
    for i in range(PHASES.videos):
        gt = json.loads((phases_root / f"phases_{i:03d}.json").read_text())
        frames = read_video_pyav(phases_root / gt["video"]).astype(np.float64)
        bar = gt["progress_bar"]
        row = round((bar["y0"] + bar["y1"]) / 2)
        track = np.arange(math.ceil(bar["x0"]), math.floor(bar["x0"] + bar["length"]) + 1)
        shift = np.array(gt["scene_shift"])
        for t, (tau, phase) in enumerate(zip(gt["canonical_time"], gt["phase"], strict=True)):
            cx, cy = gt["ball_centre"][t]
            np.testing.assert_allclose(
                gt["ball_centre"][t], ball_position(tau) * [W, H] + shift + gt["jitter"][t], atol=1e-9
            )
            disc = np.hypot(xs - cx, ys - cy) <= 0.6 * gt["ball_radius"]
            colour = frames[t][disc].mean(axis=0)
            assert int(np.argmax(palette @ (colour / np.linalg.norm(colour)))) == phase, (i, t)
            filled = int((frames[t][row, track].mean(axis=-1) > 140).sum())
            expected = int((track <= bar["x0"] + tau * bar["length"]).sum())
            assert abs(filled - expected) <= 1, (i, t, filled, expected)
            assert int(phase_of(np.array(tau))) == phase


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_arrays_other_seed_differs():
    for make in (make_sprites_video, make_phases_video):
        a, b = make(11, 2, 6, 48, 32), make(11, 2, 6, 48, 32)
        np.testing.assert_array_equal(a.frames_THWC, b.frames_THWC)
        assert json.dumps(a.gt) == json.dumps(b.gt)
        if a.masks_THW is not None:
            np.testing.assert_array_equal(a.masks_THW, b.masks_THW)
        assert not np.array_equal(a.frames_THWC, make(12, 2, 6, 48, 32).frames_THWC)
        assert not np.array_equal(a.frames_THWC, make(11, 3, 6, 48, 32).frames_THWC)


# ------------------------------------------------------------------------------------------------ DAVIS


def test_davis_export_matches_masks(sprites_root):
    davis = sprites_root / "davis"
    seqs = (davis / "ImageSets" / "val.txt").read_text().split()
    assert seqs == [f"sprites_{i:03d}" for i in range(SPRITES.videos)]
    for i, seq in enumerate(seqs):
        masks = np.load(sprites_root / f"{seq}.masks.npz")["masks"]
        frames = make_sprites_video(
            SPRITES.seed, i, SPRITES.frames, SPRITES.width, SPRITES.height
        ).frames_THWC
        pngs = sorted((davis / "Annotations" / "480p" / seq).iterdir())
        jpgs = sorted((davis / "JPEGImages" / "480p" / seq).iterdir())
        assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(SPRITES.frames)]
        assert [p.stem for p in jpgs] == [p.stem for p in pngs]
        for t in (0, SPRITES.frames - 1):
            png = Image.open(pngs[t])
            assert png.mode == "P"
            assert png.getpalette()[:9] == [0, 0, 0, 128, 0, 0, 0, 128, 0]
            np.testing.assert_array_equal(np.array(png), masks[t])
            jpg = np.array(Image.open(jpgs[t]))
            assert jpg.shape == (SPRITES.height, SPRITES.width, 3)
            assert _mae_psnr(jpg, frames[t])[0] < 4.0


# ----------------------------------------------------------------------------- atomic writes and reuse


def _snapshot(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in root.iterdir()}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_call_reuses_and_changed_config_regenerates(tmp_path):
    cfg = SyntheticConfig(kind="phases", videos=2, frames=6, width=32, height=32, codec="h264", seed=0)
    root = tmp_path / "data"
    first = generate_dataset(cfg, root)
    before = _snapshot(root)
    assert generate_dataset(cfg, root) == first
    assert _snapshot(root) == before, "a complete dataset of the same config is reused untouched"
    changed = SyntheticConfig(kind="phases", videos=3, frames=6, width=32, height=32, codec="h264", seed=1)
    paths = generate_dataset(changed, root)
    assert len(paths) == 3 and read_manifest(root)["config"]["seed"] == 1
    assert read_manifest(root)["fingerprint"] == synthetic.config_fingerprint(changed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "no temporary folder left"


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    cfg = SyntheticConfig(kind="sprites", videos=3, frames=4, width=32, height=32, codec="h264", seed=0)
    root = tmp_path / "data"
    real = synthetic.GENERATORS["sprites"]

    def fail_on_second(seed, index, *args):
        if index == 1:
            raise KeyboardInterrupt
        return real(seed, index, *args)

    monkeypatch.setitem(synthetic.GENERATORS, "sprites", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(cfg, root)
    assert not root.exists() and not list(tmp_path.iterdir())
    monkeypatch.undo()

    # a temporary folder a killed run left behind (even with a DONE inside) is not the dataset
    leftover = tmp_path / f".data.tmp-{socket.gethostname()}-{_dead_pid()}-0000"
    leftover.mkdir()
    (leftover / "sprites_000.mp4").write_bytes(b"half")
    (leftover / "DONE").write_text("{}")
    assert read_manifest(root) is None
    paths = generate_dataset(cfg, root)
    assert [p.name for p in paths] == ["sprites_000.mp4", "sprites_001.mp4", "sprites_002.mp4"]
    assert probe_video(paths[0])["frames"] == 4
    assert not leftover.exists(), "stale temporary folders of dead runs are removed"


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "precious.mp4").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="DONE"):
        generate_dataset(SyntheticConfig(videos=1, frames=2, width=16, height=16), root)
    assert (root / "precious.mp4").exists()


def test_rejects_bad_configs(tmp_path):
    with pytest.raises(ValueError, match="even"):
        generate_dataset(SyntheticConfig(width=33), tmp_path / "a")
    with pytest.raises(ValueError, match="seed"):
        generate_dataset(SyntheticConfig(seed=-1), tmp_path / "c")
    with pytest.raises(ValueError, match="sprites"):
        generate_dataset(SyntheticConfig(kind="phases"), tmp_path / "b", davis=True)
    assert not list(tmp_path.iterdir())


def test_cli_writes_a_dataset(tmp_path):
    out = tmp_path / "cli"
    args = ["--kind", "phases", "--out", str(out), "--videos", "2", "--frames", "5"]
    assert synthetic.main([*args, "--width", "32", "--height", "24", "--codec", "vp9", "--seed", "4"]) == 0
    manifest = read_manifest(out)
    assert manifest["videos"] == ["phases_000.webm", "phases_001.webm"]
    assert manifest["config"] == {
        "kind": "phases",
        "videos": 2,
        "frames": 5,
        "width": 32,
        "height": 24,
        "codec": "vp9",
        "seed": 4,
    }
    assert len(json.loads((out / "labels.json").read_text())["phases_001"]) == 5
    assert synthetic.main(["--out", str(tmp_path / "odd"), "--width", "31"]) == 2
