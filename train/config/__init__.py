"""Typed run configuration: `load_config(path, overrides)` -> `Config`, and back with `dump_config`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from core.config import (
    ConfigError,
    RawConfig,
    apply_overrides,
    describe,
    from_dict,
    load_raw,
    to_plain,
)
from train.config.schema import Config, DataConfig, OptimConfig, SyntheticConfig, TrackingConfig
from train.methods import BUILTIN, UnknownMethodError, method_config_class

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "OptimConfig",
    "SyntheticConfig",
    "TrackingConfig",
    "config_from_raw",
    "config_help",
    "config_to_dict",
    "dump_config",
    "load_config",
]


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read `path` (following `extends`), apply `key=value` overrides, and type-check everything."""
    return config_from_raw(apply_overrides(load_raw(path), list(overrides)))


def config_from_raw(raw: RawConfig) -> Config:
    """Type a merged mapping. The method section is typed by the method named in `method`."""
    data = dict(raw.data)
    name = data.get("method")
    if name is None:
        raise ConfigError(f"missing required value 'method' (cycletime or tcc); set it in {raw.top}")
    if not isinstance(name, str):
        raise ConfigError(f"method must be a string, got {name!r} ({raw.where('method')})")
    try:
        method_cls = method_config_class(name)
    except UnknownMethodError as err:
        raise ConfigError(f"method: {err} ({raw.where('method')})") from None
    section = data.pop(name, {})
    for key in [k for k in data if k in BUILTIN and k != name]:
        if data.pop(key) is not None:  # `other_method: null` removes an inherited section
            raise ConfigError(
                f"section '{key}' is for method {key!r}, but method is {name!r} ({raw.where(key)})"
            )
    method_cfg = from_dict(method_cls, section if section is not None else {}, raw.where, f"{name}.")
    generic = from_dict(Config, data, raw.where)
    return dataclasses.replace(generic, method_cfg=method_cfg)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data, laid out as a config file (method section by name)."""
    out: dict[str, Any] = {"method": cfg.method, cfg.method: to_plain(cfg.method_cfg)}
    for field in dataclasses.fields(cfg):
        if field.name not in ("method", "method_cfg"):
            out[field.name] = to_plain(getattr(cfg, field.name))
    return out


def dump_config(cfg: Config, path: str | Path | None = None) -> str:
    """YAML text of the resolved config; written to `path` when given. Loads back identically."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return text


def config_help(method: str | None = None) -> str:
    """Every key with its default and meaning (the generic tree, then the method's section)."""
    rows = [r for r in describe(Config) if not r[0].startswith("method_cfg")]
    if method:
        rows += describe(method_config_class(method), f"{method}.")
    width = max(len(k) for k, _, _ in rows)
    return "\n".join(f"{k:<{width}}  {d:<22} {doc}" for k, d, doc in rows)
