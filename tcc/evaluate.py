"""TCC's alignment evaluation on held-out videos: embed every frame, then Kendall's tau, phase
classification and progression (where labels exist), alignment error (where time warps exist), and a
grid video of the videos aligned to the first one.

Periodic: `evaluate_videos(model, cfg, out_dir)` (tcc.method.evaluate, called by the trainer).
Offline:  python -m tcc.evaluate --weights runs/<name> --videos DIR [--labels FILE] [--warps FILE|DIR]
Protocol and outputs: docs/evaluation-tcc.md.

Letters: T frames of a video, K context frames per step, D embedding size, S frame side (cfg.eval.size).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.backbones import IMAGENET_MEAN, IMAGENET_STD
from core.config import from_dict
from core.method import with_context
from core.runfiles import (
    build_seeded,
    load_state_dict_strict,
    read_method_config,
    resolve_run,
    weights_and_config,
)
from tcc.config import Config
from tcc.metrics import (
    align_to_reference,
    alignment_error,
    kendalls_tau,
    phase_classification,
    phase_progression,
)
from tcc.model import Embedder, video_embeddings
from tcc.video_frames import list_videos, read_frames, resize_center_crop, video_fps, write_aligned_grid

log = logging.getLogger(__name__)

BATCH_STEPS = 32  # steps (each K frames) per forward pass: bounds memory, not the result
FRACTIONS = (0.1, 0.5, 1.0)  # share of the training videos the phase classifier sees (upstream)
GRID_PANELS = 16  # videos shown in aligned.mp4 (the reference and the next 15)
RANDOM_INIT_SEED = 0  # --baseline random-init: the same untrained model every time
BASELINES = ("random-init",)


# ------------------------------------------------------------------------------------------ embedding


def context_indices(num_frames: int, context_steps: int, context_stride: int) -> np.ndarray:
    """Frame indices embedded for each step t: t - (K-1) s, ..., t - s, t, clipped at 0 -> int64 [T, K]
    (the training sampler's causal context: `core.method.with_context`)."""
    flat = with_context(np.arange(num_frames), context_steps, context_stride)
    return flat.reshape(num_frames, context_steps)


def embed_video(
    model: nn.Module,
    frames_THWC: np.ndarray,
    cfg: Config,
    device: torch.device | str | None = None,
    batch_steps: int = BATCH_STEPS,
) -> np.ndarray:
    """Embedding of every frame of a video: uint8 RGB [T, H, W, 3] -> float32 [T, D].

    Frame t is embedded with its causal context frames (`context_indices`), every frame resized and
    centre-cropped to cfg.eval.size and normalised as in training. `batch_steps` steps go through the
    model at a time ([1, batch_steps * K, 3, S, S]); the result does not depend on it. The model runs
    in eval mode under no_grad (bf16 autocast on CUDA) and is put back in its previous mode. `device`
    (default: the model's) is where the inputs go; the model must already be there.
    """
    if batch_steps < 1:
        raise ValueError(f"batch_steps must be >= 1, got {batch_steps}")
    frames_TSSC = resize_center_crop(frames_THWC, cfg.eval.size)
    param = next(model.parameters())
    device = torch.device(device) if device is not None else param.device
    on_cuda = device.type == "cuda"
    # Under DeepSpeed bf16 the parameters themselves are bf16: autocast handles that on CUDA; elsewhere
    # the inputs take the parameters' dtype.
    dtype = torch.float32 if on_cuda else param.dtype
    mean_C11 = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
    std_C11 = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
    idx_TK = context_indices(len(frames_TSSC), cfg.context_steps, cfg.context_stride)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else nullcontext()
    chunks = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast:
            for start in range(0, len(idx_TK), batch_steps):
                idx_F = idx_TK[start : start + batch_steps].reshape(-1)  # F = steps of the chunk x K
                clip_FSSC = torch.from_numpy(frames_TSSC[idx_F]).to(device)
                clip_FCSS = (clip_FSSC.permute(0, 3, 1, 2).float() / 255 - mean_C11) / std_C11
                embs_1TD = model(clip_FCSS.to(dtype).unsqueeze(0)).embs
                chunks.append(embs_1TD[0].float().cpu())
    finally:
        model.train(was_training)
    return video_embeddings(torch.cat(chunks)[None], cfg)[0].numpy()


# ------------------------------------------------------------------------------- labels and warps


def load_labels(path: str | Path) -> dict[str, list[int]]:
    """Per-frame integer phase labels, JSON {video stem: [label, ...]} (synthetic data: labels.json)."""
    data = _read_json_mapping(path, "labels")
    for stem, labels in data.items():
        if not isinstance(labels, list) or not all(isinstance(v, int) and v >= 0 for v in labels):
            raise ValueError(f"labels file {path}: {stem!r} must map to a list of integer phases >= 0")
    return data


def collect_warps(folder: str | Path) -> dict[str, list[float]]:
    """{stem: canonical time per frame} from per-video JSON files holding `canonical_time` (the
    synthetic generator's `<stem>.json`); other JSON files are ignored."""
    warps = {}
    for path in sorted(Path(folder).rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("canonical_time"), list):
            warps[path.stem] = data["canonical_time"]
    if not warps:
        raise ValueError(f"no <stem>.json with a 'canonical_time' list under {folder} (tcc.eval.warps)")
    return warps


def load_warps(path: str | Path) -> dict[str, list[float]]:
    """Canonical time per frame: a JSON file {stem: [t, ...]}, or a folder of per-video JSON files."""
    if Path(path).is_dir():
        return collect_warps(path)
    data = _read_json_mapping(path, "warps")
    for stem, times in data.items():
        if not isinstance(times, list) or not all(isinstance(v, (int, float)) for v in times):
            raise ValueError(f"warps file {path}: {stem!r} must map to a list of numbers")
    return data


def _read_json_mapping(path: str | Path, what: str) -> dict[str, Any]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist (tcc.eval.{what} / --{what})")
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{what} file {path} must hold a JSON object {{video stem: [...]}}")
    return data


def _per_video(table: dict[str, list], stems: Sequence[str], what: str, source: str) -> list[np.ndarray]:
    missing = [s for s in stems if s not in table]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"{what} in {source} are missing for videos: {shown}")
    return [np.asarray(table[s]) for s in stems]


def train_val_split(num_videos: int) -> tuple[list[int], list[int]]:
    """Videos (in sorted order) that train the phase classifier and regressor: the first ceil(N/2);
    the rest are scored."""
    half = (num_videos + 1) // 2
    return list(range(half)), list(range(half, num_videos))


# --------------------------------------------------------------------------------------- evaluation


def evaluate_videos(
    model: nn.Module,
    cfg: Config,
    out_dir: str | Path,
    *,
    device: torch.device | str | None = None,
    batch_steps: int = BATCH_STEPS,
) -> dict[str, float]:
    """Metrics of `model` on the videos of cfg.eval (see docs/evaluation-tcc.md); writes
    out_dir/metrics.json and out_dir/aligned.mp4 and returns {name: value}."""
    ev = cfg.eval
    if not ev.videos:
        raise ValueError("tcc.eval.videos is not set: give the folder of evaluation videos")
    paths = list_videos(ev.videos)
    if ev.max_videos:
        paths = paths[: ev.max_videos]
    if len(paths) < 2:
        raise ValueError(f"alignment needs at least 2 videos, found {len(paths)} under {ev.videos}")
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise ValueError(f"video names under {ev.videos} must be unique (labels are keyed by name)")
    labels = _per_video(load_labels(ev.labels), stems, "labels", ev.labels) if ev.labels else None
    warps = _per_video(load_warps(ev.warps), stems, "warps", ev.warps) if ev.warps else None

    start = time.monotonic()
    embs, shown = [], []
    for v, path in enumerate(paths):
        frames_TSSC = read_frames(path, ev.size)
        for what, table in (("labels", labels), ("warps", warps)):
            if table is not None and len(table[v]) != len(frames_TSSC):
                raise ValueError(
                    f"{path.name}: {len(frames_TSSC)} decoded frames but {len(table[v])} {what} in "
                    f"{getattr(ev, what)}"
                )
        embs.append(embed_video(model, frames_TSSC, cfg, device, batch_steps))
        if v < GRID_PANELS:
            shown.append(frames_TSSC)
    log.info(
        "tcc eval: embedded %d videos (%d frames) in %.1f s",
        len(paths),
        sum(len(e) for e in embs),
        time.monotonic() - start,
    )

    metrics = {"tau": kendalls_tau(embs, stride=ev.stride)}
    if warps is not None:
        errors = [
            alignment_error(embs[a], embs[b], warps[a], warps[b])
            for a in range(len(embs))
            for b in range(len(embs))
            if a != b
        ]
        metrics["align_error"] = float(np.mean(errors))
    if labels is not None:
        metrics.update(_phase_metrics(embs, labels))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    aligned = align_to_reference(embs[: len(shown)], reference=0)
    write_aligned_grid(out / "aligned.mp4", shown, aligned, video_fps(paths[0]))
    log.info("tcc eval: %s (wrote %s)", _one_line(metrics), out)
    return metrics


def _phase_metrics(embs: list[np.ndarray], labels: list[np.ndarray]) -> dict[str, float]:
    train, val = train_val_split(len(embs))
    train_labels = [labels[v] for v in train]
    if len(np.unique(np.concatenate(train_labels))) < 2:
        log.warning("tcc eval: the training videos hold a single phase; phase metrics skipped")
        return {}
    args = ([embs[v] for v in train], train_labels, [embs[v] for v in val], [labels[v] for v in val])
    accuracy = phase_classification(*args, fractions=FRACTIONS, classifier="svm")
    scores = {f"phase_acc_{round(100 * f)}": acc for f, acc in accuracy.items()}
    scores["progression_r2"] = phase_progression(*args)
    return scores


def _one_line(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


# ------------------------------------------------------------------------------ run config, weights


def load_tcc_config(path: str | Path) -> Config:
    """The `tcc:` section of a config file (a run's resolved config.yaml or a config with `extends`)
    as a typed, checked tcc.config.Config. Unknown keys, wrong types and out-of-bounds values raise."""
    return read_method_config(path, "tcc", Config)


def resolve_weights(spec: str) -> tuple[Path, Path | None]:
    """PATH_OR_RUN -> (weights file, the run's resolved config.yaml or None); see core.runfiles."""
    return resolve_run(spec)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a plain state dict (a run's final/weights.pt) into `model`, every key and shape."""
    load_state_dict_strict(
        model, path, "the TCC embedder of this config (pass the run's config with --config)"
    )


def load_model(cfg: Config, weights: str | Path | None = None, baseline: str | None = None) -> nn.Module:
    """The embedder to evaluate: trained weights (a state-dict file) or a baseline ('random-init')."""
    if (weights is None) == (baseline is None):
        raise ValueError("give --weights PATH_OR_RUN or --baseline random-init (one of them)")
    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"--baseline {baseline!r} is unknown; use one of {', '.join(BASELINES)}")
    # The trunk's initial weights file (cfg.weights) is irrelevant here: the state dict replaces them,
    # and the random-init baseline is random by definition.
    cfg = dataclasses.replace(cfg, weights=None)
    if baseline is not None:
        return build_seeded(lambda: Embedder(cfg), RANDOM_INIT_SEED)
    model = Embedder(cfg)
    load_weights(model, weights)
    return model


# -------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tcc.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="run directory (runs/<name>) or weights file (a plain state dict)")
    p.add_argument("--baseline", choices=BASELINES, help="evaluate the untrained model (seed 0) instead")
    p.add_argument("--config", help="config YAML with a tcc: section (default: the run's config.yaml)")
    p.add_argument("--videos", help="folder of evaluation videos (default: the config's tcc.eval.videos)")
    p.add_argument("--labels", help="JSON {stem: [phase per frame]} (e.g. <synthetic root>/labels.json)")
    p.add_argument("--warps", help="JSON {stem: [canonical time per frame]}, or a folder of <stem>.json")
    p.add_argument("--out", help="output folder (default: <run>/eval/offline, else tcc-eval)")
    p.add_argument("--stride", type=int, help="query stride of Kendall's tau (default: the config's)")
    p.add_argument("--size", type=int, help="frame side fed to the model (default: the config's)")
    p.add_argument("--max-videos", type=int, help="only the first N videos (0: all)")
    p.add_argument("--batch-steps", type=int, default=BATCH_STEPS, help="steps per forward pass (memory)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def format_table(metrics: dict[str, float]) -> str:
    width = max(len(k) for k in metrics)
    return "\n".join(f"{k:<{width}}  {v:.4f}" for k, v in metrics.items())


def _run(args: argparse.Namespace) -> tuple[dict[str, float], Path]:
    weights, config_path = weights_and_config(args.weights, args.config)
    cfg = load_tcc_config(config_path) if config_path else Config()
    overrides = {"videos": args.videos, "labels": args.labels, "warps": args.warps}
    overrides |= {"stride": args.stride, "size": args.size, "max_videos": args.max_videos}
    eval_cfg = from_dict(
        type(cfg.eval),
        {**dataclasses.asdict(cfg.eval), **{k: v for k, v in overrides.items() if v is not None}},
        "the command line",
        "tcc.eval.",
    )
    cfg = dataclasses.replace(cfg, eval=eval_cfg)
    if not cfg.eval.videos:
        raise ValueError("give --videos DIR (or tcc.eval.videos in the config)")
    device = torch.device(args.device)
    model = load_model(cfg, weights, args.baseline).to(device)
    run_dir = Path(args.weights) if args.weights and Path(args.weights).is_dir() else None
    out = Path(args.out) if args.out else (run_dir / "eval" / "offline" if run_dir else Path("tcc-eval"))
    log.info("evaluating %s on %s (config %s)", weights or args.baseline, cfg.eval.videos, config_path)
    return evaluate_videos(model, cfg, out, device=device, batch_steps=args.batch_steps), out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        metrics, out = _run(args)
    except (ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    print(format_table(metrics))  # the command's result, on stdout
    print(f"wrote {out / 'metrics.json'} and {out / 'aligned.mp4'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
