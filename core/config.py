"""Typed-config field helper shared by every config dataclass (method packages included).

Stdlib only, so `tcc` and `cycletime` can declare their settings without importing `train`.
A field carries its help text and numeric bounds in `dataclasses.field` metadata; the strict
loader in `train.config` enforces the bounds and prints the help with `--help-config`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

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
