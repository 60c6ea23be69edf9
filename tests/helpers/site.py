"""Builders of small stargate objects with round figures, so that tests can compute results by hand.

The default node: 4 GPUs of 100..500 W on a 1000 W base, so floor F = 1400 W, demand D = 3000 W,
room D - F = 1600 W; 1000 bytes of HBM per GPU, 8000 bytes of host memory.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from helpers.api import obj
from stargate_operator.core.wire import format_time


def cluster(name: str = "site", it: int = 100_000, reserve: int = 0, pue: float = 1.0,
            curtailment: dict[str, Any] | None = None) -> dict[str, Any]:
    power: dict[str, Any] = {"itCapacityWatts": it, "reservePercent": reserve}
    if curtailment is not None:
        power["curtailment"] = curtailment
    return obj("StargateCluster", name, {
        "site": {"region": "test", "kind": "Onshore", "cooling": "DirectLiquid", "designPUE": pue},
        "power": power,
    })


def rack(name: str, cluster_ref: str = "site", max_w: int = 100_000, priority: int = 500) -> dict[str, Any]:
    return obj("Rack", name, {"clusterRef": cluster_ref, "maxPowerWatts": max_w, "priority": priority})


def node(name: str, rack_ref: str, *, count: int = 4, min_w: int = 100, max_w: int = 500,
         base: int = 1000, requested: int | None = None, maintenance: bool = False,
         hbm: int = 1000, host: int = 8000) -> dict[str, Any]:
    gpu: dict[str, Any] = {"model": "H100-SXM", "count": count, "memoryBytes": hbm,
                           "minPowerWatts": min_w, "maxPowerWatts": max_w}
    if requested is not None:
        gpu["requestedPowerWatts"] = requested
    return obj("GPUNode", name, {"rackRef": rack_ref, "gpu": gpu, "basePowerWatts": base,
                                 "hostMemoryBytes": host, "maintenance": maintenance})


def pool(name: str, cluster_ref: str = "site", tier: str = "CXL", capacity: int | None = None,
         share: int | None = None, rack_ref: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterRef": cluster_ref, "tier": tier}
    if capacity is not None:
        spec["capacityBytes"] = capacity
    if share is not None:
        spec["sharePercent"] = share
    if rack_ref is not None:
        spec["rackRef"] = rack_ref
    return obj("MemoryPool", name, spec)


def claim(name: str, pool_ref: str, size: int, priority: int = 0) -> dict[str, Any]:
    return obj("MemoryClaim", name, {"poolRef": pool_ref, "sizeBytes": size, "priority": priority})


def rfc3339(when: datetime) -> str:
    return format_time(when)


def now_plus(seconds: float) -> str:
    return rfc3339(datetime.now(UTC) + timedelta(seconds=seconds))
