"""MLflow tracking with the real library: the run, its params/metrics/artifacts; an unreachable server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from train.config import TrackingConfig
from train.local_launch import free_port
from train.tracking import Tracker, flatten, tracking_uri


def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_flatten_config() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {
        "a.b": "1",
        "a.c.d": "[1, 2]",
        "e": "None",
    }


def test_env_uri_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert tracking_uri(TrackingConfig(uri="sqlite:///x.db")) == "sqlite:///elsewhere.db"


def test_run_with_params_metrics_artifacts_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = TrackingConfig(uri=sqlite_uri(tmp_path), experiment="t", system_metrics=False)
    tracker = Tracker(cfg, rank=0)
    tracker.start("run-a", {"optim.lr": "0.1"}, {"method": "cycletime"}, resume_id=None)
    assert tracker.run_id
    for step in (10, 20):
        tracker.log_metrics({"loss": 1.0 / step, "clips_per_s_per_gpu": 3.0}, step)
    artifact = tmp_path / "config.yaml"
    artifact.write_text("method: cycletime\n")
    tracker.log_artifact(artifact)
    tracker.close()

    client = MlflowClient(cfg.uri)
    runs = client.search_runs([client.get_experiment_by_name("t").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.1" and run.data.tags["method"] == "cycletime"
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(10, 0.1), (20, 0.05)]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.yaml"]

    again = Tracker(cfg, rank=0)  # a resumed job continues the same run
    again.start("run-a", {"optim.lr": "0.1"}, {}, resume_id=run.info.run_id)
    again.log_metrics({"loss": 0.01}, 30)
    again.close()
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 3


def test_other_ranks_never_log(tmp_path: Path) -> None:
    tracker = Tracker(TrackingConfig(uri=sqlite_uri(tmp_path), system_metrics=False), rank=1)
    tracker.start("x", {}, {}, None)
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.close()
    assert tracker.run_id is None and not (tmp_path / "mlflow.db").exists()


def test_unreachable_server_costs_a_warning_not_the_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    port = free_port()  # a port nobody listens on
    cfg = TrackingConfig(uri=f"http://127.0.0.1:{port}", timeout_s=1, retries=1, system_metrics=False)
    tracker = Tracker(cfg, rank=0)
    start = time.monotonic()
    tracker.start("x", {"a": "1"}, {}, None)
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.close()
    assert tracker.run_id is None
    assert time.monotonic() - start < 60  # bounded retries, not minutes (a bound, not a benchmark)
    assert "MLflow unavailable" in caplog.text
