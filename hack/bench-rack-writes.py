#!/usr/bin/env python3
"""What one Rack status write costs the API server, by the shape of the rack's limit maps.

At 100,000 nodes a curtailment is about 4,222 rack writes, and `react_s` is
bounded by what each one costs the API server on the machine's cores. This builds the synthetic
site on a fresh local control plane, writes its statuses, then sends rack status patches alone (a
tight loop of hack/bench.py's 32 writers, no operator) for each shape:

- `granular-full`: before: powerLimits and safeLimits as granular maps (the API server's
  managedFields track every node), safeLimits listing every node;
- `atomic-full`: both maps `x-kubernetes-map-type: atomic`, safeLimits still full;
- `atomic-sparse`: now: atomic maps, safeLimits only the safe limits below powerLimits (none on
  this site, which has no oversubscription).

For each: writes a second, the API server's CPU milliseconds and kilobytes allocated per write
(its /metrics), its garbage collections, and etcd's and the client's CPU per write. Each shape
runs `--rounds` times (and the median is printed), after one round that is not counted: the API
server collects a heap of every object every few thousand writes, and a round with one
collection more reads a millisecond dearer.

    .venv/bin/python hack/bench-rack-writes.py [--nodes 2000] [--writes 3000] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import benchlib  # its site, writers and CPU counters
from stargate_operator import kinds
from stargate_operator.client import ApiResource, KubeClient
from stargate_operator.localcp.controlplane import LocalControlPlane

Key = tuple[str, str, str]
SHAPES = ("granular-full", "atomic-full", "atomic-sparse")


def set_map_type(cp: LocalControlPlane, map_type: str) -> None:
    """Both limit maps of the Rack CRD to `map_type`, then a pause for the API server to serve it."""
    crd = f"{kinds.RACK.plural}.{kinds.GROUP}"
    props = "/spec/versions/0/schema/openAPIV3Schema/properties/status/properties"
    ops = [{"op": "add", "path": f"{props}/{f}/x-kubernetes-map-type", "value": map_type}
           for f in ("powerLimits", "safeLimits")]
    cp.kubectl("patch", "crd", crd, "--type=json", "-p", json.dumps(ops))
    time.sleep(5)


def status_patch(client: KubeClient, key: Key, patch: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
    return lambda: client.patch_status(ApiResource.of(kinds.RACK), key[1], key[2], patch)


async def set_safe_limits(client: KubeClient, limits: dict[Key, dict[str, int]], full: bool) -> None:
    """Every rack's safeLimits removed, then (full) every node at its limit, as before; else left
    empty, as the core writes them for a site without oversubscription."""
    racks = sorted(limits)
    await benchlib.bounded([status_patch(client, k, {"safeLimits": None}) for k in racks])
    if full:
        await benchlib.bounded([status_patch(client, k, {"safeLimits": limits[k]}) for k in racks])


async def one_round(cp: LocalControlPlane, client: KubeClient, servers: dict[str, int],
                    limits: dict[Key, dict[str, int]], writes: int, turn: int) -> dict[str, Any]:
    """`writes` patches of the racks' powerLimits, each a figure that differs from the one held."""
    racks = sorted(limits)
    patches = []
    for i in range(writes):
        key = racks[i % len(racks)]
        step = 1 + (turn + i // len(racks)) % 2  # alternate, so that every write changes the map
        patches.append((key, {"powerLimits": {n: v - step for n, v in limits[key].items()}}))
    benchlib.quiesce([servers["kube-apiserver"], servers["etcd"]])
    go0 = benchlib.go_figures(cp)
    cpu = benchlib.Cpu(servers["kube-apiserver"], servers["etcd"])
    t = time.perf_counter()
    await benchlib.bounded([status_patch(client, k, p) for k, p in patches])
    seconds = time.perf_counter() - t
    go1 = benchlib.go_figures(cp)
    used = cpu.used("client")
    return {
        "writes_per_s": round(writes / seconds),
        **benchlib.apiserver_per_write(go0, go1, used["apiserver"], writes),
        "etcd_ms_per_write": round(1000 * used["etcd"] / writes, 2),
        "client_ms_per_write": round(1000 * used["client"] / writes, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"nodes": args.nodes, "writes": args.writes}
    with LocalControlPlane() as cp:
        cp.apply_crds()
        client = KubeClient.from_kubeconfig(str(cp.kubeconfig), max_connections=benchlib.CONCURRENCY)
        servers = cp.server_pids()
        try:
            site = benchlib.Site(client, "stargate-bench", args.nodes, args.seed)
            await site.create()
            expected = site.expected(await site.objects())
            t = time.perf_counter()
            await site.write(expected)
            took = time.perf_counter() - t
            benchlib.log(f"site of {len(expected)} objects with its statuses in {took:.0f}s")
            limits = {k: v["powerLimits"] for k, v in expected.items() if k[0] == kinds.RACK.kind}
            # Not counted: the API server's heap grows through its first few thousand rack writes,
            # and whichever shape came first would pay for that.
            warm = await one_round(cp, client, servers, limits, args.writes, 1)
            benchlib.log(f"warm-up round: {warm}")
            # Shapes in turn, round after round: the API server grows slower with every round of
            # writes (its heap), and taking each shape's rounds together would bill that to the last.
            result.update({shape: [] for shape in SHAPES})
            for r in range(args.rounds):
                for turn, shape in enumerate(SHAPES):
                    map_type, safe = shape.split("-")
                    set_map_type(cp, map_type)
                    await set_safe_limits(client, limits, full=safe == "full")
                    result[shape].append(await one_round(cp, client, servers, limits, args.writes, turn + r))
                    benchlib.log(f"{shape} round {r + 1}: {result[shape][-1]}")
        finally:
            await client.aclose()
    return result


def main() -> int:
    p = benchlib.parser(__doc__, 2000)
    p.add_argument("--writes", type=int, default=3000, help="rack writes per round (default 3000)")
    p.add_argument("--rounds", type=int, default=2, help="rounds per shape (default 2)")
    args = p.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"nodes={result['nodes']} writes per round={result['writes']}")
    for shape in SHAPES:
        for n, r in enumerate(result[shape], 1):
            print(f"{shape:14} round {n}: " + " ".join(f"{k}={v}" for k, v in r.items()))
        ms = statistics.median(r["apiserver_ms_per_write"] for r in result[shape])
        kb = statistics.median(r["apiserver_kb_per_write"] for r in result[shape])
        print(f"{shape:14} median: apiserver_ms_per_write={ms} apiserver_kb_per_write={kb}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
