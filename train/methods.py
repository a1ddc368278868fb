"""The method registry: `method: <name>` in a config names a package that provides the method.

A method package `<name>` has `config.py` exposing `Config` (its settings dataclass) and
`method.py` exposing `SPEC` (see `MethodSpec`). Nothing here lists what a method does, so a new
method is a new package plus a config file; `BUILTIN` only serves error messages.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType
from typing import Any

BUILTIN = ("cycletime", "tcc")


class UnknownMethodError(ValueError):
    """`method:` names no importable method package."""


def _import(name: str, module: str) -> ModuleType:
    if not name.isidentifier():
        raise UnknownMethodError(f"method {name!r} is not a package name (allowed: {', '.join(BUILTIN)})")
    try:
        return importlib.import_module(f"{name}.{module}")
    except ModuleNotFoundError as err:
        if err.name not in (name, f"{name}.{module}"):
            raise  # the package exists but one of its own imports is missing
        close = difflib.get_close_matches(name, BUILTIN, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UnknownMethodError(
            f"unknown method {name!r}{hint} (allowed: {', '.join(BUILTIN)}, or a package with "
            f"config.py and method.py)"
        ) from None


def method_config_class(name: str) -> type:
    """The settings dataclass of method `name`."""
    return _import(name, "config").Config


def load_method(name: str) -> Any:
    """The `MethodSpec` of method `name` (its package's `method.SPEC`)."""
    spec = getattr(_import(name, "method"), "SPEC", None)
    if spec is None:
        raise UnknownMethodError(f"{name}.method defines no SPEC (a core.method.MethodSpec)")
    return spec
