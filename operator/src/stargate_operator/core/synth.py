"""Synthetic sites in wire form, for benchmarks, load tests and demos.

`synthetic_site(nodes, seed, namespace)` builds one StargateCluster with racks of 18 nodes (the
last may be partial), mixed rack priorities, GB200 / H100 / H200 nodes with the public figures of
DESIGN section 9, node-agent telemetry (mostly fresh, some stale, some absent), a few nodes in
maintenance, and HBM / DRAM / CXL pools with claims, some already bound. The site's IT capacity is
set a little below its total demand, so the allocator has real capping to do. Deterministic for a
given seed. Pure: it builds dicts, it writes nothing.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from stargate_operator.core.wire import format_time

API_VERSION = "stargate.dev/v1alpha1"
NODES_PER_RACK = 18
GB = 1_000_000_000
TB = 1_000 * GB

# The reference time telemetry is dated against: pass it as `now` to plan the site.
SYNTH_NOW = datetime.fromisoformat("2026-01-01T12:00:00+00:00")

# model: (GPUs per node, HBM per GPU, min W, max W, base W, host DRAM, rack rating W)
PROFILES: dict[str, tuple[int, int, int, int, int, int, int]] = {
    # GB200 NVL72: 18 compute trays of 4 GPUs, ~1.2 kW per GPU, ~13.5 TB HBM and ~132 kW per rack.
    "GB200": (4, 186 * GB, 400, 1200, 1_400, 960 * GB, 132_000),
    # DGX H100/H200: 8 x 700 W GPUs, about 10.2 kW per node at most, 2 TB of host DRAM.
    "H100-SXM": (8, 80 * GB, 200, 700, 4_600, 2 * TB, 160_000),
    "H200": (8, 141 * GB, 200, 700, 4_600, 2 * TB, 160_000),
}
MODELS = ("GB200", "GB200", "H100-SXM", "H200")  # Stargate sites are mostly GB200
PRIORITIES = (300, 500, 500, 800, 1000)


def _obj(kind: str, name: str, namespace: str, serial: int, spec: dict[str, Any]) -> dict[str, Any]:
    created = SYNTH_NOW - timedelta(days=30) + timedelta(seconds=serial)
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"{namespace}-{kind.lower()}-{serial:08d}",
            "generation": 1,
            "resourceVersion": str(1000 + serial),
            "creationTimestamp": format_time(created),
        },
        "spec": spec,
    }


def synthetic_site(
    nodes: int, seed: int, namespace: str, *, now: datetime = SYNTH_NOW, cluster: str = "site"
) -> list[dict[str, Any]]:
    """One site of `nodes` GPU nodes in wire form; plan it at `now` (telemetry is dated from it)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    serial = 0
    rack_count = (nodes + NODES_PER_RACK - 1) // NODES_PER_RACK
    demand_total = 0
    site = _obj(
        "StargateCluster",
        cluster,
        namespace,
        serial,
        {
            "site": {"region": "us-central", "kind": "Onshore", "cooling": "DirectLiquid", "designPUE": 1.2},
            "power": {"itCapacityWatts": 1, "reservePercent": 5},  # set below, once demand is known
            "carbon": {"gridIntensityGramsPerKWh": 380.0},
        },
    )
    out.append(site)
    made = 0
    for r in range(rack_count):
        serial += 1
        model = MODELS[rng.randrange(len(MODELS))]
        count, hbm, min_w, max_w, base_w, host, rating = PROFILES[model]
        rack_name = f"rack-{r:05d}"
        out.append(
            _obj(
                "Rack",
                rack_name,
                namespace,
                serial,
                {
                    "clusterRef": cluster,
                    "location": {"hall": f"hall-{r // 400}", "row": f"row-{(r // 20) % 20}",
                                 "position": str(r % 20)},
                    "maxPowerWatts": rating,
                    "priority": PRIORITIES[rng.randrange(len(PRIORITIES))],
                },
            )
        )
        rack_demand = 0
        for i in range(min(NODES_PER_RACK, nodes - made)):
            serial += 1
            made += 1
            gpu: dict[str, Any] = {
                "model": model, "count": count, "memoryBytes": hbm,
                "minPowerWatts": min_w, "maxPowerWatts": max_w,
            }
            if rng.random() < 0.2:
                gpu["requestedPowerWatts"] = rng.randrange(min_w, max_w + 1, 50)
            maintenance = rng.random() < 0.01
            node = _obj(
                "GPUNode",
                f"{rack_name}-n{i:02d}",
                namespace,
                serial,
                {
                    "rackRef": rack_name,
                    "nodeName": f"gpu-{r:05d}-{i:02d}",
                    "gpu": gpu,
                    "basePowerWatts": base_w,
                    "hostMemoryBytes": host,
                    "maintenance": maintenance,
                },
            )
            per_gpu = min_w if maintenance else gpu.get("requestedPowerWatts", max_w)
            rack_demand += base_w + count * per_gpu
            roll = rng.random()
            if roll < 0.85:
                age = rng.uniform(0, 60)
                healthy = count if rng.random() < 0.97 else count - 1
                node["status"] = {"telemetry": {
                    "powerWatts": int((base_w + count * max_w) * rng.uniform(0.55, 0.95)),
                    "healthyGPUs": healthy,
                    "hbmUsedBytes": int(count * hbm * rng.uniform(0.2, 0.9)),
                    "observedAt": format_time(now - timedelta(seconds=age)),
                }}
            elif roll < 0.88:
                node["status"] = {"telemetry": {
                    "powerWatts": 0, "healthyGPUs": count,
                    "observedAt": format_time(now - timedelta(minutes=rng.randrange(5, 600))),
                }}
            out.append(node)
        demand_total += min(rack_demand, rating)
    # A little below demand: the allocator must cap, and priorities matter.
    site["spec"]["power"]["itCapacityWatts"] = max(int(demand_total * 0.97 / 0.95), 1)

    pools = [
        ("hbm-shared", {"clusterRef": cluster, "tier": "HBM", "sharePercent": 10}),
        ("dram-shared", {"clusterRef": cluster, "tier": "DRAM", "sharePercent": 25}),
        ("cxl-appliance", {"clusterRef": cluster, "tier": "CXL",
                           "capacityBytes": max(nodes, 1) * 64 * GB}),
        ("rack0-hbm", {"clusterRef": cluster, "tier": "HBM", "rackRef": "rack-00000", "sharePercent": 50}),
    ]
    for name, spec in pools:
        serial += 1
        out.append(_obj("MemoryPool", name, namespace, serial, spec))
    claim_count = max(nodes // 20, 4)
    for c in range(claim_count):
        serial += 1
        pool_name = pools[c % len(pools)][0]
        size = rng.choice((64, 128, 256, 512, 1024)) * GB
        claim = _obj(
            "MemoryClaim",
            f"claim-{c:06d}",
            namespace,
            serial,
            {"poolRef": pool_name, "sizeBytes": size, "priority": rng.choice((0, 0, 10, 100))},
        )
        if rng.random() < 0.5:
            claim["status"] = {
                "phase": "Bound",
                "allocatedBytes": size,
                "boundAt": format_time(now - timedelta(hours=rng.randrange(1, 48))),
            }
        out.append(claim)
    return out
