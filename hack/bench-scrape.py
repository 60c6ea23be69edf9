#!/usr/bin/env python3
"""How long one Prometheus scrape of the operator's metrics takes for a large site.

Builds a synthetic site (default 10,000 GPU nodes, 18 per rack: 556 racks, GB200 NVL72-like),
computes its statuses with the real core (`fixtures.synth.synthetic_site` and
`core.plan_namespace`), then times `generate_latest` on the operator's registry with per-node
series off and on. Prints the times, the series counts and the ratio between the two (ratios are
what to compare across machines, as absolute times depend on the machine).

    .venv/bin/python hack/bench-scrape.py [--nodes 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from stargate_operator.core import CoreSettings, plan_namespace
from stargate_operator.fixtures.synth import synthetic_site
from stargate_operator.metrics import StaticSource, make_registry
from stargate_operator.process import gc_paused


def core_site(nodes: int, namespace: str = "bench") -> list[Mapping[str, Any]]:
    """The synthetic site (fixtures/synth.py) with the statuses the core computes for it."""
    objects: list[dict[str, Any]] = list(synthetic_site(nodes, 1, namespace))
    now = datetime.now(UTC)
    with gc_paused():
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
    args = ap.parse_args()
    objects = core_site(args.nodes)
    origin = "core (synthetic_site + plan_namespace)"
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
