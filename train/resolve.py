"""`python -m train.resolve runs:/<run_id>`: the run directory (or downloaded weights) of an MLflow run.

The offline evaluators take a run directory or a weights file (`--weights PATH_OR_RUN`); method packages
do not import MLflow, so this prints what to pass them:

    python -m cycletime.evaluate --weights $(python -m train.resolve runs:/<id>) --davis ...

It prints the run's `run_dir` tag when that folder holds the final weights here, else it downloads the
run's `weights/weights.pt` artifact (into --dst, default ./mlflow-weights/<id>) and prints that file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.runfiles import WEIGHTS
from train.config import TrackingConfig
from train.tracking import tracking_uri


def resolve(spec: str, uri: str, dst: str | None = None) -> Path:
    from mlflow.tracking import MlflowClient

    run_id = spec.removeprefix("runs:/").strip("/").split("/")[0]
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    run_dir = run.data.tags.get("run_dir")
    if run_dir and (Path(run_dir) / WEIGHTS).is_file():
        return Path(run_dir)
    out = Path(dst or Path("mlflow-weights") / run_id)
    out.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, f"weights/{WEIGHTS.name}", str(out)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="runs:/<run_id> or a run id")
    parser.add_argument(
        "--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db"
    )
    parser.add_argument(
        "--dst", default=None, help="where to download the weights if the run folder is not here"
    )
    args = parser.parse_args(argv)
    uri = args.tracking_uri or tracking_uri(TrackingConfig())
    try:
        print(resolve(args.run, uri, args.dst))
    except Exception as err:  # any MLflow failure: one line naming what to fix
        print(f"error: cannot resolve {args.run} at {uri}: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
