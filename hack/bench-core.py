#!/usr/bin/env python3
"""Time a full recomputation of the core for synthetic sites of 1k, 10k and 100k GPU nodes.

For each size (18 nodes per rack, fixtures/synth.py) it prints the time per node of
- cold: plan_namespace with nothing cached (what `plan` and an operator's first pass do);
- warm: the engine's steady state, a PlanCache passed on every call, every status already written
  back, and one node changed since the last call (a new resourceVersion);
and the ratio t(100k)/t(10k) of each (linear growth: about 10; the target is at most 11), all
measured in this one run. Then the same sites under a power tree six levels deep
(utility, 2 substations, 8 switchboards, 40 floor PDUs, 400 RPPs, plus 100 CDUs: fixtures/synth.py
tree=True), cold: at most 1.0 s of CPU at 100k and linear (ratio <= 11).
Each figure is the best of a few runs, the usual way to keep a shared machine's noise out; times
are the process's CPU time (one core), so other processes on a busy machine do not count, with
wall-clock time beside them. The input objects are frozen out of the garbage collector's passes
(gc.freeze), as an operator holding a large site's objects in its store should do (see
plan_namespace, which pauses the collector during the call).
Usage: hack/bench-core.py [--sizes 1000,10000,100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from stargate_operator.core import CoreSettings, Plan, PlanCache, plan_namespace
from stargate_operator.fixtures.synth import SYNTH_NOW, synthetic_site

SETTINGS = CoreSettings()


def best_time(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Best CPU time and best wall time of `repeat` runs."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()
        run()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_cpu, best_wall


def written_back(objects: list[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """The objects as the API server serves them after the engine wrote every status."""
    out = []
    for obj in objects:
        meta = obj["metadata"]
        status = dict(plan.statuses[(obj["kind"], meta["namespace"], meta["name"])])
        if "telemetry" in (obj.get("status") or {}):
            status["telemetry"] = obj["status"]["telemetry"]
        out.append({**obj, "metadata": {**meta, "resourceVersion": meta["resourceVersion"] + "-w"},
                    "status": status})
    return out


def warm_case(objects: list[dict[str, Any]], repeat: int) -> tuple[float, float]:
    """One node changed since the last call, the rest cached; every call sees a new change."""
    now = SYNTH_NOW + timedelta(seconds=1)
    cache = PlanCache()
    current = written_back(objects, plan_namespace(objects, SYNTH_NOW, SETTINGS))
    objects.clear()  # only the written-back copy is needed from here: halve the memory
    gc.freeze()
    plan_namespace(current, now, SETTINGS, cache)  # the cache holds every node now
    node_at = [i for i, o in enumerate(current) if o["kind"] == "GPUNode"]
    turn = 0

    def one_change() -> None:
        nonlocal turn
        turn += 1
        i = node_at[(turn * 7919) % len(node_at)]
        obj = current[i]
        spec = {**obj["spec"], "maintenance": not obj["spec"].get("maintenance", False)}
        meta = {**obj["metadata"], "resourceVersion": f"{obj['metadata']['resourceVersion']}-{turn}"}
        current[i] = {**obj, "spec": spec, "metadata": meta}
        plan_namespace(current, now, SETTINGS, cache)

    return best_time(one_change, repeat)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated node counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best one counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    cold: dict[int, float] = {}
    warm: dict[int, float] = {}
    tree: dict[int, float] = {}
    for n in sizes:
        objects = synthetic_site(n, seed=42, namespace="bench")
        count = len(objects)
        gc.freeze()
        cold[n], cold_wall = best_time(lambda o=objects: plan_namespace(o, SYNTH_NOW, SETTINGS),  # type: ignore[misc]
                                       args.repeat)
        warm[n], warm_wall = warm_case(objects, args.repeat)
        gc.unfreeze()
        del objects
        treed = synthetic_site(n, seed=42, namespace="bench", tree=True)
        domains = sum(1 for o in treed if o["kind"] == "PowerDomain")
        gc.freeze()
        tree[n], tree_wall = best_time(lambda o=treed: plan_namespace(o, SYNTH_NOW, SETTINGS),  # type: ignore[misc]
                                       args.repeat)
        gc.unfreeze()
        del treed
        print(f"{n:>8} nodes ({count} objects): "
              f"cold {cold[n] * 1000:7.1f} ms CPU, {cold[n] / n * 1e6:5.2f} us/node "
              f"(wall {cold_wall * 1000:.0f} ms); "
              f"warm, one node changed {warm[n] * 1000:7.1f} ms CPU, {warm[n] / n * 1e6:5.2f} us/node "
              f"(wall {warm_wall * 1000:.0f} ms); "
              f"under a tree of {domains} domains, cold {tree[n] * 1000:7.1f} ms CPU, "
              f"{tree[n] / n * 1e6:5.2f} us/node (wall {tree_wall * 1000:.0f} ms)")
    if 10_000 in cold and 100_000 in cold:
        print(f"ratio t(100k)/t(10k): cold {cold[100_000] / cold[10_000]:.2f}, "
              f"warm {warm[100_000] / warm[10_000]:.2f} (linear: 10, target <= 11)")
        print(f"under the 6-level tree: cold {tree[100_000]:.2f} s CPU at 100k (target <= 1.0 s), "
              f"t(100k)/t(10k) {tree[100_000] / tree[10_000]:.2f} (target <= 11)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
