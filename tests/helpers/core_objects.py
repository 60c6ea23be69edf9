"""Wire-form builders for the core's tests: small objects with every figure stated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stargate_operator import kinds
from stargate_operator.core import CoreSettings, Plan, PlanCache, plan_namespace

NS = "site-ns"
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
NOW_S = "2026-01-01T12:00:00Z"
GB = 1_000_000_000
API = kinds.API_VERSION


def ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _obj(kind: str, name: str, spec: dict[str, Any], *, ns: str = NS, gen: int | None = 1,
         created: datetime | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "uid": f"uid-{kind}-{name}"}
    if gen is not None:
        meta["generation"] = gen
    if created is not None:
        meta["creationTimestamp"] = ts(created)
    obj: dict[str, Any] = {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def cluster(name: str = "site", *, it: int = 100_000, reserve: int = 0, curtail: int | None = None,
            until: str | None = None, pue: float = 1.0, intensity: float | None = None,
            **kw: Any) -> dict[str, Any]:
    power: dict[str, Any] = {"itCapacityWatts": it, "reservePercent": reserve}
    if curtail is not None:
        power["curtailment"] = {"percent": curtail, "reason": "grid peak"}
        if until is not None:
            power["curtailment"]["until"] = until
    spec: dict[str, Any] = {
        "site": {"region": "r", "kind": "Onshore", "cooling": "DirectLiquid", "designPUE": pue},
        "power": power,
    }
    if intensity is not None:
        spec["carbon"] = {"gridIntensityGramsPerKWh": intensity}
    return _obj("StargateCluster", name, spec, **kw)


def rack(name: str, *, cluster_ref: str = "site", max_w: int = 1_000_000, priority: int = 500,
         **kw: Any) -> dict[str, Any]:
    return _obj("Rack", name, {"clusterRef": cluster_ref, "maxPowerWatts": max_w, "priority": priority},
                **kw)


def node(name: str, rack_ref: str, *, count: int = 1, min_w: int = 100, max_w: int = 500,
         req: int | None = None, base: int = 0, mem: int = 80 * GB, host: int = 0,
         maintenance: bool = False, telemetry: dict[str, Any] | None = None,
         **kw: Any) -> dict[str, Any]:
    gpu: dict[str, Any] = {"model": "H100-SXM", "count": count, "memoryBytes": mem,
                           "minPowerWatts": min_w, "maxPowerWatts": max_w}
    if req is not None:
        gpu["requestedPowerWatts"] = req
    spec = {"rackRef": rack_ref, "gpu": gpu, "basePowerWatts": base, "hostMemoryBytes": host,
            "maintenance": maintenance}
    if telemetry is not None:
        kw["status"] = {**kw.get("status", {}), "telemetry": telemetry}
    return _obj("GPUNode", name, spec, **kw)


def pool(name: str, *, cluster_ref: str = "site", tier: str = "CXL", capacity: int | None = None,
         rack_ref: str | None = None, share: int = 100, **kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"clusterRef": cluster_ref, "tier": tier, "sharePercent": share}
    if capacity is not None:
        spec["capacityBytes"] = capacity
    if rack_ref is not None:
        spec["rackRef"] = rack_ref
    return _obj("MemoryPool", name, spec, **kw)


def claim(name: str, pool_ref: str, size: int, *, priority: int = 0, age_s: int = 0,
          bound: bool = False, **kw: Any) -> dict[str, Any]:
    """A claim created `age_s` seconds before NOW; `bound` gives it a Bound status."""
    if bound:
        kw["status"] = {"phase": "Bound", "allocatedBytes": size, "boundAt": "2025-12-31T00:00:00Z"}
    return _obj("MemoryClaim", name, {"poolRef": pool_ref, "sizeBytes": size, "priority": priority},
                created=NOW - timedelta(seconds=age_s), **kw)


def run(objects: list[dict[str, Any]], now: datetime = NOW, stale: float = 120.0,
        cache: PlanCache | None = None) -> Plan:
    return plan_namespace(objects, now, CoreSettings(stale_after_seconds=stale), cache)


def slice_limits(plan: Plan, field: str = "limits") -> dict[str, int]:
    """Every node's entry in the PowerLimitSlices the plan writes (`field`: limits or safeLimits)."""
    out: dict[str, int] = {}
    for body in plan.applies:
        if body["kind"] == "PowerLimitSlice":
            for node, watts in (body["spec"].get(field) or {}).items():
                assert node not in out, f"{node} in two slices"
                out[node] = watts
    return out


def st(plan: Plan, kind: str, name: str, ns: str = NS) -> dict[str, Any]:
    return plan.statuses[(kind, ns, name)]


def cond(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == ctype)


def feed_back(objects: list[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """The objects as the API server returns them after the engine wrote the plan's statuses."""
    out = []
    for o in objects:
        key = (o["kind"], o["metadata"].get("namespace") or "default", o["metadata"]["name"])
        status = dict(plan.statuses[key])
        old = o.get("status") or {}
        if "telemetry" in old:
            status["telemetry"] = old["telemetry"]
        out.append({**o, "status": status})
    return out
