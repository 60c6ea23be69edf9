#!/usr/bin/env python3
"""Check the node agent's NVML path on a machine with NVIDIA GPUs, through the agent's own code.

  .venv/bin/python hack/check-nvml.py                    # read-only: every device, what it allows
  sudo .venv/bin/python hack/check-nvml.py --set-limit 450   # try to set 450 W on every GPU
  sudo .venv/bin/python hack/check-nvml.py --restore-default # put each GPU back to its default limit

Reads every device with the real nvidia-ml-py library exactly as `stargate-operator agent` does
(stargate_operator.agent.nvml.NvmlBackend), prints what it read (power, HBM, health, the limit in force
and the range the device allows) and the node telemetry the agent would write. Exit status: 0 when it
worked (and, with --set-limit, every GPU took the limit exactly), 1 when something could not be
applied, 2 when NVML is not available.
"""

from __future__ import annotations

import argparse
import sys

from stargate_operator.agent.backend import LimitOutcome, NodeReading
from stargate_operator.agent.nvml import NvmlBackend, NvmlUnavailable
from stargate_operator.agent.runner import telemetry_patch

GiB = 2**30


def show(reading: NodeReading) -> None:
    for g in reading.gpus:
        rng = f"{g.limit_range_watts[0]:.0f}-{g.limit_range_watts[1]:.0f} W" if g.limit_range_watts else "n/a"
        limit = f"{g.limit_watts:.0f} W" if g.limit_watts is not None else "n/a"
        health = "healthy" if g.healthy else f"UNHEALTHY ({g.problem})"
        print(f"GPU {g.index}  {g.name}  {g.uuid}")
        print(f"    power {g.power_watts:7.1f} W   limit {limit} (settable {rng})   "
              f"HBM {g.memory_used_bytes / GiB:.1f} / {g.memory_total_bytes / GiB:.1f} GiB   {health}")
    t = telemetry_patch(reading, {})["telemetry"]
    print(f"node: {len(reading.gpus)} GPU(s), {t['healthyGPUs']} healthy, GPU power {t['powerWatts']} W "
          f"(the agent adds spec.basePowerWatts), HBM in use {t['hbmUsedBytes']} bytes, at {t['observedAt']}")


def show_outcome(outcome: LimitOutcome) -> None:
    for i, w in sorted(outcome.applied.items()):
        print(f"GPU {i}: limit in force {w:.0f} W")
    for p in outcome.problems:
        print(f"NOT APPLIED: {p}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set-limit", type=int, metavar="W", help="set this per-GPU power limit (needs root)")
    ap.add_argument("--restore-default", action="store_true",
                    help="set every GPU back to its default power limit (needs root)")
    args = ap.parse_args(argv)
    try:
        backend = NvmlBackend()
    except NvmlUnavailable as e:
        print(f"check-nvml: {e}", file=sys.stderr)
        return 2
    try:
        print(f"NVML: {len(backend.devices)} device(s)")
        show(backend.read({}, {}))
        code = 0
        if args.set_limit is not None:
            print(f"\nsetting {args.set_limit} W per GPU")
            outcome = backend.apply_power_limit(args.set_limit)
            show_outcome(outcome)
            code = 0 if outcome.ok else 1
        elif args.restore_default:
            nv = backend.nv
            for d in backend.devices:
                try:
                    default = int(nv.nvmlDeviceGetPowerManagementDefaultLimit(d.handle))
                    nv.nvmlDeviceSetPowerManagementLimit(d.handle, default)
                    print(f"GPU {d.index}: limit back to its default {default / 1000:.0f} W")
                except nv.NVMLError as e:
                    print(f"GPU {d.index}: NOT RESTORED: {e}")
                    code = 1
        else:
            print("\nread-only: nothing was set (--set-limit W tries a limit within the settable ranges)")
        if args.set_limit is not None or args.restore_default:
            print("\nread back:")
            show(backend.read({}, {}))
        return code
    finally:
        backend.close()


if __name__ == "__main__":
    sys.exit(main())
