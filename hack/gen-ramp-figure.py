#!/usr/bin/env python3
"""docs/images/ramp.png: one grid event through its ramp, computed by the operator's own core.

A 100 kW site (100 nodes of one 1 kW GPU asking for 850 W, floors 100 W) ramps at 500 W/s down
and 250 W/s up; a GridEvent limits it to 60 kW from 12:10:00 to 12:12:00, known ten minutes
ahead. Every second the core plans the site (as `plan --now` would); the measured power follows
the limits after the agents' enforcement lag (3 s) and the workload's own swing (between 67 and
83 % of TDP).

  .venv/bin/python hack/gen-ramp-figure.py [docs/images/ramp.png]
"""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from stargate_operator.core import CoreSettings, plan_namespace
from stargate_operator.kinds import API_VERSION

T0 = datetime(2026, 1, 1, 12, 8, 0, tzinfo=UTC)
START = datetime(2026, 1, 1, 12, 10, 0, tzinfo=UTC)
END = START + timedelta(minutes=2)
LAG_S = 3


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _obj(kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind,
            "metadata": {"name": name, "namespace": "fig", "uid": f"u-{name}", **meta}, "spec": spec}


def site() -> list[dict[str, Any]]:
    objs = [
        _obj("StargateCluster", "site", {
            "site": {"region": "r", "kind": "Onshore", "cooling": "DirectLiquid", "designPUE": 1.2},
            "power": {"itCapacityWatts": 100_000, "reservePercent": 0,
                      "rampDownWattsPerSecond": 500, "rampUpWattsPerSecond": 250}}),
        _obj("Rack", "r1", {"clusterRef": "site", "maxPowerWatts": 200_000}),
        _obj("GridEvent", "peak", {"clusterRef": "site", "start": _ts(START), "end": _ts(END),
                                   "limitWatts": 60_000, "reason": "evening peak"},
             creationTimestamp=_ts(T0 - timedelta(minutes=8))),
    ]
    for i in range(100):
        objs.append(_obj("GPUNode", f"n{i}", {"rackRef": "r1", "basePowerWatts": 0, "gpu": {
            "model": "H100-SXM", "count": 1, "memoryBytes": 80 * 10**9, "minPowerWatts": 100,
            "maxPowerWatts": 1000, "requestedPowerWatts": 850}}))
    return objs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("docs/images/ramp.png"),
                        help="the PNG to write (default docs/images/ramp.png)")
    out: Path = parser.parse_args().out
    objs = site()
    seconds = list(range(0, 6 * 60))
    envelope, allocated, measured = [], [], []
    limits: list[float] = []
    for s in seconds:
        now = T0 + timedelta(seconds=s)
        plan = plan_namespace(objs, now, CoreSettings())
        power = plan.statuses["StargateCluster", "fig", "site"]["power"]
        envelope.append(min(power.get("rampWatts", power["budgetWatts"]), power["budgetWatts"]) / 1e3)
        allocated.append(power["allocatedWatts"] / 1e3)
        limits.append(power["allocatedWatts"])
        want = 100_000 * (0.75 + 0.08 * math.sin(s / 9.0))  # the workload's own swing
        enforced = limits[max(s - LAG_S, 0)]
        measured.append(min(want, enforced) / 1e3)
        status = plan.statuses["GridEvent", "fig", "peak"]
        objs[2]["status"] = status
    minutes = [s / 60 for s in seconds]
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    ax.plot(minutes, envelope, label="envelope (capacity the ramp allows)", color="#888", linestyle="--")
    ax.plot(minutes, allocated, label="allocation (limits written)", color="#1f77b4")
    ax.plot(minutes, measured, label="measured (after the agents' 3 s lag)", color="#d62728", alpha=0.8)
    start_m = (START - T0).total_seconds() / 60
    end_m = (END - T0).total_seconds() / 60
    ax.axvspan(start_m, end_m, color="#f2c14e", alpha=0.2, label="event active (target 60 kW)")
    ax.axhline(60, color="#f2c14e", linewidth=1)
    ax.set_xlabel("minutes from 12:08:00")
    ax.set_ylabel("kW")
    ax.set_ylim(40, 105)
    ax.set_title("A grid event with ramps: 500 W/s down so 60 kW holds at start, 250 W/s up after end")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
