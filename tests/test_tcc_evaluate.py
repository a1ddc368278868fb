"""TCC's alignment evaluation: embedding every frame, the metrics on generated phase videos, the aligned
grid video, run-config and weights loading, and the `python -m tcc.evaluate` command."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tcc.config import Config, EvalConfig
from tcc.evaluate import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    collect_warps,
    context_indices,
    embed_video,
    evaluate_videos,
    load_model,
    load_tcc_config,
    load_warps,
    main,
    resolve_weights,
    train_val_split,
)
from tcc.metrics import kendalls_tau
from tcc.model import Embedder
from tcc.video_frames import compose_grid, list_videos, read_frames, resize_center_crop
from train.config.schema import SyntheticConfig
from train.data.synthetic import generate_dataset

SIZE = 64
FRAMES = 24
TINY = dict(backbone="resnet18", num_frames=4, conv_channels=16, fc_channels=16, embed_dim=8, context_steps=2)


def _cfg(**eval_fields) -> Config:
    return Config(**TINY, eval=EvalConfig(size=SIZE, **eval_fields))


def _model(seed: int = 1, cfg: Config | None = None) -> Embedder:
    torch.manual_seed(seed)
    return Embedder(cfg or _cfg())


@pytest.fixture(scope="module")
def phases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "phases"
    generate_dataset(SyntheticConfig(kind="phases", videos=4, frames=FRAMES, width=64, height=64), root)
    return root


@pytest.fixture(scope="module")
def twins(phases: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same video file twice under two names, with labels and warps for both."""
    root = tmp_path_factory.mktemp("twins")
    gt = json.loads((phases / "phases_000.json").read_text())
    for stem in ("a", "b"):
        shutil.copy(phases / "phases_000.mp4", root / f"{stem}.mp4")
    (root / "labels.json").write_text(json.dumps({s: gt["phase"] for s in ("a", "b")}))
    (root / "warps.json").write_text(json.dumps({s: gt["canonical_time"] for s in ("a", "b")}))
    return root


# ------------------------------------------------------------------------------------------ embedding


def test_normalisation_matches_the_training_pipeline() -> None:
    from train.data.pipeline import MEAN_RGB, STD_RGB

    assert (IMAGENET_MEAN, IMAGENET_STD) == (MEAN_RGB, STD_RGB)


@pytest.mark.parametrize("frames, steps, stride", [(30, 2, 15), (9, 3, 2), (5, 1, 15)])
def test_context_indices_match_the_training_sampler(frames: int, steps: int, stride: int) -> None:
    from train.data.sampling import with_context

    expected = with_context(np.arange(frames), steps, stride).reshape(frames, steps)
    np.testing.assert_array_equal(context_indices(frames, steps, stride), expected)


def test_resize_center_crop_keeps_the_centre() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resize_center_crop(frames, 32), frames[:, :, 8:40])
    flat = np.full((3, 50, 70, 3), 77, dtype=np.uint8)
    out = resize_center_crop(flat, 20)
    assert out.shape == (3, 20, 20, 3) and out.dtype == np.uint8 and (out == 77).all()


def test_embed_video_matches_a_per_frame_loop() -> None:
    cfg = dataclasses.replace(_cfg(), context_stride=3, eval=EvalConfig(size=32))
    model = _model(cfg=cfg).train()
    frames = np.random.default_rng(1).integers(0, 256, (7, 40, 52, 3), dtype=np.uint8)
    embs = embed_video(model, frames, cfg, batch_steps=3)
    assert embs.shape == (7, cfg.embed_dim) and embs.dtype == np.float32
    assert model.training  # put back in its previous mode

    model.eval()
    square = resize_center_crop(frames, 32).astype(np.float64) / 255
    square = (square - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    for t in range(7):
        clip = [square[max(0, t - (cfg.context_steps - 1 - k) * cfg.context_stride)] for k in range(2)]
        x = torch.from_numpy(np.stack(clip)).permute(0, 3, 1, 2).float()[None]
        with torch.no_grad():
            expected = model(x).embs[0, 0].numpy()
        np.testing.assert_allclose(embs[t], expected, rtol=1e-4, atol=1e-5)


def test_embed_video_chunking_gives_the_same_embeddings() -> None:
    cfg = _cfg()
    model = _model()
    frames = np.random.default_rng(2).integers(0, 256, (11, SIZE, SIZE, 3), dtype=np.uint8)
    one_pass = embed_video(model, frames, cfg, batch_steps=11)
    for batch_steps in (1, 4):
        # Convolutions may pick other kernels for other batch sizes: equal up to float rounding.
        np.testing.assert_allclose(
            embed_video(model, frames, cfg, batch_steps=batch_steps), one_pass, atol=1e-5
        )
    with pytest.raises(ValueError, match="batch_steps"):
        embed_video(model, frames, cfg, batch_steps=0)


# --------------------------------------------------------------------------------------- evaluation


def test_identical_videos_align_perfectly_even_untrained(twins: Path, tmp_path: Path) -> None:
    from tcc.method import SPEC

    cfg = _cfg(videos=str(twins), labels=str(twins / "labels.json"), warps=str(twins / "warps.json"))
    metrics = SPEC.evaluate(load_model(cfg, baseline="random-init"), cfg, str(tmp_path))
    assert metrics["tau"] == pytest.approx(1.0)
    assert metrics["align_error"] == 0.0
    assert {"phase_acc_10", "phase_acc_50", "phase_acc_100", "progression_r2"} <= set(metrics)


def test_evaluate_videos_writes_metrics_and_a_playable_aligned_video(phases: Path, tmp_path: Path) -> None:
    cfg = _cfg(videos=str(phases), labels=str(phases / "labels.json"), warps=str(phases), stride=2)
    model = _model()
    metrics = evaluate_videos(model, cfg, tmp_path, batch_steps=8)

    keys = {"tau", "align_error", "phase_acc_10", "phase_acc_50", "phase_acc_100", "progression_r2"}
    assert set(metrics) == keys and all(isinstance(v, float) for v in metrics.values())
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
    assert -1 <= metrics["tau"] <= 1 and metrics["align_error"] >= 0
    assert all(0 <= metrics[f"phase_acc_{p}"] <= 1 for p in (10, 50, 100))

    # tau is the metric of the sorted videos' per-frame embeddings at the configured stride
    embs = [embed_video(model, read_frames(p, SIZE), cfg) for p in list_videos(phases)]
    assert metrics["tau"] == pytest.approx(kendalls_tau(embs, stride=2), abs=1e-9)

    grid = read_frames(tmp_path / "aligned.mp4")  # 4 panels of 64 px in a 2 x 2 grid
    assert grid.shape == (FRAMES, 2 * SIZE, 2 * SIZE, 3)
    # The reference panel plays the reference video in order (inside its border; codec error only).
    reference = read_frames(phases / "phases_000.mp4", SIZE)
    diff = np.abs(grid[:, 4 : SIZE - 4, 4 : SIZE - 4].astype(int) - reference[:, 4:-4, 4:-4].astype(int))
    assert diff.mean() < 4


def test_max_videos_and_too_few_videos(phases: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2 videos"):
        evaluate_videos(_model(), _cfg(videos=str(phases), max_videos=1), tmp_path)
    missing = tmp_path / "labels.json"
    missing.write_text(json.dumps({"phases_000": [0] * FRAMES}))
    with pytest.raises(ValueError, match="missing for videos: phases_001"):
        evaluate_videos(_model(), _cfg(videos=str(phases), labels=str(missing)), tmp_path)


def test_warps_from_the_generator_folder_or_a_file(phases: Path, tmp_path: Path) -> None:
    warps = collect_warps(phases)
    assert sorted(warps) == [f"phases_{i:03d}" for i in range(4)]
    gt = json.loads((phases / "phases_002.json").read_text())
    assert warps["phases_002"] == gt["canonical_time"] and len(gt["canonical_time"]) == FRAMES
    (tmp_path / "warps.json").write_text(json.dumps(warps))
    assert load_warps(tmp_path / "warps.json") == load_warps(phases) == warps


def test_train_val_split_and_grid() -> None:
    assert train_val_split(4) == ([0, 1], [2, 3]) and train_val_split(5) == ([0, 1, 2], [3, 4])
    panels = [np.full((5, 7, 3), v, dtype=np.uint8) for v in (10, 20, 30)]
    grid = compose_grid(panels, border_first=False)
    assert grid.shape == (10, 14, 3)  # 2 x 2 grid, padded to even sides
    assert (grid[5:10, :7] == 30).all() and (grid[5:10, 7:] == 0).all()


# ------------------------------------------------------------------------------ configs and weights


def _run_dir(tmp_path: Path, model: Embedder, cfg: Config) -> Path:
    """A finished training run's layout: config.yaml (resolved, `tcc:` section) and final/weights.pt."""
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"method": "tcc", "tcc": _plain(cfg), "data": {}}))
    torch.save(model.state_dict(), run / "final" / "weights.pt")
    return run


def _plain(cfg: Config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples -> lists, as dump_config writes


def test_load_tcc_config_matches_the_training_loader(tmp_path: Path) -> None:
    from train.config import dump_config, load_config

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "configs" / "smoke" / "tcc.yaml")
    assert load_tcc_config(repo / "configs" / "smoke" / "tcc.yaml") == cfg.method_cfg  # with `extends`
    dump_config(cfg, tmp_path / "config.yaml")
    assert load_tcc_config(tmp_path / "config.yaml") == cfg.method_cfg  # a run's resolved config


@pytest.mark.parametrize(
    "section, message",
    [
        ({"embed_dimm": 8}, "unknown key 'tcc.embed_dimm'"),
        ({"embed_dim": "8"}, "tcc.embed_dim must be"),
        ({"eval": {"stride": 0}}, r"tcc.eval.stride must be >= 1"),
        ({"backbone": "vgg"}, "tcc.backbone must be one of 'resnet50', 'resnet18'"),
        ({"contrast": [0.5]}, "tcc.contrast must be"),
    ],
)
def test_load_tcc_config_is_strict(tmp_path: Path, section: dict, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"method": "tcc", "tcc": section}))
    with pytest.raises(ValueError, match=message):
        load_tcc_config(path)


def test_weights_round_trip_and_mismatch(tmp_path: Path) -> None:
    cfg = _cfg()
    model = _model(seed=3)
    run = _run_dir(tmp_path, model, cfg)
    weights, config = resolve_weights(str(run))
    assert (weights, config) == (run / "final" / "weights.pt", run / "config.yaml")
    assert resolve_weights(str(weights)) == (weights, config)
    loaded = load_model(load_tcc_config(config), weights)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    wider = _model(cfg=dataclasses.replace(cfg, embed_dim=12))
    state = {**wider.state_dict(), "extra.weight": torch.ones(1)}
    del state["temporal.0.1.running_var"]
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(ValueError) as err:
        load_model(cfg, tmp_path / "other.pt")
    text = str(err.value)
    assert "missing keys: temporal.0.1.running_var" in text and "unexpected keys: extra.weight" in text
    assert "head.2.weight (12, 16) (model (8, 16))" in text and "--config" in text

    with pytest.raises(ValueError, match=r"train\.resolve"):
        resolve_weights("runs:/0123abcd/weights")


def test_cli_baseline_and_trained_weights(phases: Path, tmp_path: Path, capsys, caplog) -> None:
    cfg = _cfg()
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"method": "tcc", "tcc": _plain(cfg)}))
    labels, warps = str(phases / "labels.json"), str(phases)
    data = [
        "--videos",
        str(phases),
        "--labels",
        labels,
        "--warps",
        warps,
        "--size",
        str(SIZE),
        "--device",
        "cpu",
    ]

    assert (
        main(["--baseline", "random-init", "--config", str(config), "--out", str(tmp_path / "b"), *data]) == 0
    )
    printed = capsys.readouterr().out
    baseline = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert "tau" in printed and "align_error" in printed and (tmp_path / "b" / "aligned.mp4").is_file()
    eval_cfg = EvalConfig(size=SIZE, videos=str(phases), labels=labels, warps=warps)
    again = evaluate_videos(
        load_model(cfg, baseline="random-init"), dataclasses.replace(cfg, eval=eval_cfg), tmp_path / "again"
    )
    assert again == pytest.approx(baseline)  # the baseline is the same model every time

    run = _run_dir(tmp_path, _model(seed=3), cfg)
    assert main(["--weights", str(run), *data]) == 0  # config.yaml and final/weights.pt of the run
    trained = json.loads((run / "eval" / "offline" / "metrics.json").read_text())
    assert trained != baseline

    bad = str(tmp_path / "bad.pt")
    torch.save({"head.2.weight": torch.zeros(3, 3)}, bad)
    assert main(["--weights", bad, "--config", str(config), *data]) == 2
    assert "missing keys" in caplog.text and "head.2.weight (3, 3)" in caplog.text
    assert main(["--weights", bad, *data]) == 2
    assert "pass --config FILE" in caplog.text


def test_pretrained_trunk_from_a_local_file_reaches_the_tcc_model(tmp_path: Path) -> None:
    """A user's torchvision-keyed trunk (here a file this test writes, as an ImageNet file would be) set by
    `tcc.weights` in a YAML config is what the built Embedder's trunk holds, and train_bn_only leaves
    only its BatchNorm trainable."""
    import torchvision

    from train.config import load_config

    repo = Path(__file__).resolve().parents[1]
    torch.manual_seed(5)
    full = torchvision.models.resnet18(weights=None)
    trunk_file = tmp_path / "my_resnet18.pt"
    torch.save(full.state_dict(), trunk_file)
    cfg_file = tmp_path / "tcc_pretrained.yaml"
    cfg_file.write_text(
        f"extends: {repo / 'configs/smoke/tcc.yaml'}\ntcc:\n  backbone: resnet18\n"
        f"  weights: {trunk_file}\n  train_bn_only: true\n"
    )
    model = Embedder(load_config(cfg_file).method_cfg)
    for key, value in model.trunk.state_dict().items():
        assert torch.equal(value, full.state_dict()[key]), key
    trainable = {n for n, p in model.trunk.named_parameters() if p.requires_grad}
    assert trainable and all("bn" in n or "downsample.1" in n for n in trainable)
