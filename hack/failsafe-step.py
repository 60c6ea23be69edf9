#!/usr/bin/env python3
"""The largest one-second step of a simulated site's assigned GPU power when the fail-safe trips.

A synthetic site (fixtures/synth.py), its feed cut to `--feed` of its demand and oversubscribed by
`--percent`, planned by the core: each
node's limit and its safe limit (the same tree with no oversubscription). When the operator's
Lease lapses, each agent lowers its GPUs from the limit to min(limit, safe limit): the site's
assigned power drops by the sum of those differences. Without a spread every agent moves in one
instant; with `--spread` each moves at its hashed offset (agent/spread.py). Printed: the whole
drop, and the largest drop within any one second, both in watts and as a share of the drop.
Leaving the fail-safe is the same drop upwards, over the same spread.

    .venv/bin/python hack/failsafe-step.py --nodes 10000 --percent 25 --spread 10 [--json]
"""

from __future__ import annotations

import argparse
import json

from stargate_operator.agent.spread import DEFAULT_FAILSAFE_SPREAD_SECONDS, failsafe_offset
from stargate_operator.core import CoreSettings, plan_namespace
from stargate_operator.core.wire import format_time
from stargate_operator.fixtures.synth import SYNTH_NOW, synthetic_site


def largest_step(drops: list[tuple[float, int]], window: float = 1.0) -> int:
    """The most watts that move within any `window` seconds, for (instant, watts) moves."""
    drops = sorted(drops)
    most = acc = j = 0
    for t, w in drops:
        acc += w
        while drops[j][0] <= t - window:
            acc -= drops[j][1]
            j += 1
        most = max(most, acc)
    return most


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000, help="nodes of the synthetic site")
    parser.add_argument("--percent", type=int, default=25, help="the site's oversubscription percent")
    parser.add_argument("--spread", type=float, default=DEFAULT_FAILSAFE_SPREAD_SECONDS,
                        help="the agents' --failsafe-spread, seconds")
    parser.add_argument("--feed", type=float, default=0.85,
                        help="the site's IT capacity as a share of what the synthetic site's demand "
                             "needs (below 1: limits beneath the GPUs' maximum, where oversubscription "
                             "raises them)")
    parser.add_argument("--seed", type=int, default=1, help="the synthetic site's seed")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    args = parser.parse_args()
    objs = synthetic_site(args.nodes, args.seed, "site")
    site = objs[0]
    power = site["spec"]["power"]
    power["itCapacityWatts"] = round(power["itCapacityWatts"] * args.feed)
    power["oversubscription"] = {"percent": args.percent}
    # Every node measured at its floor (GPUs idle at their minimum): nothing caps, and the limits
    # are the oversubscribed allocation, above the safe ones.
    for o in objs:
        if o["kind"] == "GPUNode":
            spec = o["spec"]
            floor = spec.get("basePowerWatts", 0) + spec["gpu"]["count"] * spec["gpu"]["minPowerWatts"]
            o["status"] = {"telemetry": {"powerWatts": floor, "observedAt": format_time(SYNTH_NOW)}}
    plan = plan_namespace(objs, SYNTH_NOW, CoreSettings())
    capping = plan.statuses["StargateCluster", "site", site["metadata"]["name"]]["power"].get("capping") or {}
    assert not capping.get("active"), capping
    counts = {o["metadata"]["name"]: o["spec"]["gpu"]["count"] for o in objs if o["kind"] == "GPUNode"}
    moves: list[tuple[str, int]] = []
    for (kind, _, name), status in plan.statuses.items():
        if kind == "GPUNode":
            limit, safe = status["powerLimitWatts"], status["safeLimitWatts"]
            moves.append((name, counts[name] * (limit - min(limit, safe))))
    total = sum(w for _, w in moves)
    before = largest_step([(0.0, w) for _, w in moves])
    after = largest_step([(failsafe_offset(n, args.spread), w) for n, w in moves])
    out = {"nodes": args.nodes, "oversubscriptionPercent": args.percent, "spreadSeconds": args.spread,
           "dropWatts": total, "stepWattsBefore": before, "stepWattsAfter": after,
           "stepShareAfter": round(after / total, 4) if total else 0.0}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.nodes} nodes, oversubscribed {args.percent} %: the fail-safe lowers the assigned GPU "
              f"power by {total / 1e6:.3f} MW")
        print(f"  largest one-second step, all at once:        {before / 1e6:.3f} MW (100 %)")
        print(f"  largest one-second step, spread {args.spread:g} s:    {after / 1e6:.3f} MW "
              f"({100 * after / total if total else 0:.1f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
