"""The training loop: method registry + data + DeepSpeed + checkpoints + MLflow, for any method.

Host syncs: metrics and the all-rank agreement to stop happen on log steps only. The one per-step
sync is the non-finite guard (`trainer.skip_nonfinite`, on by default): every loss is checked before
backward and, if any rank's is inf/NaN, all ranks skip that backward and update together (a rank
that skipped alone would leave the others waiting in the gradient all-reduce), and the forward's
changes to the model's buffers (BatchNorm running statistics) are put back. With the guard off,
a non-finite loss is only seen at the next log step, which then stops the run with the last good
checkpoint kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from train import checkpoint
from train.config import Config, ConfigError, config_to_dict, dump_config
from train.ema import WeightAverage
from train.engine import (
    DTYPES,
    DistInfo,
    barrier,
    build_engine,
    init_distributed,
    multi_rank,
    prepare_model,
    resolve_precision,
)
from train.meters import LossMeter, Throughput, device_memory
from train.methods import load_method
from train.precise_bn import RecentBatches, recalibrate
from train.tracking import Tracker, flatten, git_sha, tracking_uri

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]

EXIT_OK = 0
EXIT_NONFINITE = 3
EXIT_OUT_OF_MEMORY = 4  # a step ran out of GPU memory: the log names what to lower
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint; rerun to resume


@dataclass
class RunState:
    step: int = 0  # optimizer steps done
    nonfinite_total: int = 0
    nonfinite_in_a_row: int = 0
    mlflow_run_id: str | None = None


class Trainer:
    """Builds every component from the config; `train()` runs to the end or to a clean stop."""

    def __init__(self, cfg: Config) -> None:
        self.dist: DistInfo = init_distributed()
        precision = resolve_precision(cfg.trainer.precision, self.dist.device)
        if precision != cfg.trainer.precision:
            log.info("trainer.precision=auto: %s on %s", precision, self.dist.device.type)
            cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, precision=precision))
        for key in ("ema", "precise_bn"):
            if getattr(cfg.trainer, key) and cfg.trainer.zero_stage == 3:
                raise ConfigError(
                    f"trainer.{key} needs every rank to hold whole parameters: use zero_stage 0-2, or "
                    f"trainer.{key}=0"
                )
        self.cfg = cfg
        self.spec = load_method(cfg.method)
        self.mcfg = cfg.method_cfg
        if cfg.trainer.compile and getattr(self.mcfg, "freeze_encoder_steps", 0):
            # Unfreezing changes which parameters need gradients; the first compiled backward after it
            # gave ZeRO-2's gradient hook a None gradient on an H200 ('NoneType' object has no attribute
            # 'view', docs/results/gpu-2026-12-04e). A CPU run of the same did not show it, so no test here
            # can check a fix.
            raise ConfigError(
                f"{cfg.method}.freeze_encoder_steps with trainer.compile=true crashed at the unfreeze on a "
                f"GPU: set trainer.compile=false for a warm-up run, or {cfg.method}.freeze_encoder_steps=0"
            )
        self.run_dir = Path(cfg.trainer.run_dir.format(method=cfg.method))
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.state = RunState()
        self._stop_signal: int | None = None

        torch.manual_seed(cfg.trainer.seed + self.dist.rank)
        self.generator = torch.Generator(device=self.dist.device).manual_seed(
            cfg.trainer.seed + self.dist.rank
        )

        self._check_data_root()
        model = self.spec.build_model(self.mcfg, cfg.data.crop).to(self.dist.device)
        model = prepare_model(model, cfg, self.dist.device)
        self.signature = checkpoint.model_signature(model)
        self.engine = build_engine(model, cfg, self.dist)
        # Buffers (BatchNorm running statistics) change in the forward pass, before the loss is checked:
        # a skipped non-finite step puts them back, or one NaN batch would poison every later evaluation.
        self._buffers = list(self.engine.module.buffers())
        self._buffers_before = [b.clone() for b in self._buffers] if cfg.trainer.skip_nonfinite else []
        self.compute_dtype = DTYPES[cfg.trainer.precision]
        self.ema = WeightAverage(self.engine.module, cfg.trainer.ema) if cfg.trainer.ema else None
        self.recent = RecentBatches(cfg.trainer.precise_bn) if cfg.trainer.precise_bn else None
        self._bn_fresh = False  # statistics already recomputed for the weights the next evaluation scores

        from train.data.loader import build_loader

        self.loader = build_loader(
            cfg.data,
            self.spec.clip_spec(self.mcfg),
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            local_rank=self.dist.local_rank,
            device=self.dist.device,
            seed=cfg.data.seed,
        )
        self.tracker = Tracker(cfg.tracking, self.dist.rank)
        self._resume()

    # ------------------------------------------------------------------------------ set-up

    def _check_data_root(self) -> None:
        """Fail before the engine is built when data.root is missing and nothing will create it.

        A smoke config's `data.generate` dataset is written by `build_loader` (local rank 0 of each
        node; the others wait for its manifest).
        """
        if self.cfg.data.generate is None and not Path(self.cfg.data.root).exists():
            raise ConfigError(
                f"data.root {self.cfg.data.root!r} does not exist (working directory {os.getcwd()}); "
                f"point data.root at a folder of videos, or set data.generate to create one"
            )

    def _expect(self) -> dict[str, str]:
        return {"method": self.cfg.method, "model_signature": self.signature}

    def _resume(self) -> None:
        tag = checkpoint.latest_complete(self.ckpt_dir)
        if tag is not None and self.cfg.trainer.resume == "never":
            raise ConfigError(
                f"{self.run_dir} already holds checkpoints (latest {tag}) and trainer.resume=never; "
                f"choose a new trainer.run_dir or set trainer.resume=auto to continue"
            )
        if tag is None:
            return
        client = checkpoint.load(self.engine, self.ckpt_dir, tag, self._expect())
        self.state = RunState(**client["run_state"])
        if self.ema is not None:
            if "ema" in client:
                self.ema.load_state_dict(client["ema"])
            else:
                self.ema = WeightAverage(self.engine.module, self.cfg.trainer.ema)
                log.warning("%s holds no weight average (trainer.ema was off): it starts from here", tag)
        self.loader.load_state_dict(client["data"])
        saved_world = len(client["rng"])
        if saved_world == self.dist.world_size:
            checkpoint.set_rng_state(client["rng"][self.dist.rank])
            self.generator.set_state(client["generator"][self.dist.rank])
        else:
            log.warning(
                "resuming %d rank(s) from a checkpoint of %d: random streams restart from the seed",
                self.dist.world_size,
                saved_world,
            )
        log.info("resumed from %s at step %d", self.ckpt_dir / tag, self.state.step)

    def _client_state(self) -> dict[str, Any]:
        # Every rank's RNG and generator state is gathered so each rank resumes its own stream.
        mine = (checkpoint.rng_state(), self.generator.get_state())
        states: list[Any] = [mine]
        if multi_rank():
            states = [None] * self.dist.world_size
            dist.all_gather_object(states, mine)
        state = {
            "run_state": vars(self.state).copy(),
            "data": self.loader.state_dict(),
            "rng": [rng for rng, _ in states],
            "generator": [gen for _, gen in states],
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def _save(self) -> str:
        return checkpoint.save(
            self.engine,
            self.ckpt_dir,
            self.state.step,
            self._client_state(),
            self.cfg.trainer.keep_last,
            meta=self._expect(),
        )

    def _start_tracking(self) -> None:
        cfg = self.cfg
        tags = {
            "method": cfg.method,
            "git_sha": git_sha(REPO),
            "world_size": str(self.dist.world_size),
            "precision": cfg.trainer.precision,
            "zero_stage": str(cfg.trainer.zero_stage),
            "device": torch.cuda.get_device_name(self.dist.device)
            if self.dist.device.type == "cuda"
            else "cpu",
            "run_dir": str(self.run_dir.resolve()),
        }
        name = cfg.tracking.run_name or f"{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.tracker.start(name, flatten(config_to_dict(cfg)), tags, self.state.mlflow_run_id)
        self.state.mlflow_run_id = self.tracker.run_id
        if self.dist.is_main:
            resolved = self.run_dir / "config.yaml"
            dump_config(cfg, resolved)
            self.tracker.log_artifact(resolved)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._stop_signal is not None:
            # One Ctrl-C or scheduler signal often arrives twice: directly, and passed on by the
            # DeepSpeed launcher as SIGTERM. Keep stopping cleanly (kill -9 stops at once).
            log.warning("received %s again: already stopping", name)
            return
        self._stop_signal = signum
        log.warning("received %s: will checkpoint and stop at the next log step", name)

    # ------------------------------------------------------------------------------ the loop

    def train(self) -> int:
        """Train to `trainer.steps` (or a stop); the exit code. A run that raises (out of GPU memory, a
        failing data source) first ends its MLflow run as FAILED with everything it logged so far, and
        says which checkpoint a relaunch resumes from."""
        try:
            return self._train()
        except Exception as err:
            self._crashed(err)
            raise

    def _crashed(self, err: Exception) -> None:
        last = checkpoint.latest_complete(self.ckpt_dir) if self.ckpt_dir.is_dir() else None
        resume = (
            f"run the same command again to resume from {last} in {self.ckpt_dir}"
            if last
            else "no checkpoint was written yet"
        )
        reason = (str(err).strip().splitlines() or [""])[0][:300]
        log.error(
            "training failed after step %d (%s: %s)%s; %s",
            self.state.step,
            type(err).__name__,
            reason,
            out_of_memory_advice(self.cfg) if isinstance(err, torch.OutOfMemoryError) else "",
            resume,
        )
        self.tracker.close("FAILED")

    def _train(self) -> int:
        cfg, t = self.cfg, self.cfg.trainer
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._start_tracking()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        log.info(
            "training %s for %d steps from step %d on %d rank(s), data: %s (%d batches/epoch, decoder %s)",
            cfg.method,
            t.steps,
            self.state.step,
            self.dist.world_size,
            cfg.data.root,
            self.loader.batches_per_epoch,
            self.loader.decoder,
        )
        exit_code = EXIT_OK
        batches = iter(self.loader)
        meter, speed = LossMeter(), Throughput()
        last_saved = self.state.step if self.state.step else None
        self.engine.train()
        started = last_eval = time.monotonic()
        while self.state.step < t.steps:
            if self.spec.on_step is not None:
                self.spec.on_step(self.engine.module, self.state.step, self.mcfg)
            skipped = False
            for _ in range(t.grad_accum):
                start = time.perf_counter()
                batch = next(batches)
                speed.waited(time.perf_counter() - start, self.cfg.data.batch_size)
                if self._buffers_before:
                    torch._foreach_copy_(self._buffers_before, self._buffers)
                loss, parts = self._forward(batch)
                if t.skip_nonfinite and not _all_finite(loss):
                    # No backward, no update; with accumulation the update waits for the next finite
                    # micro-batch (DeepSpeed counts micro-steps in backward/step, which we skipped).
                    # The forward's buffer updates (BatchNorm running statistics) are undone.
                    if self._buffers_before:
                        torch._foreach_copy_(self._buffers, self._buffers_before)
                    self._warn_skipped(batch, loss)
                    skipped = True
                    continue
                if self.recent is not None:
                    self.recent.add(batch)
                self.engine.backward(loss)
                self.engine.step()
                meter.add(parts | {"loss": loss.detach()})
            self.state.step += 1
            self._count_nonfinite(skipped)
            if self.ema is not None:
                self.ema.update()

            step = self.state.step
            log_now = step % t.log_every == 0 or step == t.steps
            stop = out_of_time = eval_due = False
            if log_now:
                exit_code = self._log(step, meter, speed) or exit_code
                stop, out_of_time, eval_due = self._agree_to_stop(started, last_eval)
            if exit_code or stop:
                if not exit_code:  # a signal: save. A non-finite stop keeps the last good checkpoint.
                    self._save()
                exit_code = exit_code or EXIT_INTERRUPTED
                break
            if out_of_time:
                log.info("trainer.max_minutes (%g) reached at step %d: finishing", t.max_minutes, step)
                break
            if step % t.ckpt_every == 0 or step == t.steps:
                self._save()
                last_saved = step
            if (eval_due or (t.eval_every and step % t.eval_every == 0)) and step != t.steps:
                self._evaluate(step)
                last_eval = time.monotonic()
        return self._finish(exit_code, last_saved)

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = self.spec.prepare(batch, self.mcfg, self.generator)
        with self._autocast():
            outputs = self.spec.forward(self.engine, inputs)
            return self.spec.loss(outputs, inputs, self.mcfg)

    def _recalibrate_bn(self) -> None:
        """`trainer.precise_bn`: BatchNorm statistics for the weights the model holds now, from the
        most recent training batches (train/precise_bn.py). The patches and crops that `prepare` draws
        come from a generator of their own, so the training's random stream is untouched."""
        if self.recent is None:
            return
        if self._bn_fresh:  # `_finish` just recomputed them for these same weights, before the export
            self._bn_fresh = False
            return
        module = self.engine.module
        generator = torch.Generator(device=self.dist.device).manual_seed(self.cfg.trainer.seed)

        def forward(batch: dict[str, torch.Tensor]) -> None:
            with self._autocast():
                self.spec.forward(module, self.spec.prepare(batch, self.mcfg, generator))

        used = recalibrate(module, self.recent, forward)
        log.info("BatchNorm statistics recomputed from the last %d training batches", used)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """One place decides precision: fp32 weights, bf16/fp16 compute under autocast (forward and loss;
        DeepSpeed's torch_autocast section, generated from the same setting, covers its own forward)."""
        dtype = self.compute_dtype
        return torch.autocast(self.dist.device.type, dtype=dtype, enabled=dtype != torch.float32)

    def _warn_skipped(self, batch: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
        """Name the clips of a skipped step (this rank's, if its loss was the non-finite one), so that a
        video that keeps producing them can be found and left out. Runs only on skips (host syncs)."""
        step = self.state.step + 1
        if bool(torch.isfinite(loss.detach()).all()):
            log.warning("step %d: non-finite loss on another rank; skipped on every rank", step)
            return
        videos = self.loader.index.videos
        ranges = batch["frame_idx"][:, [0, -1]].tolist()
        ids = batch["video_id"].tolist()
        clips = [f"{videos[v].name} [{a}..{b}]" for v, (a, b) in zip(ids, ranges, strict=True)]
        shown = "; ".join(clips[:_CLIPS_NAMED]) + (
            f"; ... ({len(clips)} clips)" if len(clips) > _CLIPS_NAMED else ""
        )
        log.warning(
            "step %d: non-finite loss, step skipped and BatchNorm statistics restored (%d skipped so far); "
            "its clips (video [first..last frame]): %s",
            step,
            self.state.nonfinite_total + 1,
            shown,
        )

    def _count_nonfinite(self, skipped: bool) -> None:
        if skipped:
            self.state.nonfinite_total += 1
            self.state.nonfinite_in_a_row += 1
        else:
            self.state.nonfinite_in_a_row = 0

    def _agree_to_stop(self, started: float, last_eval: float) -> tuple[bool, bool, bool]:
        """(any rank got SIGTERM/SIGINT, rank 0's clock is past `trainer.max_minutes`, rank 0's clock says
        an evaluation is due by `trainer.eval_every_minutes`), the same on every rank so that all act
        together: one small all-reduce, asked on log steps only."""
        t, now = self.cfg.trainer, time.monotonic()
        late = bool(t.max_minutes) and self.dist.is_main and now - started > 60 * t.max_minutes
        due = bool(t.eval_every_minutes) and self.dist.is_main and now - last_eval > 60 * t.eval_every_minutes
        flags = [float(self._stop_signal is not None), float(late), float(due)]
        if multi_rank():
            agreed = torch.tensor(flags, device=self.dist.device)
            dist.all_reduce(agreed, op=dist.ReduceOp.MAX)  # MAX of rank 0's time flags and zeros = rank 0's
            flags = agreed.tolist()
        return flags[0] > 0, flags[1] > 0, flags[2] > 0

    def _log(self, step: int, meter: LossMeter, speed: Throughput) -> int:
        losses = meter.read()
        metrics = {
            **losses,
            **speed.read(),
            **device_memory(self.dist.device),
            "lr": self.engine.get_lr()[0],
            "nonfinite_steps": float(self.state.nonfinite_total),
        }
        norm = self.engine.get_global_grad_norm()
        if norm is not None:
            metrics["grad_norm"] = float(norm)
        metrics |= {f"data_{k}": float(v) for k, v in self.loader.stats().items()}
        self.tracker.log_metrics(metrics, step)
        parts = " ".join(f"{k} {v:.4g}" for k, v in losses.items() if k != "loss")
        log.info(
            "step %d/%d loss %.4g (%s) lr %.3g | %.1f clips/s/GPU, data wait %.0f%%%s",
            step,
            self.cfg.trainer.steps,
            losses.get("loss", float("nan")),
            parts,
            metrics["lr"],
            metrics["clips_per_s_per_gpu"],
            100 * metrics["data_wait_frac"],
            f", peak {metrics['gpu_mem_peak_gib']:.1f} GiB" if "gpu_mem_peak_gib" in metrics else "",
        )
        if not math.isfinite(losses.get("loss", 0.0)):
            log.error(
                "non-finite loss in the last %d steps: stopping; the last good checkpoint is kept in %s",
                self.cfg.trainer.log_every,
                self.ckpt_dir,
            )
            return EXIT_NONFINITE
        if self.state.nonfinite_in_a_row >= self.cfg.trainer.max_nonfinite:
            log.error(
                "%d non-finite losses in a row: stopping; the last good checkpoint is kept in %s",
                self.state.nonfinite_in_a_row,
                self.ckpt_dir,
            )
            return EXIT_NONFINITE
        return EXIT_OK

    def _evaluate(self, step: int) -> dict[str, float]:
        """Scores the weights the run exports (the average with `trainer.ema`), on rank 0."""
        if self.spec.evaluate is None:
            return {}
        if self.cfg.trainer.zero_stage == 3:
            log.warning(
                "periodic evaluation is skipped under ZeRO-3 (weights are sharded); see the final one"
            )
            return {}
        scores: dict[str, float] = {}
        if self.dist.is_main:
            tag = checkpoint.tag_for(step)
            if self.ema is None:
                scores = self._evaluate_weights(step, f"eval/{tag}", "eval")
            else:
                with self.ema.swapped_in():
                    scores = self._evaluate_weights(step, f"eval/{tag}", "eval")
                if self.cfg.trainer.ema_eval_live:
                    self._evaluate_weights(step, f"eval/{tag}-live", "eval_live")
        barrier()
        return scores

    def _evaluate_weights(self, step: int, sub: str, prefix: str) -> dict[str, float]:
        out_dir = self.run_dir / sub
        self._recalibrate_bn()
        self.engine.module.eval()
        with torch.no_grad(), self._autocast():
            scores = self.spec.evaluate(self.engine.module, self.mcfg, str(out_dir))
        self.engine.module.train()
        if scores:
            self.tracker.log_metrics({f"{prefix}_{k}": v for k, v in scores.items()}, step)
            log.info("evaluation%s at step %d: %s", "" if prefix == "eval" else f" ({prefix})", step, scores)
            # The metrics file and the videos an evaluation writes (TCC's aligned grid, aligned.mp4),
            # so that the MLflow run shows how the alignment looks at every evaluated step.
            for path in sorted([*out_dir.glob("*.json"), *out_dir.glob("*.mp4")]):
                self.tracker.log_artifact(path, sub)
        return scores

    def _finish(self, exit_code: int, last_saved: int | None) -> int:
        if exit_code == EXIT_OK:
            tag = checkpoint.tag_for(self.state.step)
            if last_saved != self.state.step:
                tag = self._save()
            weights = checkpoint.export_weights(
                self.engine, self.ckpt_dir, tag, self.run_dir / "final" / "weights.pt"
            )
            if self.dist.is_main and (self.ema is not None or self.recent is not None):
                if self.ema is not None:
                    # The averaged weights are the run's result; the last step's stay beside them.
                    live = weights.with_name("weights_live.pt")
                    os.replace(weights, live)
                    if self.recent is not None:
                        self._recalibrate_bn()
                        checkpoint.write_weights(self.engine.module.state_dict(), live)
                    with self.ema.swapped_in():
                        self._recalibrate_bn()
                        checkpoint.write_weights(self.engine.module.state_dict(), weights)
                else:
                    self._recalibrate_bn()
                    checkpoint.write_weights(self.engine.module.state_dict(), weights)
                # The final evaluation scores these weights (the average first, with ema) next.
                self._bn_fresh = self.recent is not None
            self._evaluate(self.state.step)
            self.tracker.log_artifact(weights, "weights")
        status = {EXIT_OK: "FINISHED", EXIT_INTERRUPTED: "KILLED"}.get(exit_code, "FAILED")
        self.tracker.close(status)
        if self.dist.is_main and self.tracker.run_id:
            log.info(
                "MLflow run %s: mlflow ui --backend-store-uri %s",
                self.tracker.run_id,
                tracking_uri(self.cfg.tracking),
            )
        if exit_code == EXIT_INTERRUPTED:
            log.warning(
                "stopped at step %d after a checkpoint; run the same command again to resume", self.state.step
            )
        return exit_code


_CLIPS_NAMED = 12  # clips a skipped step's warning names


def out_of_memory_advice(cfg: Config) -> str:
    """What to lower when a step runs out of GPU memory, with the values this run used."""
    return (
        f": out of GPU memory at data.batch_size {cfg.data.batch_size}; lower data.batch_size (raise "
        f"trainer.grad_accum, now {cfg.trainer.grad_accum}, to keep the batch), use trainer.precision bf16 "
        f"(now {cfg.trainer.precision}) or trainer.zero_stage 2-3 (now {cfg.trainer.zero_stage}), or free "
        "the GPU of other processes"
    )


def _all_finite(loss: torch.Tensor) -> bool:
    flag = torch.isfinite(loss.detach()).all().float().reshape(1)
    if multi_rank():
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)  # all ranks skip together, or collectives hang
    return bool(flag.item())


def run_training(cfg: Config) -> int:
    """Entry point used by train/run.py."""
    trainer = Trainer(cfg)
    try:
        return trainer.train()
    finally:
        trainer.loader.close()  # stops the batch thread before the process group and CUDA go away
        if dist.is_initialized():
            dist.destroy_process_group()
