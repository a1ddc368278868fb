"""DAVIS / JHMDB readers and writers, the Lab baseline, and `python -m cycletime.evaluate` end to end."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from cycletime import davis, encoders, evaluate, propagation
from cycletime.config import Config
from cycletime.model import CycleTimeModel


def test_palette_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, size=(12, 17)).astype(np.uint8)
    path = tmp_path / "seq" / "00003.png"
    davis.write_mask(path, ids)
    with Image.open(path) as im:
        assert im.mode == "P"
        assert im.getpalette()[3:6] == [128, 0, 0]  # DAVIS colour of object 1
    np.testing.assert_array_equal(davis.read_mask(path), ids)


def test_binary_davis2016_mask_becomes_ids(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 3:6] = 255
    Image.fromarray(mask, mode="L").save(tmp_path / "m.png")
    np.testing.assert_array_equal(davis.read_mask(tmp_path / "m.png"), mask // 255)


def test_split_line_formats(tmp_path):
    assert davis.parse_split_line("blackswan\n") == "blackswan"
    assert davis.parse_split_line(
        "/JPEGImages/480p/bmx-trees/00000.jpg /Annotations/480p/bmx-trees/00000.png"
    ) == ("bmx-trees")
    assert davis.parse_split_line("   \n") is None
    (tmp_path / "ImageSets").mkdir()
    lines = [
        f"/JPEGImages/480p/{s}/{i:05d}.jpg /Annotations/480p/{s}/{i:05d}.png"
        for s in ("b", "a")
        for i in (0, 1)
    ]
    (tmp_path / "ImageSets" / "val.txt").write_text("\n".join(lines) + "\n")
    assert davis.read_split(tmp_path, "val") == ["b", "a"]  # file order, each once
    (tmp_path / "ImageSets" / "2017").mkdir()
    (tmp_path / "ImageSets" / "2017" / "test.txt").write_text("x\ny\n")
    assert davis.read_split(tmp_path, "test") == ["x", "y"]
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        davis.read_split(tmp_path, "nope")


def test_srgb_to_lab_known_colours():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).view(1, 4, 3)
    lab = encoders.srgb_to_lab(rgb.permute(0, 2, 1)[..., None])[0, :, :, 0].t()
    want = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [53.24, 80.09, 67.20], [32.30, 79.19, -107.86]])
    torch.testing.assert_close(lab, want, atol=0.02, rtol=0)


def test_weights_spec_and_encoder_choice_errors(tmp_path):
    with pytest.raises(ValueError, match=r"train\.resolve"):
        encoders.load_encoder("runs:/abc123/encoder.pt", None)
    with pytest.raises(FileNotFoundError, match="no such file"):
        encoders.load_encoder(str(tmp_path / "missing.pt"), None)
    (tmp_path / "w.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="one of them"):
        encoders.load_encoder(str(tmp_path / "w.pt"), "lab")
    with pytest.raises(ValueError, match="--weights"):
        encoders.load_encoder(None, None)
    with pytest.raises(ValueError, match="pass --config"):
        encoders.load_encoder(str(tmp_path / "w.pt"), None)


def _make_davis(root, sequences, T=6, H=64, W=88):
    """A DAVIS-2016 layout: a red square moving over a blue-green gradient, binary 0/255 masks, a
    path-style val.txt (one line per frame)."""
    yy, xx = np.mgrid[0:H, 0:W]
    background = np.stack([np.full((H, W), 20), 40 + 2 * yy, 60 + 2 * xx], -1)
    lines = []
    for s, name in enumerate(sequences):
        (root / "JPEGImages" / "480p" / name).mkdir(parents=True)
        (root / "Annotations" / "480p" / name).mkdir(parents=True)
        for t in range(T):
            frame = background.copy()
            y, x = 16 + t, 16 + 3 * t + s
            frame[y : y + 24, x : x + 24] = (220, 30, 30)
            mask = np.zeros((H, W), np.uint8)
            mask[y : y + 24, x : x + 24] = 255
            Image.fromarray(frame.astype(np.uint8)).save(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg")
            Image.fromarray(mask, mode="L").save(root / "Annotations" / "480p" / name / f"{t:05d}.png")
            lines.append(f"/JPEGImages/480p/{name}/{t:05d}.jpg /Annotations/480p/{name}/{t:05d}.png")
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "val.txt").write_text("\n".join(lines) + "\n")


def _make_jhmdb(root, T=5, H=48, W=64):
    clip = root / "clip_a"
    clip.mkdir(parents=True)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (H, W, 3)).astype(np.uint8)
    pos = np.zeros((2, 3, T))
    for t in range(T):
        Image.fromarray(np.roll(image, t, axis=1)).save(clip / f"{t + 1:05d}.png")
        pos[:, :, t] = [[20 + t, 30 + t, 40 + t], [10, 20, 30]]
    scipy.io.savemat(clip / "joint_positions.mat", {"pos_img": pos + 1})  # MATLAB 1-based
    return pos


def test_load_jhmdb_reads_zero_based_joints(tmp_path):
    pos = _make_jhmdb(tmp_path)
    (clip,) = davis.load_jhmdb(tmp_path)
    assert clip.name == "clip_a" and len(clip.frames) == 5
    np.testing.assert_allclose(clip.joints_xy, pos.transpose(2, 1, 0))


def test_evaluate_command_end_to_end(tmp_path):
    root, out = tmp_path / "davis", tmp_path / "out"
    _make_davis(root, ["alpha", "beta"])
    _make_jhmdb(tmp_path / "jhmdb")
    argv = ["--baseline", "lab", "--davis", str(root), "--size", "64", "--context", "2", "--topk", "5"]
    argv += ["--radius", "3", "--temperature", "0.1", "--out", str(out), "--device", "cpu"]
    argv += ["--jhmdb", str(tmp_path / "jhmdb"), "--jhmdb-size", "48"]
    evaluate.main(argv)

    for name in ("alpha", "beta"):
        pngs = sorted((out / name).glob("*.png"))
        assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(6)]
        assert davis.read_mask(pngs[3]).shape == (64, 88)
        with av.open(str(out / "overlays" / f"{name}.mp4")) as video:
            assert sum(1 for _ in video.decode(video=0)) == 6
    assert (out / "overlays" / "jhmdb-clip_a.mp4").is_file()

    results = json.loads((out / "results.json").read_text())
    s = results["settings"]
    assert (s["size"], s["context"], s["topk"], s["radius"], s["temperature"]) == (64, 2, 5, 3.0, 0.1)
    assert s["encoder"] == "lab" and s["weights"] is None
    seqs = results["davis"]["sequences"]
    assert set(seqs) == {"alpha", "beta"}
    for row in seqs.values():
        assert 0 <= row["J"] <= 1 and 0 <= row["F"] <= 1
        assert row["J&F"] == pytest.approx((row["J"] + row["F"]) / 2)
        assert row["seconds"] > 0 and row["peak_rss_bytes"] > 0 and row["frames"] == 6
    overall = results["davis"]["overall"]
    assert overall["J&F"] == pytest.approx((overall["J"] + overall["F"]) / 2)
    # A red square on a blue-green gradient: colour alone tracks it, up to the 8 px feature grid.
    assert overall["J"] > 0.6
    assert 0 <= results["jhmdb"]["PCK@0.1"] <= results["jhmdb"]["PCK@0.2"] <= 1


def test_evaluate_davis_api_without_output(tmp_path):
    _make_davis(tmp_path, ["only"], T=4)
    cfg = evaluate.PropagationConfig(size=64, context=1, topk=3, radius=2.0)
    results = evaluate.evaluate_davis(encoders.LabEncoder(), tmp_path, cfg, None, "cpu")
    assert set(results["sequences"]) == {"only"}
    assert set(evaluate.headline_metrics(results)) == {"davis/J", "davis/F", "davis/JF"}
    assert not any(tmp_path.glob("only/*.png"))  # nothing written without out_dir


def test_random_init_is_one_fixed_draw_and_weights_load_strictly(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("method: cycletime\ncycletime: {backbone: resnet18, feat_dim: 16}\n")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, cfg = encoders.load_encoder(None, "random-init", str(config))
    b, _ = encoders.load_encoder(None, "random-init", str(config))
    assert (cfg.backbone, cfg.feat_dim) == ("resnet18", 16)
    assert torch.equal(torch.rand(1), before)  # the global generator is untouched
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        feats = a.eval()(x)
        assert feats.shape == (1, 16, 4, 6)
        torch.testing.assert_close(b.eval()(x), feats, rtol=0, atol=0)

    path = tmp_path / "encoder.pt"
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in a.state_dict().items()}
    torch.save(state, path)
    loaded, _ = encoders.load_encoder(str(path), None, str(config))
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    torch.save({k: v for k, v in state.items() if not k.startswith("project.")}, path)
    with pytest.raises(ValueError, match="project"):
        encoders.load_encoder(str(path), None, str(config))


def test_a_training_run_directory_loads_its_encoder(tmp_path):
    """What the trainer exports (the whole model's state dict beside the run's config.yaml) loads."""
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text("method: cycletime\ncycletime: {backbone: resnet18, feat_dim: 16}\n")
    model_cfg = Config(backbone="resnet18", feat_dim=16)
    model = CycleTimeModel(model_cfg, crop=48)
    torch.save(model.state_dict(), run / "final" / "weights.pt")
    encoder, cfg = encoders.load_encoder(str(run), None)
    assert cfg == model_cfg
    for k, v in encoder.state_dict().items():
        torch.testing.assert_close(v, model.encoder.state_dict()[k], rtol=0, atol=0)


def test_command_rejects_out_of_bounds_settings(tmp_path):
    with pytest.raises(SystemExit, match="--topk must be >= 1"):
        evaluate.main(["--baseline", "lab", "--davis", str(tmp_path), "--topk", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--davis ROOT and/or --jhmdb"):
        evaluate.main(["--baseline", "lab", "--out", str(tmp_path)])


def _record_channels(monkeypatch) -> list[int]:
    """The channel count of every batch of features label propagation encodes, appended as it runs."""
    channels = []
    real = propagation.encode_frames

    def record_channels(encode, *args, **kwargs):
        def encode_and_record(x):
            y = encode(x)
            channels.append(y.shape[1])
            return y

        return real(encode_and_record, *args, **kwargs)

    monkeypatch.setattr(propagation, "encode_frames", record_channels)
    return channels


def test_trunk_features_skip_the_projection(tmp_path, monkeypatch):
    """`--features trunk` propagates with the res4 trunk's channels (256 for ResNet-18), not feat_dim's."""
    root, config = tmp_path / "davis", tmp_path / "run.yaml"
    _make_davis(root, ["only"], T=4)
    config.write_text("method: cycletime\ncycletime: {backbone: resnet18, feat_dim: 16}\n")
    channels = _record_channels(monkeypatch)
    argv = ["--baseline", "random-init", "--config", str(config), "--davis", str(root), "--size", "64"]
    argv += ["--context", "1", "--topk", "3", "--radius", "2", "--no-overlays", "--device", "cpu"]
    results = evaluate.main([*argv, "--features", "trunk", "--out", str(tmp_path / "trunk")])
    assert results["settings"]["features"] == "trunk" and set(channels) == {256}
    channels.clear()
    evaluate.main([*argv, "--out", str(tmp_path / "projection")])
    assert set(channels) == {16}
    with pytest.raises(SystemExit, match="network encoder"):
        evaluate.main(["--baseline", "lab", "--davis", str(root), "--features", "trunk", "--out", "x"])


def test_periodic_evaluation_reads_the_layer_the_config_names(tmp_path, monkeypatch):
    """`cycletime.eval.features: trunk` makes the trainer's evaluation read res4, scoring the same weights
    exactly as `python -m cycletime.evaluate --features trunk` does; the default reads the projection."""
    from cycletime import method

    root, run = tmp_path / "davis", tmp_path / "run"
    _make_davis(root, ["only"], T=4)
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text("method: cycletime\ncycletime: {backbone: resnet18, feat_dim: 16}\n")
    torch.manual_seed(0)
    model = CycleTimeModel(Config(backbone="resnet18", feat_dim=16), crop=48).eval()
    torch.save(model.state_dict(), run / "final" / "weights.pt")
    channels = _record_channels(monkeypatch)
    protocol = dict(size=64, context=1, topk=3, radius=2.0)
    cfg = Config(backbone="resnet18", feat_dim=16)
    cfg.eval = evaluate.PropagationConfig(davis=str(root), features="trunk", **protocol)
    in_training = method.evaluate(model, cfg, None)
    assert set(channels) == {256}
    argv = ["--weights", str(run), "--davis", str(root), "--size", "64", "--context", "1", "--topk", "3"]
    argv += ["--radius", "2", "--no-overlays", "--device", "cpu", "--features", "trunk"]
    argv += ["--out", str(tmp_path / "o")]
    assert evaluate.headline_metrics(evaluate.main(argv)["davis"]) == in_training
    channels.clear()
    cfg.eval = evaluate.PropagationConfig(davis=str(root), **protocol)
    method.evaluate(model, cfg, None)
    assert set(channels) == {16}
