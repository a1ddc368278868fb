"""Typed configs, generic over any dataclass tree: fields, YAML with inheritance, overrides, strict typing.

Shared by `train` (the run config) and the method packages (their settings, and their offline
evaluators reading a run's config.yaml without importing `train`). Reading YAML files makes this the
one module of `core` that touches the file system.

- `param(default, doc, ge=, gt=, le=, lt=)`: a dataclass field with help text and bounds.
- `load_raw(path)`: a YAML mapping; `extends: base.yaml` (or a list; relative to the file) merges
  mappings key by key, the child winning, and replaces lists and scalars whole. Per dotted key, it
  records which file set it.
- `apply_overrides(raw, ["a.b=value"])`: values parsed as YAML scalars (`lr=3e-4`, `x=null`).
- `from_dict(cls, data, where)`: keys, types, bounds and `__post_init__` checks. Floats also accept
  strings such as `1e-4`: PyYAML reads an exponent without a dot as a string.
Every error is a one-line `ConfigError` naming the key, the file or override that set it, and what
is allowed (with a close match for misspelt keys).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union

import yaml

Where = Callable[[str], str] | str


class ConfigError(ValueError):
    """A user error in a config file or override; the message says what to change."""


def _where_fn(where: Where) -> Callable[[str], str]:
    return where if callable(where) else (lambda _key: where)


CMDLINE = "the command line"


@dataclasses.dataclass
class RawConfig:
    """Merged YAML before typing: the values and, per dotted key, where each was set."""

    data: dict[str, Any]
    origin: dict[str, str]
    top: str  # the file the user named (for errors about keys nobody set)

    def where(self, key: str) -> str:
        """The file or override that set `key`, else of its closest parent section."""
        while key:
            if key in self.origin:
                return self.origin[key]
            key = key.rpartition(".")[0]
        return self.top


def read_yaml(path: Path) -> dict[str, Any]:
    """One YAML mapping from `path`, with file-not-found and syntax errors made explicit."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _origins(data: dict[str, Any], source: str, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        out[dotted] = source
        if isinstance(value, dict):
            out.update(_origins(value, source, dotted + "."))
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `over` on top of `base`, nested dicts merged key by key (`over` wins)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _drop_origins(origin: dict[str, str], key: str) -> None:
    for k in [k for k in origin if k.startswith(key + ".")]:
        del origin[k]


def load_raw(path: str | Path, _chain: tuple[Path, ...] = ()) -> RawConfig:
    """Read `path` and everything it extends into one merged mapping."""
    path = Path(path).expanduser().resolve() if _chain else Path(path).expanduser()
    real = path.resolve()
    if real in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, real))
        raise ConfigError(f"{path}: 'extends' forms a cycle: {cycle}")
    data = read_yaml(path)
    parents = data.pop("extends", None) or []
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: 'extends' must be a file path or a list of file paths")
    merged, origin = {}, {}
    for parent in parents:
        base = load_raw(real.parent / parent, (*_chain, real))
        merged = merge(merged, base.data)
        origin.update(base.origin)
    for key, value in data.items():
        if not isinstance(value, dict):
            _drop_origins(origin, key)  # a scalar replaces a whole inherited section
    merged = merge(merged, data)
    origin.update(_origins(data, str(path)))
    return RawConfig(merged, origin, str(path))


def apply_overrides(raw: RawConfig, overrides: list[str]) -> RawConfig:
    """Apply `key.sub=value` strings in order; the value is parsed as a YAML scalar."""
    data = raw.data
    origin = dict(raw.origin)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} on {CMDLINE}: expected key.sub=value")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        source = f"{CMDLINE} ({item})"
        node = data = dict(data)
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                if child is not None:
                    parent = ".".join(parts[: depth + 1])
                    raise ConfigError(f"override {item!r}: '{parent}' is a value, not a section")
                child = {}
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = value
        _drop_origins(origin, key)
        origin[key] = source
        if isinstance(value, dict):
            origin.update(_origins(value, source, key + "."))
    return RawConfig(data, origin, raw.top)


_MISSING: Any = dataclasses.MISSING


def param(
    default: Any = _MISSING,
    doc: str = "",
    *,
    factory: Any = _MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with help text and optional bounds (`ge`/`gt`/`le`/`lt`).

    Leave `default` and `factory` unset for a required value. Mutable defaults need `factory`.
    """
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def bounds_violation(value: Any, meta: Any) -> str | None:
    """The bound `value` breaks, as text ('must be > 0'), or None when it is within them."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    checks = (
        ("ge", ">=", lambda b: value >= b),
        ("gt", ">", lambda b: value > b),
        ("le", "<=", lambda b: value <= b),
        ("lt", "<", lambda b: value < b),
    )
    for key, sign, ok in checks:
        bound = meta.get(key)
        if bound is not None and not ok(bound):
            return f"must be {sign} {bound}"
    return None


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def from_dict(cls: type, data: Any, where: Where, prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from plain `data`, checking keys, types, bounds and `__post_init__`.

    `where(dotted_key)` names the file (or override) that set a key, for the error messages; a plain
    string names one source for every key. `prefix` is the dotted path of `cls` in a larger tree.
    """
    where = _where_fn(where)
    here = where(prefix.rstrip("."))
    if not isinstance(data, dict):
        section = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"{section} must be a mapping of keys, got {data!r} ({here})")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            dotted = f"{prefix}{key}"
            allowed = ", ".join(fields)
            raise ConfigError(
                f"unknown key '{dotted}' in {where(dotted)}{_suggest(str(key), list(fields))} "
                f"(allowed under {prefix.rstrip('.') or 'the top level'}: {allowed})"
            )
    kwargs = {}
    for name, field in fields.items():
        dotted = f"{prefix}{name}"
        if name not in data:
            no_default = field.default is dataclasses.MISSING
            if no_default and field.default_factory is dataclasses.MISSING:
                doc = field.metadata.get("doc", "")
                hint = f" ({doc})" if doc else ""
                raise ConfigError(f"missing required value '{dotted}'{hint}; set it in {here}")
            continue
        value = convert(data[name], hints[name], dotted, where)
        problem = bounds_violation(value, field.metadata)
        if problem:
            raise ConfigError(f"{dotted} {problem}, got {value!r} ({where(dotted)})")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ValueError as err:  # cross-field checks in __post_init__
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {err} ({here})") from None


def convert(value: Any, tp: Any, key: str, where: Where) -> Any:
    """Check `value` against annotation `tp` and return it in that type."""
    where = _where_fn(where)

    def fail(expected: str) -> typing.NoReturn:
        got = f"{type(value).__name__} {value!r}"
        raise ConfigError(f"{key} must be {expected}, got {got} ({where(key)})")

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:
            return convert(value, arms[0], key, where)
        for arm in arms:
            try:
                return convert(value, arm, key, where)
            except ConfigError:
                continue
        fail(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        hint = _suggest(value, [str(a) for a in args]) if isinstance(value, str) else ""
        raise ConfigError(f"{key} must be one of {choices}, got {value!r}{hint} ({where(key)})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        fail("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        fail("a string")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            fail(f"a list ({_type_name(tp)})")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                fail(f"a list of {len(args)} items")
            return tuple(
                convert(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        items = [convert(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            fail("a mapping")
        vtype = args[1] if len(args) == 2 else Any
        return {k: convert(v, vtype, f"{key}.{k}", where) for k, v in value.items()}
    raise TypeError(f"config field {key}: unsupported annotation {tp!r}")  # a schema bug, not user error


def to_plain(obj: Any) -> Any:
    """A dataclass tree as plain YAML-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, doc) for every leaf of `cls`, for `--help-config`."""
    rows = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        dotted = f"{prefix}{field.name}"
        tp = hints[field.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, dotted + "."))
            continue
        # An optional section (`X | None`, default None): its own line, then its keys.
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if inner:
            rows.append((dotted, "None", field.metadata.get("doc", "")))
            rows.extend(describe(inner[0], dotted + "."))
            continue
        if field.default is not dataclasses.MISSING:
            default = repr(to_plain(field.default))
        elif field.default_factory is not dataclasses.MISSING:
            default = repr(to_plain(field.default_factory()))
        else:
            default = "(required)"
        rows.append((dotted, default, field.metadata.get("doc", "")))
    return rows
