"""Reading the wire form: timestamps and defensive field access.

Objects reaching the operator were validated by the API server and objects reaching `plan` by the
models, but the core is also fed by hand (tests, other tools) and by the node agent's telemetry, so
every reader here degrades to a documented default instead of raising.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken to be UTC (what the API server means)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_time(moment: datetime, *, millis: bool = False) -> str:
    """RFC 3339 in UTC with a 'Z': the one formatter of the package.

    Whole seconds, as Kubernetes writes metav1.Time; with `millis`, milliseconds where the time has
    a fraction of a second (telemetry timestamps, whose age is judged to the second).
    """
    moment = as_utc(moment)
    if millis and moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_epoch(value: object) -> float | None:
    """Seconds since the epoch for an RFC 3339 string or a datetime; None when unreadable.

    YAML loaders turn unquoted timestamps into datetimes, the API server sends strings: both come.
    """
    if isinstance(value, datetime):
        return as_utc(value).timestamp()
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


class EpochMemo(dict[str, float | None]):
    """parse_epoch for strings, remembered for one recomputation: agents on one site report on the
    same few clock seconds, so most nodes' observedAt were already parsed for another node."""

    def __missing__(self, key: str) -> float | None:
        value = parse_epoch(key)
        self[key] = value
        return value


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def int_or(value: object, default: int) -> int:
    """An integer field, or the default when absent or not an integer (bool is not one)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # JSON decoders may hand 700.0 for 700
    return default


def int_or_none(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def mapping(value: object) -> Mapping[str, Any]:
    """A nested object, or an empty one when absent (or null, or not an object)."""
    return value if isinstance(value, Mapping) else _EMPTY


_EMPTY: Mapping[str, Any] = {}
