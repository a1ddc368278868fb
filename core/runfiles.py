"""What a finished training run leaves for evaluation, read strictly by both methods' offline evaluators.

A run directory (`trainer.run_dir`) holds `config.yaml` (the resolved config, method section under the
method's name) and `final/weights.pt` (a plain fp32 state dict: torch.load(weights_only=True)). The
method packages may not import `train`, so the layout is a contract kept here, next to the method
contract (`core.method`). Like `core.config`, this module reads files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from core.config import ConfigError, from_dict, load_raw

CONFIG = "config.yaml"
WEIGHTS = Path("final") / "weights.pt"
T = TypeVar("T")


def resolve_run(spec: str) -> tuple[Path, Path | None]:
    """PATH_OR_RUN -> (weights file, the run's config.yaml or None).

    `spec` is a run directory (its final/weights.pt and config.yaml) or a weights file (a file at
    <run>/final/weights.pt finds its run's config.yaml too). MLflow URIs are resolved by `train`
    (`python -m train.resolve runs:/<id>` prints the run directory), not here.
    """
    if "://" in spec or spec.startswith(("runs:/", "models:/")):
        raise ValueError(
            f"--weights {spec!r}: pass a run directory or a weights file; for an MLflow run, "
            f"`python -m train.resolve {spec}` prints its run directory"
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        weights = path / WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(f"--weights {spec}: a folder without {WEIGHTS} (not a finished run)")
        config = path / CONFIG
        return weights, config if config.is_file() else None
    if not path.is_file():
        raise FileNotFoundError(f"--weights {spec}: no such file or run directory")
    run_config = path.parent.parent / CONFIG
    inside_run = path.parent.name == WEIGHTS.parent.name and run_config.is_file()
    return path, run_config if inside_run else None


def weights_and_config(
    weights: str | None, config: str | Path | None
) -> tuple[Path | None, str | Path | None]:
    """An evaluator's --weights PATH_OR_RUN and --config FILE -> (weights file or None, the config that
    gives the model's shape or None). A weights file outside a run needs --config."""
    path, run_config = resolve_run(weights) if weights else (None, None)
    config = config or run_config
    if path is not None and config is None:
        raise ValueError(f"--weights {weights}: no run config.yaml beside it; pass --config FILE")
    return path, config


def build_seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """`build()` under torch.manual_seed(seed), leaving the global RNG as it was (a fixed baseline)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def read_method_config(path: str | Path, method: str, cls: type[T]) -> T:
    """The `<method>:` section of a config file (a run's config.yaml, or any config with `extends`)
    as a checked `cls`. Raises ConfigError naming the key and file for anything that does not fit."""
    raw = load_raw(path)
    found = raw.data.get("method", method)
    if found != method:
        raise ConfigError(f"{path}: method is {found!r}; pass the config of a {method} run")
    return from_dict(cls, raw.data.get(method) or {}, raw.where, f"{method}.")


def summary(items: Sequence[str], limit: int = 6) -> str:
    """`a, b, c and 4 more`: the first `limit` items of a list for an error message."""
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_state_dict_strict(model: nn.Module, source: str | Path | dict[str, Any], what: str) -> None:
    """Load every key of a plain state dict into `model`, or raise one ValueError naming the missing
    keys, unexpected keys and shape mismatches (never a silent partial load). `what` names the model."""
    state = (
        torch.load(source, map_location="cpu", weights_only=True) if not isinstance(source, dict) else source
    )
    name = source if not isinstance(source, dict) else "the state dict"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{name} must hold a plain state dict (name -> tensor), as a run's {WEIGHTS}")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} (model {tuple(expected[k].shape)})"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    problems = [
        f"{kind}: {summary(keys)}"
        for kind, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shapes", shapes))
        if keys
    ]
    if problems:
        raise ValueError(f"{name} does not fit {what} ({'; '.join(problems)}); pass the run's config")
    model.load_state_dict(state, strict=True)
