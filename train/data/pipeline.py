"""The DALI pipeline of one rank: decode the frames a sampler chose, crop/flip per clip, normalise.

Letters: B clips per batch, F frames per clip, H/W frame height/width, C = 3 colour channels.

The pipeline is fed (`feed_input`) rather than reading files itself: our sampler chooses the
videos, the frames and the augmentation, so DALI's reader sharding (shard_id/num_shards) is not
used; `shard_id`/`num_shards` are still recorded in `PipelineSettings` for logging. Per sample the
loader feeds either the encoded file (`encoded` + `frame_idx`, decoded here by
`fn.decoders.video`: NVDEC with device="mixed", DALI's CPU decoder with device="cpu") or frames
it decoded itself with PyAV (`decoded`); a per-sample `use_dali` flag routes each sample (DALI
conditionals), so one batch may mix both. Everything after decoding runs on the GPU when the
pipeline has one: resize (short side), one crop window and one flip per clip (parameters fed per
sample, so resuming reproduces them), normalisation with ImageNet mean/std, FCHW float32.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.backend import TensorListCPU, TensorListGPU
from nvidia.dali.pipeline import Pipeline

from core.backbones import IMAGENET_MEAN, IMAGENET_STD

# ImageNet statistics (CycleTime normalises with them), RGB in [0, 1]; scaled to 0..255 for DALI below.
MEAN_RGB = IMAGENET_MEAN
STD_RGB = IMAGENET_STD

_NO_BYTES = np.zeros((0,), dtype=np.uint8)
_NO_FRAMES = np.zeros((0, 1, 1, 3), dtype=np.uint8)
AUGMENT_INPUTS = ("crop_x", "crop_y", "flip")  # per-sample augmentation parameters, fed


@dataclass(frozen=True)
class PipelineSettings:
    """What one rank's pipeline is built with."""

    batch_size: int
    short_side: int
    crop: int
    device_id: int | None  # GPU of this rank; None on CPU-only machines
    dali_decoder: str | None  # "mixed" (NVDEC), "cpu" (DALI CPU decoder), None (PyAV frames only)
    pyav_frames: bool = True  # some samples come decoded by PyAV (with a DALI decoder: a mixed batch)
    num_threads: int = 2
    prefetch: int = 2
    seed: int = 0
    shard_id: int = 0  # = rank; for logging only (the sampler shards)
    num_shards: int = 1  # = world size; for logging only

    @property
    def inputs(self) -> tuple[str, ...]:
        """The external sources of this graph (DALI refuses data for a source the graph does not use)."""
        dali = ("encoded", "frame_idx") if self.dali_decoder is not None else ()
        pyav = ("decoded",) if self.pyav_frames or self.dali_decoder is None else ()
        route = ("use_dali",) if dali and pyav else ()
        return dali + pyav + route + AUGMENT_INPUTS


@dataclass(frozen=True)
class SampleInput:
    """What the loader feeds for one clip: encoded bytes for DALI to decode, or decoded frames."""

    frame_idx: np.ndarray  # int64 [F]
    crop_xy: tuple[float, float]
    flip: bool
    encoded: np.ndarray | None = None  # uint8 [bytes] of the whole file
    decoded: np.ndarray | None = None  # uint8 [F, H, W, C] RGB


class ClipPipeline:
    """One rank's DALI pipeline, fed one batch of `SampleInput`s at a time."""

    def __init__(self, settings: PipelineSettings):
        self.settings = settings
        self.inputs = settings.inputs
        self.pipe = _build(settings)

    def feed(self, samples: Sequence[SampleInput]) -> None:
        """Queue one batch (up to the pipeline's batch size) of inputs."""
        columns: dict[str, list[np.ndarray]] = {name: [] for name in self.inputs}
        for s in samples:
            use_dali = s.encoded is not None
            if ("encoded" if use_dali else "decoded") not in self.inputs:
                raise ValueError(f"this pipeline takes no {'encoded' if use_dali else 'decoded'} samples")
            values = {
                "encoded": s.encoded if use_dali else _NO_BYTES,
                "frame_idx": np.asarray(s.frame_idx, dtype=np.int32),
                "decoded": _NO_FRAMES if use_dali else s.decoded,
                "use_dali": np.array(use_dali),
                **augment_values(s.crop_xy, s.flip),
            }
            for name in self.inputs:
                columns[name].append(values[name])
        for name, column in columns.items():
            self.pipe.feed_input(name, column)

    def run(self, samples: Sequence[SampleInput], device: torch.device) -> torch.Tensor:
        """Feed, decode and return one batch synchronously (tools and failure isolation; needs prefetch=1)."""
        self.feed(samples)
        (frames,) = self.pipe.run()
        return to_torch(frames, device)


def _build(settings: PipelineSettings) -> Pipeline:
    on_gpu = settings.device_id is not None
    if settings.dali_decoder == "mixed" and not on_gpu:
        raise ValueError("NVDEC decoding (device='mixed') needs a GPU: device_id must be set")
    inputs = settings.inputs
    # Conditionals only where a batch can mix DALI-decoded and PyAV-decoded samples.
    routed = "use_dali" in inputs

    def dali_decode(encoded, frame_idx):
        # pad_mode="none": a frame past the end (file changed since indexing) is an error, not black.
        frames = fn.decoders.video(
            encoded, frames=frame_idx, device=settings.dali_decoder, pad_mode="none", affine=False
        )
        return frames.gpu() if on_gpu and settings.dali_decoder == "cpu" else frames

    @pipeline_def(enable_conditionals=routed)
    def clip_pipeline():
        source = {
            "encoded": lambda: fn.external_source(name="encoded", dtype=types.UINT8, ndim=1),
            "frame_idx": lambda: fn.external_source(name="frame_idx", dtype=types.INT32, ndim=1),
            "decoded": lambda: fn.external_source(name="decoded", dtype=types.UINT8, ndim=4, layout="FHWC"),
            "use_dali": lambda: fn.external_source(name="use_dali", dtype=types.BOOL, ndim=0),
        }
        x = {name: source[name]() for name in inputs if name not in AUGMENT_INPUTS}
        # Unpacked, not zip(..., strict=True): DALI's conditionals rewrite zip() here and refuse `strict`.
        x["crop_x"], x["crop_y"], x["flip"] = augment_sources()
        # Routed: a DALI conditional on the per-sample flag; otherwise a plain Python bool (one branch built).
        use_dali = x["use_dali"] if routed else "encoded" in x
        if use_dali:
            frames = dali_decode(x["encoded"], x["frame_idx"])
        else:
            frames = x["decoded"].gpu() if on_gpu else x["decoded"]
        return augment_clips(frames, x["crop_x"], x["crop_y"], x["flip"], settings)

    pipe = clip_pipeline(
        batch_size=settings.batch_size,
        num_threads=settings.num_threads,
        device_id=settings.device_id,
        seed=settings.seed,
        prefetch_queue_depth=settings.prefetch,
    )
    pipe.build()
    return pipe


def augment_values(crop_xy: tuple[float, float], flip: bool) -> dict[str, np.ndarray]:
    """One sample's values for the `AUGMENT_INPUTS` sources."""
    return {
        "crop_x": np.array(crop_xy[0], dtype=np.float32),
        "crop_y": np.array(crop_xy[1], dtype=np.float32),
        "flip": np.array(int(flip), dtype=np.int32),
    }


def augment_sources() -> tuple:
    """DALI graph part: the external sources of `AUGMENT_INPUTS` (crop position x, y; flip)."""
    return (
        fn.external_source(name="crop_x", dtype=types.FLOAT, ndim=0),
        fn.external_source(name="crop_y", dtype=types.FLOAT, ndim=0),
        fn.external_source(name="flip", dtype=types.INT32, ndim=0),
    )


def augment_clips(frames, crop_x, crop_y, flip, settings: PipelineSettings):
    """DALI graph part: uint8 FHWC clips -> resized (short side), cropped, flipped, normalised FCHW fp32."""
    frames = fn.resize(frames, resize_shorter=settings.short_side, antialias=True)
    return fn.crop_mirror_normalize(
        frames,
        crop=(settings.crop, settings.crop),
        crop_pos_x=crop_x,
        crop_pos_y=crop_y,
        mirror=flip,
        mean=[255 * m for m in MEAN_RGB],
        std=[255 * s for s in STD_RGB],
        output_layout="FCHW",
        dtype=types.FLOAT,
    )


def to_torch(frames: TensorListCPU | TensorListGPU, device: torch.device) -> torch.Tensor:
    """Copy a DALI output batch (B clips of [F, C, H, W] float32) into a new torch tensor on `device`.

    On the GPU the copy is finished when this returns (on a side stream; only the calling thread waits),
    so DALI may write a later batch into its buffer once the caller releases it, whatever the training
    step has queued on the default stream. A safeguard for the loader's batch thread, which runs a step
    ahead: on an H200 the busy-GPU loader test also passed with the copy queued on the default stream.
    """
    tensor = frames.as_tensor()
    if isinstance(frames, TensorListGPU):
        from nvidia.dali.plugin.pytorch import feed_ndarray  # imports torch's CUDA bits: only on GPU

        stream = _copy_stream(device)
        with torch.cuda.stream(stream):
            out = torch.empty(tensor.shape(), dtype=torch.float32, device=device)
        feed_ndarray(tensor, out, cuda_stream=stream)
        stream.synchronize()
        # Used on the default stream from here: its memory is not reused before that work is done.
        out.record_stream(torch.cuda.default_stream(device))
        return out
    return torch.from_numpy(np.array(tensor)).to(device)


_THREAD = threading.local()  # .copy_streams: {GPU index: side stream} of this thread


def _copy_stream(device: torch.device) -> torch.cuda.Stream:
    """This thread's side stream on `device` for `to_torch`'s copies."""
    streams = _THREAD.__dict__.setdefault("copy_streams", {})
    index = torch.device(device).index or 0
    if index not in streams:
        streams[index] = torch.cuda.Stream(device)
    return streams[index]


def decode_failure(checker: ClipPipeline, sample_input: SampleInput) -> str | None:
    """Why one sample fails in a single-sample pipeline (batch_size=1, prefetch=1), or None when it decodes.

    After a failure DALI refuses to run that pipeline again: build a new checker.
    """
    try:
        checker.feed([sample_input])
        checker.pipe.run()
        return None
    except RuntimeError as err:
        return dali_error_reason(err)


def dali_error_reason(err: BaseException) -> str:
    """The operator's own message out of DALI's error text (which wraps it in tracebacks)."""
    text = str(err)
    if "encountered:" in text:
        text = text.split("encountered:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "Critical error" not in ln]
    return (lines[0] if lines else type(err).__name__)[:200]
