#!/usr/bin/env python3
"""Time a full recomputation of the core for synthetic sites of 1k, 10k and 100k GPU nodes.

Prints the time per node at each size and the ratio t(100k)/t(10k) (linear growth: about 10;
the target is at most 11), all measured in this one run (DESIGN section 8). Each size is timed a
few times and the best run counts, which is the usual way to keep a shared machine's noise out;
the time is the process's CPU time (one core), so other processes on a busy machine do not count,
and wall-clock time is printed beside it.
Usage: hack/bench-core.py [--sizes 1000,10000,100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import time

from stargate_operator.core import CoreSettings, plan_namespace
from stargate_operator.core.synth import SYNTH_NOW, synthetic_site


def best_time(objects: list[dict[str, object]], repeat: int) -> tuple[float, float]:
    """Best CPU time and best wall time of `repeat` full recomputations."""
    settings = CoreSettings()
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()
        plan_namespace(objects, SYNTH_NOW, settings)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return best_cpu, best_wall


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated node counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best one counts")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    times: dict[int, float] = {}
    for n in sizes:
        objects = synthetic_site(n, seed=42, namespace="bench")
        times[n], wall = best_time(objects, args.repeat)
        print(f"{n:>8} nodes: {times[n] * 1000:8.1f} ms CPU, {times[n] / n * 1e6:6.2f} us/node "
              f"(wall {wall * 1000:.1f} ms; {len(objects)} objects)")
    if 10_000 in times and 100_000 in times:
        print(f"ratio t(100k)/t(10k): {times[100_000] / times[10_000]:.2f} (linear: 10, target <= 11)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
