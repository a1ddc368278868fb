"""The run configuration: one typed tree shared by every method.

A YAML file names the method (`method: cycletime`) and holds one section with that method's own
settings under the method's name (schema: `<method>/config.py`), plus the generic sections below.
Each field's doc string is what `python train/run.py --help-config` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from core.config import param


@dataclass
class SyntheticConfig:
    """Generated videos, written when `data.root` is missing (smoke configs, demo, tests)."""

    kind: Literal["sprites", "phases"] = param("sprites", "sprites: moving textures (CycleTime); phases: TCC")
    videos: int = param(8, "how many videos to write", ge=1)
    frames: int = param(48, "frames per video", ge=2)
    width: int = param(160, "frame width in pixels", ge=16)
    height: int = param(128, "frame height in pixels", ge=16)
    codec: Literal["h264", "vp9"] = param("h264", "h264 -> .mp4, vp9 -> .webm")
    seed: int = param(0, "seed of the generator: same seed, same videos")


@dataclass
class DataConfig:
    """Where the videos are and how clips are decoded and augmented."""

    root: str = param("data/synthetic/sprites", "folder of videos (searched recursively) or a .txt list")
    generate: SyntheticConfig | None = param(None, "when set and `root` is missing, generate it first")
    labels: str | None = param(None, "optional per-frame labels file (JSON: {video stem: [label, ...]})")
    batch_size: int = param(8, "clips per GPU per micro-step", ge=1)
    short_side: int = param(256, "frames are resized so their short side is this many pixels", ge=16)
    crop: int = param(240, "side of the square random crop, one per clip, pixels", ge=16)
    flip: bool = param(True, "random horizontal flip, one per clip")
    decoder: Literal["auto", "nvdec", "dali-cpu", "pyav"] = param(
        "auto",
        "auto: on GPUs NVDEC through DALI's sequence reader for CycleTime clips of H.264 files, "
        "else PyAV (see docs/data.md); on CPUs DALI's CPU decoder (VP8/VP9/MJPEG) or PyAV (H.264/HEVC)",
    )
    nvdec_readers: int = param(
        8,
        "decoder: nvdec with CycleTime-style clips: NVDEC sequence-reader pipelines per rank, decoding "
        "in parallel; 0 uses DALI's per-sample decoder (one NVDEC set-up per clip, slow)",
        ge=0,
    )
    threads: int = param(4, "decoder/augmentation threads per rank", ge=1)
    prefetch: int = param(2, "batches decoded ahead of the training step", ge=1)
    batch_thread: bool = param(
        True,
        "assemble batches (DALI outputs, next feed, collate) on a background thread, 2 ahead of the "
        "training step, instead of on the training thread",
    )
    frame_cache_gib: float = param(
        0.0,
        "decoded frames of whole videos kept in RAM per rank, up to this many GiB (0: off); PyAV-decoded "
        "videos are then decoded once, whole, and clips are cut from RAM (small datasets; TCC's clips "
        "read frames from all over a video)",
        ge=0,
    )
    short_videos: Literal["skip", "pad"] = param(
        "skip", "a video shorter than one clip: skip it, or pad by repeating its last frame"
    )
    cache_dir: str | None = param(None, "where the dataset index is cached (default: next to the data)")
    seed: int = param(0, "seed of clip sampling and augmentation (offset by rank)")


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    name: Literal["adam", "adamw", "sgd"] = param("adam", "optimizer")
    lr: float = param(2e-4, "peak learning rate", gt=0)
    betas: tuple[float, float] = param((0.9, 0.999), "Adam betas")
    weight_decay: float = param(0.0, "weight decay (L2 for adam, decoupled for adamw)", ge=0)
    momentum: float = param(0.9, "SGD momentum", ge=0, lt=1)
    schedule: Literal["constant", "cosine", "linear"] = param("constant", "decay after warm-up")
    warmup_steps: int = param(0, "linear warm-up from 0 to lr over this many steps", ge=0)
    min_lr_ratio: float = param(0.0, "final lr as a fraction of lr (cosine, linear)", ge=0, le=1)


@dataclass
class TrainerConfig:
    """The training loop: length, precision, sharding, checkpoints, logging cadence."""

    steps: int = param(1000, "optimizer steps to train", ge=1)
    grad_accum: int = param(1, "micro-steps accumulated per optimizer step", ge=1)
    grad_clip: float = param(10.0, "max global gradient norm; 0 disables clipping", ge=0)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = param(
        "bf16", "bf16; fp16 (dynamic loss scaling); fp32; auto: bf16 on GPUs, fp32 on CPUs (CPU bf16 is slow)"
    )
    zero_stage: int = param(0, "DeepSpeed ZeRO stage", ge=0, le=3)
    channels_last: bool = param(True, "on GPUs, NHWC memory format for the 2D convolutions (tensor cores)")
    compile: bool = param(
        False,
        "torch.compile the model (Inductor): fuses the encoder's BatchNorm/ReLU/add chains; CycleTime's "
        "step 1.72x faster on an H200 (docs/performance.md); the first steps compile (a minute or two)",
    )
    seed: int = param(0, "global seed (each rank offsets it by its rank)")
    run_dir: str = param("runs/{method}", "checkpoints and resolved config; {method} is substituted")
    max_minutes: float = param(
        0.0, "wall-clock budget: checkpoint, export and finish at the first log step past it; 0: none", ge=0
    )
    resume: Literal["auto", "never"] = param("auto", "auto: continue from the latest complete checkpoint")
    log_every: int = param(
        10, "steps between metric logs (host syncs: here, and per step with skip_nonfinite)", ge=1
    )
    eval_every: int = param(0, "steps between evaluations; 0: only at the end", ge=0)
    eval_every_minutes: float = param(
        0.0, "wall-clock minutes between evaluations (checked at log steps); 0: only eval_every", ge=0
    )
    ckpt_every: int = param(500, "steps between checkpoints", ge=1)
    keep_last: int = param(3, "checkpoints kept on disk", ge=1)
    skip_nonfinite: bool = param(
        True,
        "check each loss before backward and skip non-finite steps on all ranks (one host sync per step)",
    )
    max_nonfinite: int = param(20, "stop after this many non-finite losses in a row", ge=1)
    ema: float = param(
        0.0,
        "decay of an exponential moving average of the weights, evaluated and exported instead of the "
        "last step's (e.g. 0.998: about the last 500 steps); 0: off. Not with zero_stage 3",
        ge=0,
        lt=1,
    )
    ema_eval_live: bool = param(
        False, "with ema: evaluations also score the last step's weights (logged as eval_live_*)"
    )
    precise_bn: int = param(
        0,
        "before each evaluation and the export, recompute BatchNorm running statistics for the weights "
        "scored (the average with ema) from this many of the most recent training batches; 0: keep "
        "the running averages of training. Not with zero_stage 3",
        ge=0,
    )


@dataclass
class TrackingConfig:
    """MLflow. `MLFLOW_TRACKING_URI`, when set, wins over `uri`."""

    enabled: bool = param(True, "log to MLflow")
    uri: str = param("sqlite:///mlflow.db", "tracking URI (embedded SQLite by default: no server)")
    experiment: str = param("cyclecorr", "experiment name")
    run_name: str | None = param(None, "run name; default: method and time")
    system_metrics: bool = param(True, "log CPU/GPU utilisation and memory")
    timeout_s: float = param(5.0, "per-request timeout against a tracking server", gt=0)
    retries: int = param(2, "retries per request before a logging call is given up", ge=0)


@dataclass
class LogConfig:
    """Console logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = param("INFO", "level of rank 0")
    all_ranks: bool = param(False, "log from every rank at `level` (others: WARNING)")


@dataclass
class Config:
    """One run. `method_cfg` is typed by the method and written under the method's name."""

    method: str = param(doc="which method trains: cycletime or tcc")
    method_cfg: Any = param(None, "the method's own section (see <method>/config.py)")
    data: DataConfig = param(factory=DataConfig, doc="videos, decoding and augmentation")
    optim: OptimConfig = param(factory=OptimConfig, doc="optimizer and schedule")
    trainer: TrainerConfig = param(factory=TrainerConfig, doc="training loop")
    tracking: TrackingConfig = param(factory=TrackingConfig, doc="MLflow")
    log: LogConfig = param(factory=LogConfig, doc="console logging")
    deepspeed: dict[str, Any] = param(
        factory=dict, doc="extra DeepSpeed config keys, merged over the generated one"
    )
