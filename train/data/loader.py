"""The loader the trainer iterates: sampler -> (PyAV | encoded bytes) -> DALI pipeline -> batch dicts.

Letters: B clips per batch, F frames per clip, C = 3 channels, H = W = data.crop.

Each rank builds the same index and clip list, takes its own slice of every epoch's plan
(`sampling.epoch_plan`) and yields exactly `batches_per_epoch` batches per epoch, so collectives
never wait on a rank that ran out of data. Per batch, a thread pool prepares each sample ahead of
time (reads the file's bytes for DALI, or decodes the frames with PyAV) and the DALI pipeline keeps
`data.prefetch` batches in flight. With `data.batch_thread` (the default) `iter(loader)` assembles
the batches (DALI's outputs, the next feed, the collate) on a background thread, `BATCHES_AHEAD` ahead
of the training step: on the training thread that work would run while the GPU idles at the step's host
syncs. A sample that fails to decode is replaced by a random clip of another video (counted, and the
file is named in a warning) so the batch count never changes.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from core.method import ClipSpec
from train.config.schema import DataConfig
from train.data import decoders
from train.data.batch import collate
from train.data.index import VideoIndex, build_index
from train.data.pipeline import (
    ClipPipeline,
    PipelineSettings,
    SampleInput,
    dali_error_reason,
    decode_failure,
    to_torch,
)
from train.data.sample_source import SampleSource
from train.data.sampling import EpochPlan, Sample, build_clip_list, epoch_plan
from train.data.sequence_reader import (
    SequenceReaderStream,
    sequence_reader_failure_advice,
    sequence_reader_refusal,
)

log = logging.getLogger(__name__)

BATCHES_AHEAD = 2  # batches the background thread holds ready (GPU memory: this many batches of frames)


@dataclass
class _Batch:
    """One batch on its way: planned, being prepared, or fed to DALI."""

    epoch: int
    index: int
    plan: EpochPlan
    samples: list[Sample]
    futures: list[Future] | None = None
    inputs: list[SampleInput] | None = None


class VideoLoader:
    """Batches of clips for one rank, forever (`iter`) or one epoch at a time (`epoch_iter`).

    A batch is a dict of tensors on `device`: frames [B, F, C, H, W] float32 (ImageNet-normalised),
    frame_idx [B, F] int64, video_len [B] int64, video_id [B] int64 (row of the index),
    valid [B] bool (False: a clip repeated to pad the epoch), and labels [B, F] int64 (-1 where
    missing) when the index has labels.
    """

    def __init__(
        self,
        index: VideoIndex,
        clip: ClipSpec,
        data_cfg: DataConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        ram_cache_bytes: int = 2 << 30,
    ):
        if data_cfg.crop > data_cfg.short_side:
            raise ValueError(
                f"data.crop ({data_cfg.crop}) must be <= data.short_side ({data_cfg.short_side}): "
                "the crop is cut from frames resized to that short side"
            )
        self.index, self.clip, self.cfg = index, clip, data_cfg
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.seed = data_cfg.seed if seed is None else seed
        self._lengths = index.lengths()
        self.clips = build_clip_list(self._lengths, clip, data_cfg.short_videos)
        if len(self.clips) == 0:
            raise ValueError(
                f"data.root {index.root}: every video is shorter than one clip ({clip.min_length} frames); "
                "set data.short_videos: pad, or use longer videos"
            )
        on_gpu = self.device.type == "cuda"
        self._routes = decoders.route(index.videos, data_cfg.decoder, on_gpu)
        # On GPUs, `auto` and `nvdec` both ask whether the NVDEC sequence reader can serve every clip
        # (None: it can). It beats PyAV several times (docs/data.md), so `auto` takes it then; elsewhere
        # PyAV beats DALI's per-sample NVDEC decoder, so `auto` keeps PyAV.
        no_reader = None
        if on_gpu and data_cfg.decoder in ("auto", "nvdec"):
            nvdec = decoders.route(index.videos, "nvdec", on_gpu)
            no_reader = sequence_reader_refusal(data_cfg.nvdec_readers, clip, nvdec, index.videos, self.clips)
            if no_reader is None:
                self._routes = nvdec
        self._decoder_name, decoder_line = decoders.describe(index.videos, self._routes)
        self.settings = PipelineSettings(
            batch_size=data_cfg.batch_size,
            short_side=data_cfg.short_side,
            crop=data_cfg.crop,
            device_id=(self.device.index or 0) if on_gpu else None,
            dali_decoder=decoders.dali_device(self._routes),
            pyav_frames="pyav" in self._routes,
            num_threads=data_cfg.threads,
            prefetch=data_cfg.prefetch,
            seed=self.seed + rank,
            shard_id=rank,
            num_shards=world_size,
        )
        self._source = SampleSource(
            index, self._routes, ram_cache_bytes, int(data_cfg.frame_cache_gib * 2**30)
        )
        self._pool = ThreadPoolExecutor(max(1, data_cfg.threads), thread_name_prefix="cyclecorr-data")
        self._epoch, self._batch = 0, 0  # the next batch handed to the caller
        self._plans: dict[int, EpochPlan] = {}
        self._pipe: ClipPipeline | None = None
        self._ahead: deque[_Batch] = deque()  # being prepared, not yet fed
        self._in_dali: deque[_Batch] = deque()  # fed, output pending
        self._next_pos = (0, 0)
        self._unexplained_failures = 0
        self._worker: _BatchThread | None = None  # iter(): the thread assembling batches, when running
        self._reader: SequenceReaderStream | None = None
        if "nvdec" in self._routes and no_reader is None:
            self._reader = SequenceReaderStream(
                index, self.settings, clip.offsets, data_cfg.nvdec_readers, self.plan, self.batches_per_epoch
            )
            decoder_line += f"; NVDEC sequence reader, {data_cfg.nvdec_readers} pipelines per rank"
        elif "nvdec" in self._routes:
            decoder_line += f"; DALI's per-sample NVDEC decoder ({no_reader})"
        self._log_start(decoder_line)

    # ---- public surface -------------------------------------------------------------------------
    @property
    def batches_per_epoch(self) -> int:
        """Batches every rank yields per epoch (clips padded up to whole batches on every rank)."""
        return math.ceil(len(self.clips) / (self.world_size * self.cfg.batch_size))

    @property
    def decoder(self) -> str:
        """The decoders in use: "nvdec", "dali-cpu", "pyav", or a "+"-joined mix."""
        return self._decoder_name

    @property
    def epoch(self) -> int:
        """The epoch of the next batch."""
        return self.position[0]

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, batch) of the next batch the caller gets (the background thread may be ahead of it)."""
        return self._worker.consumed if self._worker is not None else (self._epoch, self._batch)

    def stats(self) -> dict[str, int]:
        """Counts of what was left out, padded, replaced and how samples were decoded."""
        counts = dict(self._source.counts)
        failed = len(self._source.failed)
        return {
            "videos": len(self.index),
            "files_unreadable": len(self.index.bad),
            "short_skipped": len(self.clips.skipped),
            "short_padded": len(self.clips.padded),
            "clips_per_epoch": len(self.clips),
            "videos_failed": failed,
            "samples_replaced": counts.get("replaced", 0),
            "pipeline_rebuilds": counts.get("rebuilds", 0),
            "videos_rerouted_to_pyav": counts.get("rerouted", 0),
            "samples_dali": counts.get("dali", 0),
            "samples_pyav": counts.get("pyav", 0),
        }

    def plan(self, epoch: int) -> EpochPlan:
        """This rank's plan of `epoch` (what each batch holds before decoding; pure in seed and epoch)."""
        if epoch not in self._plans:
            self._plans = {e: p for e, p in self._plans.items() if e >= epoch - 1}
            self._plans[epoch] = epoch_plan(
                self.clips,
                self.clip,
                self._lengths,
                seed=self.seed,
                epoch=epoch,
                rank=self.rank,
                world_size=self.world_size,
                batch_size=self.cfg.batch_size,
                flip=self.cfg.flip,
            )
        return self._plans[epoch]

    def state_dict(self) -> dict[str, Any]:
        """The position of the next batch; the plan is a pure function of (seed, epoch), so this is all."""
        epoch, batch = self.position
        return {
            "epoch": epoch,
            "batch": batch,
            "world_size": self.world_size,
            "seed": self.seed,
            "clips_per_epoch": len(self.clips),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()`: the next batch is the one an uninterrupted run would yield."""
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if state.get("seed", self.seed) != self.seed or state.get("clips_per_epoch") not in (
            None,
            len(self.clips),
        ):
            log.warning("data: resuming with a different seed or dataset: the epoch's order differs")
        old_world = int(state.get("world_size", self.world_size))
        if old_world != self.world_size:
            # The same share of the epoch is consumed; the exact samples differ.
            batch = batch * old_world // self.world_size
            log.warning(
                "data: world size %d -> %d: resuming epoch %d at batch %d",
                old_world,
                self.world_size,
                epoch,
                batch,
            )
        if batch >= self.batches_per_epoch:
            epoch, batch = epoch + 1, 0
        self._stop_worker()
        self._reset()
        self._epoch, self._batch = epoch, batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches forever; with `data.batch_thread` assembled on a background thread."""
        if not self.cfg.batch_thread:
            while True:
                yield self._next()
        self._stop_worker()  # one background thread per loader: a second iter() takes over
        worker = self._worker = _BatchThread(self, (self._epoch, self._batch))
        try:
            while True:
                yield worker.get()
        finally:
            if self._worker is worker:
                self._stop_worker()

    def epoch_iter(self) -> Iterator[dict[str, torch.Tensor]]:
        """The remaining batches of the current epoch, assembled on the calling thread."""
        self._stop_worker()
        epoch = self._epoch
        while self._epoch == epoch:
            yield self._next()

    def close(self) -> None:
        """Stop the worker threads and release the pipeline."""
        self._stop_worker()
        self._reset()
        if self._reader is not None:
            self._reader.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> VideoLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the stream -----------------------------------------------------------------------------
    def _stop_worker(self) -> None:
        """Stop the background thread and rewind to the first batch the caller has not got: the batches
        it made ahead are dropped (DALI's queue with them) and are made again by the next iteration."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        worker.stop()
        self._reset()
        self._epoch, self._batch = worker.consumed

    def _next(self) -> dict[str, torch.Tensor]:
        if self._reader is not None:
            if self._reader.position != (self._epoch, self._batch):
                self._reader.seek(self._epoch, self._batch)
            try:
                samples, frames = self._reader.next()
            except RuntimeError as err:  # DALI reports operator failures as RuntimeError
                # The per-sample path isolates the failing file and moves it to PyAV; nothing is lost.
                reason = dali_error_reason(err)
                log.warning(
                    "data: the NVDEC sequence reader failed (%s); decoding per sample from epoch %d "
                    "batch %d%s",
                    reason,
                    self._epoch,
                    self._batch,
                    sequence_reader_failure_advice(reason),
                )
                self._reader.close()
                self._reader = None
            else:
                self._source.count("dali", len(samples))
                self._advance()
                return collate(samples, frames, self._lengths, self.index.labels, self.device)
        if self._pipe is None:
            self._start()
        assert self._pipe is not None
        while True:
            try:
                outputs = self._pipe.pipe.share_outputs()
                self._unexplained_failures = 0
                break
            except RuntimeError as err:  # DALI reports operator failures as RuntimeError
                self._recover(err)
        frames = to_torch(outputs[0], self.device)
        self._pipe.pipe.release_outputs()
        batch = self._in_dali.popleft()
        self._feed(self._ahead.popleft())
        self._pipe.pipe.schedule_run()
        self._top_up()
        self._advance()
        return collate(batch.samples, frames, self._lengths, self.index.labels, self.device)

    def _advance(self) -> None:
        self._batch += 1
        if self._batch == self.batches_per_epoch:
            self._log_epoch_end()
            self._epoch, self._batch = self._epoch + 1, 0

    def _start(self) -> None:
        self._pipe = ClipPipeline(self.settings)
        self._next_pos = (self._epoch, self._batch)
        self._top_up()
        for _ in range(self.settings.prefetch):
            self._feed(self._ahead.popleft())
            self._top_up()
        self._pipe.pipe.schedule_run()  # the first run decodes `prefetch` batches

    def _reset(self) -> None:
        for batch in self._ahead:
            for future in batch.futures or ():
                future.cancel()
        self._ahead.clear()
        self._in_dali.clear()
        self._pipe = None

    def _top_up(self) -> None:
        """Keep one batch more than DALI's queue being prepared in the thread pool."""
        while len(self._ahead) < self.settings.prefetch + 1:
            epoch, index = self._next_pos
            plan = self.plan(epoch)
            samples = plan.batch(index)
            futures = [self._pool.submit(self._source.prepare, plan, s) for s in samples]
            self._ahead.append(_Batch(epoch, index, plan, samples, futures))
            self._next_pos = (epoch, index + 1) if index + 1 < plan.batches else (epoch + 1, 0)

    def _feed(self, batch: _Batch) -> None:
        if batch.inputs is None:
            assert batch.futures is not None
            prepared = [f.result() for f in batch.futures]
            batch.samples = [s for s, _ in prepared]
            batch.inputs = [i for _, i in prepared]
        for slot, sample in enumerate(batch.samples):
            if self._source.stale(sample, batch.inputs[slot]):  # its video failed or moved to PyAV meanwhile
                batch.samples[slot], batch.inputs[slot] = self._source.prepare(batch.plan, sample)
        assert self._pipe is not None
        self._pipe.feed(batch.inputs)
        self._in_dali.append(batch)

    # ---- DALI failures --------------------------------------------------------------------------
    def _recover(self, err: RuntimeError) -> None:
        """The pipeline failed (DALI then refuses to run it again): rebuild it, find the failing samples
        one at a time in a single-sample pipeline, move their videos to PyAV (a stand-in replaces the
        sample if PyAV fails too), and re-feed the batches in flight."""
        log.warning(
            "data: the DALI pipeline failed (%s); isolating the failing sample", dali_error_reason(err)
        )
        self._source.count("rebuilds")
        pending = list(self._in_dali)
        self._in_dali.clear()
        self._pipe = None
        single = replace(self.settings, batch_size=1, prefetch=1)
        checker = ClipPipeline(single)
        culprits = 0
        for batch in pending:
            assert batch.inputs is not None
            for slot in range(len(batch.samples)):
                while batch.inputs[slot].encoded is not None:
                    reason = decode_failure(checker, batch.inputs[slot])
                    if reason is None:
                        break
                    checker = ClipPipeline(single)  # a failure invalidates the pipeline
                    culprits += 1
                    self._source.reroute(batch.samples[slot].video_id, reason)
                    batch.samples[slot], batch.inputs[slot] = self._source.prepare(
                        batch.plan, batch.samples[slot]
                    )
        del checker
        if culprits == 0:
            self._unexplained_failures += 1
            if self._unexplained_failures > 2:
                raise RuntimeError(
                    "data: the DALI pipeline keeps failing on samples that decode alone"
                ) from err
        if culprits and not self.settings.pyav_frames:
            self.settings = replace(self.settings, pyav_frames=True)  # the graph must now take PyAV frames
        self._decoder_name, _ = decoders.describe(self.index.videos, self._source.routes)
        self._pipe = ClipPipeline(self.settings)
        for batch in pending:
            self._feed(batch)
        self._pipe.pipe.schedule_run()

    # ---- logging --------------------------------------------------------------------------------
    def _log_start(self, decoder_line: str) -> None:
        s = self.settings
        log.info(
            "data: %d videos (%d frames) from %s; %d files left out%s",
            len(self.index),
            int(self._lengths.sum()),
            self.index.root,
            len(self.index.bad),
            f" (see `python -m train.data index {self.index.root}`)" if self.index.bad else "",
        )
        for bad in self.index.bad:
            log.info("data: left out %s: %s", Path(bad.path).name, bad.reason)
        if self.clips.skipped or self.clips.padded:
            ids = self.clips.skipped or self.clips.padded
            names = ", ".join(self.index.videos[i].name for i in ids[:5]) + (" ..." if len(ids) > 5 else "")
            what = "skipped" if self.clips.skipped else "padded by repeating their last frame"
            log.info(
                "data: %d videos shorter than one clip (%d frames) %s (data.short_videos: %s): %s",
                len(ids),
                self.clip.min_length,
                what,
                self.cfg.short_videos,
                names,
            )
        if self.index.label_problems:
            log.warning(
                "data: %d videos without usable labels (label -1): %s",
                len(self.index.label_problems),
                "; ".join(self.index.label_problems[:3]),
            )
        log.info("data: decoder %s (%s); augmentation on %s", self.decoder, decoder_line, self.device)
        log.info(
            "data: rank %d of %d (shard_id=%d/num_shards=%d, sharded by the sampler): %d clips/epoch, "
            "%d batches of %d per rank, %d frames per clip, prefetch %d",
            self.rank,
            self.world_size,
            s.shard_id,
            s.num_shards,
            len(self.clips),
            self.batches_per_epoch,
            s.batch_size,
            self.clip.frames_per_clip,
            s.prefetch,
        )

    def _log_epoch_end(self) -> None:
        stats = self.stats()
        # Short epochs (small datasets) would flood the log: INFO only when it says something new.
        news = self.batches_per_epoch >= 50 or stats["samples_replaced"] or stats["videos_failed"]
        log.log(
            logging.INFO if news else logging.DEBUG,
            "data: epoch %d done (%d batches); decoded dali %d / pyav %d; %d replaced, %d files failed",
            self._epoch,
            self.batches_per_epoch,
            stats["samples_dali"],
            stats["samples_pyav"],
            stats["samples_replaced"],
            stats["videos_failed"],
        )
        if self._reader is not None:
            log.debug(
                "data: NVDEC sequence-reader pipelines built in %.1fs so far", self._reader.build_seconds
            )


class _BatchThread:
    """Runs `loader._next()` on a daemon thread, `BATCHES_AHEAD` batches ahead of `get()`.

    The thread is the only one touching the loader's stream state (DALI pipelines, positions) while it
    runs; `get()` re-raises its errors on the caller's thread. `consumed` is the caller's position.
    """

    def __init__(self, loader: VideoLoader, start: tuple[int, int]):
        self.consumed = start
        self._per_epoch = loader.batches_per_epoch
        self._queue: queue.Queue = queue.Queue(maxsize=BATCHES_AHEAD)
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(loader,), name="cyclecorr-batches", daemon=True
        )
        self._thread.start()

    def _run(self, loader: VideoLoader) -> None:
        try:
            if loader.device.type == "cuda":
                torch.cuda.set_device(loader.device)  # this thread's default device is the rank's GPU
            while not self._stopping.is_set():
                item = ((loader._epoch, loader._batch), loader._next(), None)
                self._put(item)
        except BaseException as err:  # handed to the caller's thread and raised there
            self._put((None, None, err))

    def _put(self, item: tuple) -> None:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self) -> dict[str, torch.Tensor]:
        position, batch, err = self._queue.get()
        if err is not None:
            raise err
        epoch, index = position
        self.consumed = (epoch, index + 1) if index + 1 < self._per_epoch else (epoch + 1, 0)
        return batch

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        while not self._queue.empty():
            self._queue.get_nowait()


def build_loader(
    data_cfg: DataConfig,
    clip: ClipSpec,
    *,
    rank: int,
    world_size: int,
    local_rank: int,
    device: torch.device,
    seed: int | None = None,
) -> VideoLoader:
    """Index `data_cfg.root` (generating it first when missing and `data.generate` is set) and build
    this rank's loader. Only rank 0 writes the index cache; every rank computes the same index."""
    root = Path(data_cfg.root)
    if data_cfg.generate is not None and (not root.exists() or (root / "DONE").exists()):
        _generate(data_cfg, root, local_rank)  # a generated root is regenerated when its config changed
    index = build_index(
        root,
        cache_dir=data_cfg.cache_dir,
        labels=data_cfg.labels,
        workers=data_cfg.threads,
        write_cache=rank == 0,
    )
    if not index.videos:
        raise ValueError(
            f"data.root {root}: no readable video ({len(index.bad)} files left out; "
            f"run `python -m train.data index {root}` to see why)"
        )
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return VideoLoader(index, clip, data_cfg, rank=rank, world_size=world_size, device=device, seed=seed)


_GENERATE_TIMEOUT_S = 1800


def _generate(data_cfg: DataConfig, root: Path, local_rank: int) -> None:
    """Local rank 0 writes (or reuses) the synthetic dataset; the other ranks wait for its manifest.

    `generate_dataset` writes beside `root` and renames into place, so no rank indexes half a dataset.
    """
    from train.data.synthetic import config_fingerprint, generate_dataset, read_manifest

    assert data_cfg.generate is not None
    if local_rank == 0:
        generate_dataset(data_cfg.generate, root)
        return
    fingerprint = config_fingerprint(data_cfg.generate)
    deadline = time.monotonic() + _GENERATE_TIMEOUT_S
    while (read_manifest(root) or {}).get("fingerprint") != fingerprint:
        if time.monotonic() > deadline:
            raise TimeoutError(f"data: local rank 0 did not finish generating {root}")
        time.sleep(1.0)
