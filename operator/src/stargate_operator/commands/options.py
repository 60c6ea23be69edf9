"""Option helpers shared by the subcommands: environment fallbacks and argparse value types.

Every flag of `run`, `agent` and `demo` can come from an environment variable (a flag wins); the
value types refuse bad input with argparse's usual one-line error.
"""

from __future__ import annotations

import argparse
import os
from typing import TypeVar

_N = TypeVar("_N", int, float)


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def env_bool(name: str) -> bool:
    return (os.environ.get(name) or "").strip().lower() in ("1", "true", "yes", "on")


def env_int(name: str) -> int | None:
    raw = (os.environ.get(name) or "").strip()
    return int(raw) if raw else None


def env_num(name: str, default: _N) -> _N:
    """The variable as a number of the default's type; the default when unset or empty."""
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return type(default)(raw)
    except ValueError:
        raise SystemExit(f"environment variable {name}={raw!r} is not a valid number") from None


def positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {s}")
    return v


def non_negative_float(s: str) -> float:
    v = float(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {s}")
    return v


def positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {s}")
    return v


def non_negative_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {s}")
    return v


def port(s: str) -> int:
    v = int(s)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {s}")
    return v


def percent(s: str) -> int:
    v = int(s)
    if not 0 <= v <= 100:
        raise argparse.ArgumentTypeError(f"must be 0 to 100: {s}")
    return v


def share_to_shed(s: str) -> int:
    """A GridEvent's reducePercent: 1 to 100 (shedding nothing is no event)."""
    v = int(s)
    if not 1 <= v <= 100:
        raise argparse.ArgumentTypeError(f"must be 1 to 100: {s}")
    return v
