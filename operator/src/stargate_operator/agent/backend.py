"""What a GPU source looks like to the agent: plain readings in, power-limit outcomes out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from stargate_operator.core.wire import format_time


@dataclass(frozen=True)
class GPUReading:
    """One GPU as read at one moment."""

    index: int
    uuid: str = ""
    name: str = ""
    power_watts: float = 0.0
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    healthy: bool = True
    problem: str = ""  # why it is unhealthy, or what could not be read
    limit_watts: float | None = None  # the power limit in force, where known
    limit_range_watts: tuple[float, float] | None = None  # what the device allows
    default_limit_watts: float | None = None  # the limit it boots with (NVML's default limit)
    enforced_limit_watts: float | None = None  # the limit it enforces, all limiters considered


@dataclass(frozen=True)
class NodeReading:
    """All GPUs of a node; `other_power_watts` is what the source knows about the rest of the node
    (None for NVML, which sees only GPUs: the agent then adds the GPUNode's spec.basePowerWatts)."""

    gpus: tuple[GPUReading, ...]
    other_power_watts: float | None = None
    observed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def gpu_power_watts(self) -> float:
        return sum(g.power_watts for g in self.gpus)

    @property
    def healthy_gpus(self) -> int:
        return sum(1 for g in self.gpus if g.healthy)

    @property
    def hbm_used_bytes(self) -> int:
        return sum(g.memory_used_bytes for g in self.gpus)

    @property
    def power_range_watts(self) -> tuple[int, int] | None:
        """The per-GPU limit range every GPU of the node accepts, in whole watts: the highest of the
        minimums (rounded up) and the lowest of the maximums (rounded down), so that one limit for
        the whole node (what the operator assigns) is settable on each GPU. None when no GPU said,
        or when the GPUs' ranges do not overlap."""
        ranges = [g.limit_range_watts for g in self.gpus if g.limit_range_watts is not None]
        if not ranges:
            return None
        lo = math.ceil(max(r[0] for r in ranges))
        hi = math.floor(min(r[1] for r in ranges))
        return (lo, hi) if 0 < lo <= hi else None

    @property
    def default_power_watts(self) -> int | None:
        """The lowest of the GPUs' default limits, in whole watts (rounded down), if any said."""
        defaults = [g.default_limit_watts for g in self.gpus if g.default_limit_watts]
        return math.floor(min(defaults)) if defaults else None

    @property
    def enforced_limit_watts(self) -> int | None:
        """`telemetry.enforcedLimitWatts`: the highest enforced limit of the node's GPUs, in whole
        watts (rounded: NVML speaks milliwatts), if any GPU said. The highest, because a limit holds
        on the node only if it holds on every GPU: one GPU that refused it, or clamped it up to its
        range, must keep the node unconfirmed (PowerLimitApplied, the power-unmanaged taint and
        lower-before-raise all read this figure)."""
        enforced = [g.enforced_limit_watts for g in self.gpus if g.enforced_limit_watts is not None]
        return round(max(enforced)) if enforced else None

    def power_range_telemetry(self) -> dict[str, int]:
        """`telemetry.minPowerWatts`, `maxPowerWatts` and `defaultPowerWatts` where known: what node
        discovery takes over the product table (an open request to NVIDIA's gpu-operator asks for this
        figure)."""
        out: dict[str, int] = {}
        rng = self.power_range_watts
        if rng is not None:
            out["minPowerWatts"], out["maxPowerWatts"] = rng
        default = self.default_power_watts
        if default is not None and default > 0:
            out["defaultPowerWatts"] = default
        return out


@dataclass(frozen=True)
class LimitOutcome:
    """What became of a requested per-GPU power limit.

    `applied` maps GPU index to the limit now in force (watts); `problems` holds one line per GPU
    whose limit is not what was asked (clamped to the device's range, not permitted, not supported,
    unreadable). An empty `problems` means every GPU runs at exactly the requested limit."""

    requested_watts: int
    applied: dict[int, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    changed: bool = False  # whether any device limit was actually set by this call

    @property
    def ok(self) -> bool:
        return not self.problems


class GPUBackend(Protocol):
    """A source of GPU readings that can also set power limits. Calls may block (NVML): the runner
    calls them from a worker thread when `blocking` is true."""

    blocking: bool

    def read(self, spec: dict[str, Any], annotations: dict[str, str]) -> NodeReading:
        """Read every GPU. `spec` is the GPUNode's spec (the simulator sizes itself from it)."""
        ...

    def apply_power_limit(self, watts: int) -> LimitOutcome:
        """Set every GPU's power limit to `watts`, clamped to what each device allows. Idempotent:
        called every interval, it only writes to a device whose limit differs."""
        ...

    def close(self) -> None: ...


def rfc3339(ts: datetime) -> str:
    """Telemetry time: UTC, `Z`, milliseconds where the time has a fraction of a second."""
    return format_time(ts, millis=True)
