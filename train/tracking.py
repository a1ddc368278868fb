"""MLflow tracking: rank 0 owns the run, every rank knows its id, and logging never stops training.

All MLflow calls after the run exists go through one background thread, so a slow or unreachable
server delays nothing in the training loop; each call gets bounded retries and a failure costs a
warning. Creating the run is the only synchronous call, bounded by `timeout_s` and `retries`.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch.distributed as dist

from train.config import TrackingConfig
from train.engine import multi_rank

log = logging.getLogger(__name__)

_STOP = object()
MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value's length
BATCH = 100  # params / metrics per request (MLflow accepts up to 100 params and 1000 metrics)


def tracking_uri(cfg: TrackingConfig) -> str:
    """`MLFLOW_TRACKING_URI` when set, else the config's."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}: the config as MLflow params."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:MAX_PARAM_VALUE]
    return out


def git_sha(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """Rank 0's MLflow run. On other ranks (or when disabled or unreachable) every call is a no-op."""

    def __init__(self, cfg: TrackingConfig, rank: int) -> None:
        self.cfg = cfg
        self.rank = rank
        self.run_id: str | None = None
        self.failures = 0
        self._client: Any = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=10_000)
        self._thread: threading.Thread | None = None
        self._monitor: Any = None

    @property
    def active(self) -> bool:
        return self.run_id is not None and self.rank == 0

    def start(
        self, run_name: str, params: dict[str, str], tags: dict[str, str], resume_id: str | None
    ) -> None:
        """Create (or reopen `resume_id`) the run on rank 0 and share its id with every rank."""
        if self.rank == 0 and self.cfg.enabled:
            self.run_id = self._create_run(run_name, tags, resume_id)
            if self.run_id:
                self._thread = threading.Thread(target=self._worker, name="mlflow-logger", daemon=True)
                self._thread.start()
                items = list(params.items())
                for i in range(0, len(items), BATCH):
                    self._submit("log params", self._log_params, dict(items[i : i + BATCH]))
                self._start_system_metrics()
        if multi_rank():
            shared = [self.run_id]
            dist.broadcast_object_list(shared, src=0)
            self.run_id = shared[0]

    def _create_run(self, run_name: str, tags: dict[str, str], resume_id: str | None) -> str | None:
        # Bound what one request may cost before mlflow reads these (it reads them per request).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(self.cfg.retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, self.cfg.timeout_s))))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        uri = tracking_uri(self.cfg)
        try:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=uri)
            if resume_id:
                run = self._client.get_run(resume_id)
                self._client.update_run(run.info.run_id, status="RUNNING")
                log.info("MLflow: continuing run %s at %s", resume_id, uri)
                return run.info.run_id
            experiment = self._client.get_experiment_by_name(self.cfg.experiment)
            exp_id = (
                experiment.experiment_id
                if experiment
                else self._client.create_experiment(self.cfg.experiment)
            )
            run = self._client.create_run(exp_id, run_name=run_name, tags=tags)
            log.info("MLflow: run %s (%s) at %s", run.info.run_id, run_name, uri)
            return run.info.run_id
        except Exception as err:  # any tracking failure must cost a warning, never the training
            log.warning(
                "MLflow unavailable at %s (%s: %s); training continues without tracking",
                uri,
                type(err).__name__,
                str(err).splitlines()[0][:200] if str(err) else "",
            )
            self._client = None
            return None

    def _start_system_metrics(self) -> None:
        if not self.cfg.system_metrics:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.run_id,
                sampling_interval=10,
                samples_before_logging=1,
                tracking_uri=tracking_uri(self.cfg),
            )
            self._monitor.start()
        except Exception as err:
            log.warning("MLflow system metrics unavailable (%s)", err)

    # -------------------------------------------------------------- queued calls (rank 0 only)

    def _submit(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        if not self.active:
            return
        try:
            self._queue.put_nowait((what, fn, args))
        except queue.Full:
            self.failures += 1  # the server is far behind: drop rather than block training

    def _worker(self) -> None:
        warned = 0
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            what, fn, args = item
            try:
                fn(*args)
            except Exception as err:
                self.failures += 1
                if warned < 5:
                    warned += 1
                    log.warning("MLflow: %s failed (%s: %s)", what, type(err).__name__, str(err)[:200])

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        self._client.log_batch(self.run_id, params=[Param(k, v) for k, v in params.items()])

    def _log_metrics(self, metrics: dict[str, float], step: int, stamp: int) -> None:
        from mlflow.entities import Metric

        entries = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        for i in range(0, len(entries), 1000):
            self._client.log_batch(self.run_id, metrics=entries[i : i + 1000])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue metrics (plain floats: the caller has already synced)."""
        self._submit("log metrics", self._log_metrics, dict(metrics), step, int(time.time() * 1000))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._submit("log artifact", lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))

    def close(self, status: str = "FINISHED", timeout_s: float = 60.0) -> None:
        """Flush what is queued (at most `timeout_s`), mark the run ended."""
        if not self.active or self._thread is None:
            return
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception as err:
                log.warning("MLflow system metrics did not stop cleanly (%s)", err)
        self._submit("end run", self._client.set_terminated, self.run_id, status)
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("MLflow: gave up flushing after %.0f s; some metrics were not logged", timeout_s)
        if self.failures:
            log.warning("MLflow: %d logging calls failed or were dropped", self.failures)
        self._thread = None  # closed: a second close() (a crash after the run ended) does nothing
