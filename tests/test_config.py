"""The typed config: inheritance, overrides, round trip, and one-line errors that name key and file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from train.config import ConfigError, config_help, dump_config, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        "base.yaml",
        "method: cycletime\ncycletime:\n  backbone: resnet18\ndata:\n  batch_size: 4\noptim:\n  lr: 0.001\n",
    )


@pytest.mark.parametrize("path", CONFIGS, ids=[p.relative_to(REPO).as_posix() for p in CONFIGS])
def test_shipped_configs_load_and_round_trip(path: Path, tmp_path: Path) -> None:
    cfg = load_config(path)
    out = tmp_path / "resolved.yaml"
    dump_config(cfg, out)
    assert load_config(out) == cfg


def test_paper_defaults_are_the_ones_documented() -> None:
    cfg = load_config(REPO / "configs/cycletime.yaml")
    assert (cfg.method_cfg.w_cycle, cfg.method_cfg.w_skip, cfg.method_cfg.w_inlier) == (0.02, 0.1, 1.0)
    assert cfg.method_cfg.temperature == pytest.approx(512**-0.5)
    assert cfg.method_cfg.patch_source == "image"  # upstream's; the smoke sprites need "features"
    assert load_config(REPO / "configs/smoke/cycletime.yaml").method_cfg.patch_source == "features"
    tcc = load_config(REPO / "configs/tcc.yaml").method_cfg
    assert tcc.loss.loss_type == "regression_mse_var"
    assert (tcc.loss.temperature, tcc.loss.label_smoothing, tcc.loss.variance_lambda) == (0.1, 0.1, 0.001)


def test_extends_merges_sections_and_child_wins(base: Path, tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "extends: base.yaml\ndata:\n  crop: 64\n")
    cfg = load_config(child)
    assert cfg.data.batch_size == 4  # inherited
    assert cfg.data.crop == 64  # set by the child
    assert cfg.optim.lr == 0.001
    assert cfg.method_cfg.backbone == "resnet18"


def test_overrides_parse_yaml_scalars(base: Path) -> None:
    cfg = load_config(
        base, ["optim.lr=3e-4", "data.flip=false", "optim.betas=[0.5, 0.9]", "tracking.run_name=null"]
    )
    assert cfg.optim.lr == pytest.approx(3e-4)  # PyYAML reads 3e-4 as a string; floats accept it
    assert cfg.data.flip is False
    assert cfg.optim.betas == (0.5, 0.9)
    assert cfg.tracking.run_name is None


def test_override_can_switch_method(base: Path) -> None:
    cfg = load_config(base, ["method=tcc", "cycletime=null"])
    assert cfg.method == "tcc"
    assert cfg.method_cfg.loss.temperature == 0.1


def test_help_lists_every_section() -> None:
    text = config_help("tcc")
    for key in ("data.batch_size", "optim.lr", "trainer.zero_stage", "tracking.uri", "tcc.loss.temperature"):
        assert key in text
    assert "data.generate.videos" in text  # the keys of an optional section too


# ------------------------------------------------------------------------------------------ errors

BAD_CASES = {
    "unknown key with suggestion": (
        "method: cycletime\ndata:\n  batchsize: 4\n",
        [],
        ["'data.batchsize'", "did you mean 'batch_size'", "{file}"],
    ),
    "wrong type": (
        "method: cycletime\ndata:\n  batch_size: four\n",
        [],
        ["data.batch_size", "integer", "{file}"],
    ),
    "bool is not an int": ("method: cycletime\ntrainer:\n  steps: true\n", [], ["trainer.steps", "{file}"]),
    "out of range": (
        "method: cycletime\ntrainer:\n  zero_stage: 4\n",
        [],
        ["trainer.zero_stage", "<= 3", "{file}"],
    ),
    "bad choice with suggestion": (
        "method: cycletime\ntrainer:\n  precision: bf61\n",
        [],
        ["trainer.precision", "'bf16'", "did you mean", "{file}"],
    ),
    "missing required method": ("data:\n  batch_size: 2\n", [], ["'method'", "{file}"]),
    "unknown method": ("method: cycletme\n", [], ["cycletme", "did you mean 'cycletime'", "{file}"]),
    "section of another method": ("method: cycletime\ntcc:\n  num_frames: 3\n", [], ["'tcc'", "{file}"]),
    "method section unknown key": (
        "method: tcc\ntcc:\n  loss:\n    temprature: 0.1\n",
        [],
        ["'tcc.loss.temprature'", "did you mean 'temperature'", "{file}"],
    ),
    "cross-field check": (
        "method: cycletime\ncycletime:\n  max_cycle: 6\n",
        [],
        ["max_cycle", "context_frames", "{file}"],
    ),
    "section given a scalar": ("method: cycletime\noptim: 3\n", [], ["optim", "mapping", "{file}"]),
    "bad override key": (
        "method: cycletime\n",
        ["optim.lrr=1"],
        ["'optim.lrr'", "command line", "optim.lrr=1"],
    ),
    "override without =": ("method: cycletime\n", ["optim.lr"], ["optim.lr", "key.sub=value"]),
    "wrong tuple length": ("method: cycletime\noptim:\n  betas: [0.9]\n", [], ["optim.betas", "2 items"]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_config_names_key_and_file(case: str, tmp_path: Path) -> None:
    text, overrides, expected = BAD_CASES[case]
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    for piece in expected:
        assert piece.format(file=path) in message, message


def test_error_names_the_file_that_set_the_key(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", "method: cycletime\ndata:\n  crop: -1\n")
    child = write(tmp_path, "child.yaml", "extends: parent.yaml\noptim:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"data\.crop .*parent\.yaml"):
        load_config(child)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_missing_parent_is_named(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "extends: gone.yaml\nmethod: tcc\n")
    with pytest.raises(ConfigError, match=r"config file not found: .*gone\.yaml"):
        load_config(child)


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "method: tcc\ndata:\n  batch_size: [1, 2\n  crop: 3\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+:\d+: YAML syntax error"):
        load_config(path)


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "extends: b.yaml\nmethod: tcc\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_run_py_reports_bad_config_in_one_line_from_any_directory(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "method: tcc\noptim:\n  lr: -1\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "train/run.py"), "--config", str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "optim.lr must be > 0" in lines[0] and str(bad) in lines[0]


def test_run_py_reports_a_missing_data_root_in_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-videos-here"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "train/run.py"),
            "--config",
            str(REPO / "configs/cycletime.yaml"),
            f"data.root={missing}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("config error:")]
    assert len(errors) == 1 and "data.root" in errors[0] and str(missing) in errors[0]


def test_run_py_prints_resolved_config_from_any_directory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "train/run.py"),
            "--config",
            str(REPO / "configs/tcc.yaml"),
            "--print-config",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    resolved = write(tmp_path, "resolved.yaml", proc.stdout)
    assert load_config(resolved) == load_config(REPO / "configs/tcc.yaml")
