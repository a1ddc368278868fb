"""Evaluate CycleTime features by label propagation: DAVIS masks (J, F, J&F) and JHMDB joints (PCK).

Offline:
    python -m cycletime.evaluate --weights encoder.pt --davis ROOT --out DIR
    python -m cycletime.evaluate --baseline lab --davis ROOT --out DIR
writes DIR/<seq>/<frame>.png (palette masks, DAVIS results layout), DIR/overlays/<seq>.mp4 (frames
blended with the predicted masks; H.264 through PyAV) and DIR/results.json (scores per sequence and
overall, the settings, seconds and peak memory per sequence).
During training: `evaluate_davis(encode, root, cfg, out_dir, device)` with the model's encoder.

Legend: B batch, C channels, H x W image, h x w feature grid, T frames, J joints.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, fields
from functools import partial
from pathlib import Path

import numpy as np
import torch

from core.config import bounds_violation
from cycletime import davis, metrics
from cycletime.config import PropagationConfig
from cycletime.encoders import BASELINES, RANDOM_INIT_SEED, load_encoder
from cycletime.model import Encoder as NetworkEncoder
from cycletime.propagation import (
    STRIDE,
    Encoder,
    PropagationSettings,
    heatmaps_to_keypoints,
    keypoints_to_heatmaps,
    labels_to_mask,
    masks_to_labels,
    propagate_video,
)

log = logging.getLogger(__name__)

OVERLAY_FPS = 12
JHMDB_SIZE = 320  # CRW evaluates JHMDB at 320 px (it squashes to 320x320; we keep the aspect)


class OverlayVideo(AbstractContextManager):
    """An H.264 mp4 of RGB frames written through PyAV (opened on the first frame; odd sizes cropped
    to even, as yuv420p needs)."""

    def __init__(self, path: Path, fps: int = OVERLAY_FPS):
        self.path, self.fps = path, fps
        self._container = self._stream = None

    def write(self, frame_HW3: np.ndarray) -> None:
        import av  # only the overlays need PyAV: --no-overlays runs where it is not installed

        frame = np.ascontiguousarray(frame_HW3[: frame_HW3.shape[0] // 2 * 2, : frame_HW3.shape[1] // 2 * 2])
        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), mode="w")
            self._stream = self._container.add_stream("libx264", rate=self.fps)
            self._stream.height, self._stream.width = frame.shape[:2]
            self._stream.pix_fmt = "yuv420p"
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)

    def __exit__(self, *exc: object) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()


def blend(frame_HW3: np.ndarray, ids_HW: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Frame with object pixels tinted by their DAVIS palette colour."""
    out = frame_HW3.astype(np.float32)
    fg = ids_HW > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * davis.PALETTE[ids_HW[fg]]
    return out.astype(np.uint8)


def draw_joints(frame_HW3: np.ndarray, xy_J2: np.ndarray, half: int = 3) -> np.ndarray:
    """Frame with a small palette-coloured square on each (finite) joint."""
    out = frame_HW3.copy()
    H, W = out.shape[:2]
    for j, (x, y) in enumerate(xy_J2):
        if np.isfinite(x) and np.isfinite(y):
            xi, yi = round(x), round(y)
            out[max(0, yi - half) : min(H, yi + half + 1), max(0, xi - half) : min(W, xi + half + 1)] = (
                davis.PALETTE[j + 1]
            )
    return out


def _device_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> dict[str, int]:
    if device.type == "cuda":
        return {"peak_cuda_allocated_bytes": int(torch.cuda.max_memory_allocated(device))}
    # ru_maxrss is KiB on Linux and the peak of the whole process so far (it cannot be reset).
    return {"peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024}


def evaluate_sequence(
    encode: Encoder,
    seq: davis.DavisSequence,
    cfg: PropagationConfig,
    out_dir: Path | None,
    device: torch.device,
    settings: PropagationSettings,
    overlays: bool = True,
) -> tuple[metrics.SequenceScores, dict]:
    """Propagate the first mask of one sequence, write its PNGs (and overlay), score every frame."""
    if len(seq.masks) != len(seq.frames):
        raise ValueError(
            f"{seq.name}: scoring needs every frame annotated ({len(seq.masks)}/{len(seq.frames)})"
        )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    first = davis.read_mask(seq.masks[0])
    num_objects = int(first.max())
    if num_objects == 0:
        raise ValueError(f"{seq.name}: the first annotation {seq.masks[0]} has no object")
    image_hw = first.shape

    first_labels = partial(masks_to_labels, first, num_objects + 1)
    want_video = out_dir is not None and overlays
    j_rows, f_rows = [], []
    stream = propagate_video(encode, davis.iter_frames(seq), first_labels, settings, cfg.size, device)
    with OverlayVideo(out_dir / "overlays" / f"{seq.name}.mp4") if want_video else nullcontext() as video:
        for t, ((frame, labels_Dhw), gt) in enumerate(zip(stream, davis.iter_masks(seq), strict=True)):
            pred = first if t == 0 else labels_to_mask(labels_Dhw, image_hw).cpu().numpy().astype(np.uint8)
            if frame.shape[:2] != image_hw or gt.shape != image_hw:
                raise ValueError(
                    f"{seq.name} frame {t}: frame {frame.shape[:2]}, mask {gt.shape} and first "
                    f"mask {image_hw} sizes differ"
                )
            j_O, f_O = metrics.frame_scores(pred, gt, num_objects)
            j_rows.append(j_O)
            f_rows.append(f_O)
            if out_dir is not None:
                davis.write_mask(davis.prediction_path(out_dir, seq.name, seq.frames[t]), pred)
            if video is not None:
                video.write(blend(frame, pred))
    _device_sync(device)
    info = {
        "frames": len(seq.frames),
        "objects": num_objects,
        "grid_hw": list(labels_Dhw.shape[-2:]),
        "seconds": time.perf_counter() - start,
        **_peak_memory(device),
    }
    return metrics.SequenceScores.from_frames(np.array(j_rows), np.array(f_rows)), info


def evaluate_davis(
    encode: Encoder,
    root: str | Path,
    cfg: PropagationConfig,
    out_dir: str | Path | None,
    device: torch.device | str,
    *,
    overlays: bool = True,
    max_chunk_elements: int = 2**25,
) -> dict:
    """Label propagation on a DAVIS split -> {"sequences": {...}, "overall": {"J", "F", "J&F"}}.

    `encode` maps ImageNet-normalised frames [B, 3, H, W] to features at stride 8; put a model in
    eval mode first. `out_dir` None writes nothing (periodic evaluation may only want the numbers).
    """
    device = torch.device(device)
    sequences = davis.load_split(root, cfg.split)
    if cfg.max_sequences:
        sequences = sequences[: cfg.max_sequences]
    settings = PropagationSettings.from_config(cfg, max_chunk_elements)
    out = Path(out_dir) if out_dir is not None else None
    scores, infos = {}, {}
    for seq in sequences:
        scores[seq.name], infos[seq.name] = evaluate_sequence(
            encode, seq, cfg, out, device, settings, overlays
        )
        row = metrics.summarise({seq.name: scores[seq.name]})["overall"]
        log.info(
            "%s: J %.3f F %.3f J&F %.3f (%d frames, %.1f s)",
            seq.name,
            row["J"],
            row["F"],
            row["J&F"],
            infos[seq.name]["frames"],
            infos[seq.name]["seconds"],
        )
    results = metrics.summarise(scores)
    for name, info in infos.items():
        results["sequences"][name].update(info)
    return results


def evaluate_jhmdb(
    encode: Encoder,
    root: str | Path,
    cfg: PropagationConfig,
    out_dir: str | Path | None,
    device: torch.device | str,
    size: int = JHMDB_SIZE,
    thresholds: Sequence[float] = metrics.PCK_THRESHOLDS,
    max_chunk_elements: int = 2**25,
) -> dict:
    """Keypoint propagation on JHMDB clips -> {"PCK@0.1": ..., "PCK@0.2": ..., "clips": {...}}."""
    device = torch.device(device)
    settings = PropagationSettings.from_config(cfg, max_chunk_elements)
    dists, clips = [], {}
    for clip in davis.load_jhmdb(root):
        start = time.perf_counter()
        image_hw = davis.read_frame(clip.frames[0]).shape[:2]

        first_labels = partial(keypoints_to_heatmaps, clip.joints_xy[0], image_hw)
        frames = (davis.read_frame(p) for p in clip.frames)
        stream = propagate_video(encode, frames, first_labels, settings, size, device)
        path = Path(out_dir) / "overlays" / f"jhmdb-{clip.name}.mp4" if out_dir is not None else None
        pred = []
        with OverlayVideo(path) if path is not None else nullcontext() as video:
            for t, (frame, labels_Dhw) in enumerate(stream):
                xy_J2 = clip.joints_xy[0] if t == 0 else heatmaps_to_keypoints(labels_Dhw, image_hw)
                pred.append(xy_J2)
                if video is not None:
                    video.write(draw_joints(frame, xy_J2))
        boxes = metrics.pose_box_size(clip.joints_xy)
        dists.append(metrics.normalised_distances(np.stack(pred), clip.joints_xy, boxes))
        clip_pck = metrics.pck_from_distances([dists[-1]], thresholds)
        clips[clip.name] = {
            **{f"PCK@{k:g}": v for k, v in clip_pck.items()},
            "frames": len(clip.frames),
            "seconds": time.perf_counter() - start,
            **_peak_memory(device),
        }
    overall = metrics.pck_from_distances(dists, thresholds)
    return {**{f"PCK@{k:g}": v for k, v in overall.items()}, "size": size, "box": "diag0.6", "clips": clips}


def headline_metrics(results: dict) -> dict[str, float]:
    """The overall DAVIS numbers under metric names MLflow accepts."""
    overall = results["overall"]
    return {"davis/J": overall["J"], "davis/F": overall["F"], "davis/JF": overall["J&F"]}


def _parser() -> argparse.ArgumentParser:
    d = PropagationConfig()
    p = argparse.ArgumentParser(prog="python -m cycletime.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="a run directory (runs/<name>) or a weights file (final/weights.pt)")
    p.add_argument("--config", help="the run's config (model shape) when --weights is a file outside a run")
    p.add_argument("--baseline", choices=BASELINES, help="evaluate a baseline encoder instead of --weights")
    p.add_argument("--davis", help="DAVIS root (JPEGImages/, Annotations/, ImageSets/)")
    p.add_argument("--split", default=d.split, help="ImageSets/<split>.txt")
    p.add_argument("--size", type=int, default=d.size, help="frame height fed to the encoder (multiple of 8)")
    p.add_argument(
        "--context", type=int, default=d.context, help="recent frames in the context (+ the first)"
    )
    p.add_argument("--topk", type=int, default=d.topk, help="neighbours kept per position, over the context")
    p.add_argument(
        "--radius", type=float, default=d.radius, help="radius of the recent context, feature cells"
    )
    p.add_argument("--temperature", type=float, default=d.temperature, help="softmax temperature")
    p.add_argument("--max-sequences", type=int, default=d.max_sequences, help="first N sequences; 0 = all")
    p.add_argument("--jhmdb", help="JHMDB clip folder (or a folder of clips) for PCK")
    p.add_argument("--jhmdb-size", type=int, default=JHMDB_SIZE, help="frame height for JHMDB")
    p.add_argument("--out", default="cycletime-eval", help="output folder")
    p.add_argument("--no-overlays", action="store_true", help="skip the overlay videos")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--batchnorm",
        choices=("running", "frames"),
        default="running",
        help="BatchNorm statistics: the trained running ones (eval mode), or those of the frames encoded "
        "together (4 at a time), to see whether the running statistics hurt",
    )
    p.add_argument(
        "--features",
        choices=("projection", "trunk"),
        default=d.features,
        help="what the network encoder gives: the trained 1x1 projection after res4 (ReLU, feat_dim "
        "channels, what the tracker matches), or the res4 trunk before it (CRW reads res4 directly)",
    )
    p.add_argument("--chunk-elements", type=int, default=2**25, help="affinity entries per chunk (memory)")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.davis is None and args.jhmdb is None:
        raise SystemExit("give --davis ROOT and/or --jhmdb ROOT")
    cfg = PropagationConfig(
        davis=args.davis,
        split=args.split,
        size=args.size,
        context=args.context,
        topk=args.topk,
        radius=args.radius,
        temperature=args.temperature,
        max_sequences=args.max_sequences,
        features=args.features,
    )
    for f in fields(cfg):
        problem = bounds_violation(getattr(cfg, f.name), f.metadata)
        if problem:
            raise SystemExit(f"--{f.name.replace('_', '-')} {problem}")
    device = torch.device(args.device)
    try:
        encoder, model_cfg = load_encoder(args.weights, args.baseline, args.config)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}") from None
    if args.features == "trunk":
        if not isinstance(encoder, NetworkEncoder):
            raise SystemExit("error: --features trunk needs a network encoder, not --baseline lab")
        encoder = encoder.trunk
    encoder = encoder.to(device).eval()
    if args.batchnorm == "frames":
        for module in encoder.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.train()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "settings": {
            **asdict(cfg),
            "encoder": args.baseline or f"cycletime ({model_cfg.backbone}, {model_cfg.feat_dim} channels)",
            "baseline": args.baseline,
            "weights": args.weights,
            "device": str(device),
            "stride": STRIDE,
            "chunk_elements": args.chunk_elements,
            "batchnorm": args.batchnorm,
            "bound_th": metrics.BOUND_TH,
            "context_padding": "first frame (CRW)",
            "random_init_seed": RANDOM_INIT_SEED,
        }
    }
    if args.davis is not None:
        results["davis"] = evaluate_davis(
            encoder,
            args.davis,
            cfg,
            out,
            device,
            overlays=not args.no_overlays,
            max_chunk_elements=args.chunk_elements,
        )
        o = results["davis"]["overall"]
        log.info("DAVIS overall: J %.3f F %.3f J&F %.3f", o["J"], o["F"], o["J&F"])
    if args.jhmdb is not None:
        results["jhmdb"] = evaluate_jhmdb(
            encoder,
            args.jhmdb,
            cfg,
            None if args.no_overlays else out,
            device,
            size=args.jhmdb_size,
            max_chunk_elements=args.chunk_elements,
        )
        log.info("JHMDB: PCK@0.1 %.3f PCK@0.2 %.3f", results["jhmdb"]["PCK@0.1"], results["jhmdb"]["PCK@0.2"])
    (out / "results.json").write_text(json.dumps(results, indent=2))
    log.info("wrote %s", out / "results.json")
    return results


if __name__ == "__main__":
    main()
