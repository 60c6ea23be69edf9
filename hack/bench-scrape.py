#!/usr/bin/env python3
"""How long one Prometheus scrape of the operator's metrics takes for a large site.

Builds a synthetic site (default 10,000 GPU nodes, 18 per rack: 556 racks, GB200 NVL72-like),
computes its statuses with the real core when it is available (`core.synth.synthetic_site` and
`core.plan_namespace`), else fills plausible statuses itself, then times `generate_latest` on the
operator's registry with per-node series off and on. Prints the times, the series counts and the
ratio between the two (ratios are what to compare across machines; see DESIGN section 8).

    .venv/bin/python hack/bench-scrape.py [--nodes 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator" / "src"))

from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from stargate_operator.metrics import StaticSource, make_registry

NODES_PER_RACK = 18
GPUS_PER_NODE = 4
TB = 10**12


def _cond(ctype: str, status: bool) -> dict[str, Any]:
    return {"type": ctype, "status": "True" if status else "False", "reason": "Bench", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


def simple_site(nodes: int, namespace: str = "bench") -> list[dict[str, Any]]:
    """A site with statuses filled in by hand (used while the core's synthesiser is missing)."""
    now = datetime.now(UTC)
    fresh = now.isoformat().replace("+00:00", "Z")
    stale = (now - timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    racks = (nodes + NODES_PER_RACK - 1) // NODES_PER_RACK
    objs: list[dict[str, Any]] = []
    base, gmin, gmax, hbm = 2_000, 700, 1_200, 186 * 10**9
    node_floor, node_demand = base + GPUS_PER_NODE * gmin, base + GPUS_PER_NODE * gmax
    site_budget = int(racks * NODES_PER_RACK * node_demand * 0.9)
    for r in range(racks):
        rname = f"rack-{r:04d}"
        members = min(NODES_PER_RACK, nodes - r * NODES_PER_RACK)
        rack_budget = int(members * node_demand * 0.9)
        limit = (rack_budget // members - base) // GPUS_PER_NODE
        measured = 0
        for i in range(members):
            is_stale = (r * NODES_PER_RACK + i) % 97 == 0
            power = base + GPUS_PER_NODE * limit - 300
            measured += 0 if is_stale else power
            objs.append({
                "kind": "GPUNode",
                "metadata": {"namespace": namespace, "name": f"{rname}-n{i:02d}"},
                "spec": {"rackRef": rname, "gpu": {"model": "GB200", "count": GPUS_PER_NODE,
                         "memoryBytes": hbm, "minPowerWatts": gmin, "maxPowerWatts": gmax},
                         "basePowerWatts": base, "hostMemoryBytes": 2 * TB},
                "status": {"powerLimitWatts": limit, "allocatedWatts": base + GPUS_PER_NODE * limit,
                           "floorWatts": node_floor, "demandWatts": node_demand,
                           "healthyGPUs": 0 if is_stale else GPUS_PER_NODE,
                           "telemetry": {"powerWatts": power, "healthyGPUs": GPUS_PER_NODE,
                                         "hbmUsedBytes": hbm, "observedAt": stale if is_stale else fresh},
                           "conditions": [_cond("Ready", True), _cond("PowerCapped", True),
                                          _cond("TelemetryStale", is_stale)]},
            })
        objs.append({
            "kind": "Rack",
            "metadata": {"namespace": namespace, "name": rname},
            "spec": {"clusterRef": "site", "maxPowerWatts": 140_000, "priority": 500,
                     "location": {"hall": f"hall-{r // 100}", "row": str(r % 100 // 10),
                                  "position": str(r % 10)}},
            "status": {"nodes": members, "gpus": {"total": members * GPUS_PER_NODE,
                                                  "healthy": members * GPUS_PER_NODE},
                       "power": {"budgetWatts": rack_budget, "floorWatts": members * node_floor,
                                 "demandWatts": members * node_demand, "measuredWatts": measured},
                       "conditions": [_cond("Ready", True), _cond("PowerCapped", True),
                                      _cond("OverBudget", False)]},
        })
    objs.append({
        "kind": "StargateCluster",
        "metadata": {"namespace": namespace, "name": "site"},
        "spec": {"site": {"region": "bench", "kind": "Onshore", "cooling": "DirectLiquid", "designPUE": 1.2},
                 "power": {"itCapacityWatts": site_budget * 2, "reservePercent": 5}},
        "status": {"racks": racks, "nodes": nodes, "gpus": {"total": nodes * GPUS_PER_NODE,
                                                            "healthy": nodes * GPUS_PER_NODE},
                   "memory": {"hbmBytes": nodes * GPUS_PER_NODE * hbm, "hostBytes": nodes * 2 * TB},
                   "power": {"budgetWatts": site_budget, "floorWatts": nodes * node_floor,
                             "demandWatts": nodes * node_demand, "allocatedWatts": site_budget,
                             "measuredWatts": site_budget, "facilityWatts": int(site_budget * 1.2)},
                   "carbonGramsPerHour": site_budget * 1.2 / 1000 * 400,
                   "conditions": [_cond("Ready", True), _cond("PowerOvercommitted", False)]},
    })
    for tier in ("HBM", "DRAM"):
        objs.append({
            "kind": "MemoryPool",
            "metadata": {"namespace": namespace, "name": f"pool-{tier.lower()}"},
            "spec": {"clusterRef": "site", "tier": tier},
            "status": {"capacityBytes": 10**15, "allocatedBytes": 6 * 10**14, "availableBytes": 4 * 10**14,
                       "claims": {"bound": 60, "pending": 0}, "conditions": [_cond("Ready", True)]},
        })
    return objs


def core_site(nodes: int, namespace: str = "bench") -> list[Mapping[str, Any]] | None:
    """The real core's synthetic site with the statuses the real core computes, when both exist."""
    try:
        from stargate_operator.core import CoreSettings, plan_namespace
        from stargate_operator.fixtures.synth import synthetic_site
    except ImportError:
        return None
    objects: list[dict[str, Any]] = list(synthetic_site(nodes, 1, namespace))
    now = datetime.now(UTC)
    plan = plan_namespace(objects, now, CoreSettings())
    out: list[Mapping[str, Any]] = []
    for obj in objects:
        meta = obj["metadata"]
        status = plan.statuses.get((obj["kind"], meta.get("namespace", namespace), meta["name"]))
        merged = dict(obj)
        if status is not None:
            telemetry = (obj.get("status") or {}).get("telemetry")
            merged["status"] = {**status, **({"telemetry": telemetry} if telemetry else {})}
        out.append(merged)
    return out


def time_scrape(objects: list[Mapping[str, Any]], per_node: bool, repeat: int,
                how: str) -> tuple[float, float, int, int]:
    """Median wall and CPU seconds of one rendering, series and bytes. `served`: what the
    operator's metrics server sends (the fast text path); `library`: prometheus_client's own text
    rendering of the same registry; `openmetrics`: the library's OpenMetrics rendering."""
    registry = make_registry(StaticSource(objects), per_node=per_node)
    render = {"served": lambda r: r.render_text(), "library": generate_latest,
              "openmetrics": openmetrics_latest}[how]
    wall, cpu = [], []
    body = b""
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        body = render(registry)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return statistics.median(wall), statistics.median(cpu), series, len(body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--simple", action="store_true", help="hand-filled statuses even when the core is there")
    args = ap.parse_args()
    objects = None if args.simple else core_site(args.nodes)
    origin = "core (synthetic_site + plan_namespace)"
    if objects is None:
        objects, origin = simple_site(args.nodes), "hand-filled statuses"
    racks = sum(1 for o in objects if o.get("kind") == "Rack")
    print(f"site: {args.nodes} GPU nodes, {racks} racks, {len(objects)} objects; statuses from {origin}")
    results = {}
    for per_node in (False, True):
        for how in ("served", "library", "openmetrics"):
            wall, cpu, series, size = time_scrape(objects, per_node, args.repeat, how)
            results[(per_node, how)] = cpu
            print(f"per-node {'on: ' if per_node else 'off:'} {how:11s} {cpu * 1000:8.1f} ms CPU "
                  f"({wall * 1000:8.1f} ms wall) per scrape, {series:7d} series, {size / 1e6:6.2f} MB")
    on_off = results[(True, "served")] / results[(False, "served")]
    lib = results[(True, "library")] / results[(True, "served")]
    print(f"ratio per-node on/off (served, CPU): {on_off:.1f}x; library/served (per-node on): {lib:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
