"""What an agent reads in a PowerLimitSlice: its limit, its safe limit and the slice's ramp.

The operator writes every node's per-GPU limit into the slice that holds its rack; the agent
watches that slice by name (its GPUNode's `status.powerLimitSlice`). A slice's `ramp` moves each
node linearly from its `from` entry to its `limits` entry between `startAt` and `endAt`: one write
of the slice, and the agents take the steps themselves, even if the operator is gone meanwhile.
A slice's `failsafeExitWattsPerSecond` is how fast (per GPU) an agent rises back to its limit
when it leaves the fail-safe: its share of the site's up rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stargate_operator.core.wire import parse_epoch


@dataclass(frozen=True, slots=True)
class SliceEntry:
    """One node's part of a slice."""

    limit: int  # its entry in limits: where it ends
    safe: int | None  # its entry in safeLimits (None: safe at its limit)
    start_from: int | None = None  # its ramp's start value (None: no ramp)
    start_at: float = 0.0
    end_at: float = 0.0
    # Per GPU, watts per second: how fast to rise when leaving the fail-safe (None: no up rate).
    exit_rate: float | None = None

    def at(self, now: float) -> int:
        """The limit in force at `now` (seconds since the epoch): on a ramp, linearly between its
        two values, rounded down (a ramp never hands out more than its line)."""
        if self.start_from is None or now >= self.end_at:
            return self.limit
        if now <= self.start_at:
            return self.start_from
        share = (now - self.start_at) / (self.end_at - self.start_at)
        return math.floor(self.start_from + (self.limit - self.start_from) * share)

    def ramping(self, now: float) -> bool:
        return self.start_from is not None and now < self.end_at and self.start_from != self.limit

    def safe_limit(self) -> int:
        return self.safe if self.safe is not None else self.limit


def exit_level(left_from: int, left_at: float, rate: float, now: float) -> int:
    """Leaving the fail-safe at `rate` watts per second per GPU: the limit at `now` of a rise from
    `left_from` begun at `left_at` (rounded down; the caller caps it at the limit)."""
    return math.floor(left_from + rate * max(0.0, now - left_at))


def _int_map(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if type(v) is int and v >= 0}


def slice_entries(obj: dict[str, Any]) -> dict[str, SliceEntry]:
    """Node name -> its entry, read defensively from a PowerLimitSlice (a malformed ramp is ignored:
    the limits hold)."""
    spec = obj.get("spec") or {}
    limits = _int_map(spec.get("limits"))
    safes = _int_map(spec.get("safeLimits"))
    ramp = spec.get("ramp")
    rate = spec.get("failsafeExitWattsPerSecond")
    exit_rate = float(rate) if isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0 \
        else None
    start = end = None
    starts: dict[str, int] = {}
    if isinstance(ramp, dict):
        start, end = parse_epoch(ramp.get("startAt")), parse_epoch(ramp.get("endAt"))
        if start is not None and end is not None and end > start:
            starts = _int_map(ramp.get("from"))
        else:
            start = end = None
    out: dict[str, SliceEntry] = {}
    for node, limit in limits.items():
        begin = starts.get(node)
        if begin is not None and start is not None and end is not None:
            out[node] = SliceEntry(limit, safes.get(node), begin, start, end, exit_rate)
        else:
            out[node] = SliceEntry(limit, safes.get(node), exit_rate=exit_rate)
    return out


def slice_name_of(obj: dict[str, Any]) -> str:
    """The slice a GPUNode's status names ("" when none)."""
    name = (obj.get("status") or {}).get("powerLimitSlice")
    return name if isinstance(name, str) else ""
