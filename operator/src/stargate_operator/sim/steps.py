"""The steps of power a feed sees, split into the workload's part and the operator's part.

Workloads swing (training between 40 and 100 % of TDP); those steps are not the operator's. The
operator's own steps are the changes of the limits it commands: a curtailment applied to every GPU
within seconds is a step the grid sees, the kind ramps exist to smooth. Each second the change of a
feed's power splits exactly in two:

    workload part = sum of count x (min(wanted now, limit before) - min(wanted before, limit before))
    operator part = sum of count x (min(wanted now, limit now) - min(wanted now, limit before))

over the nodes beneath the feed, for the change over 1 s and over 5 s. `simulate --steps` runs the
site through a grid event (on the site, a share of its baseline, known an hour ahead) once without
ramps and once with the rates given, and reports the largest step of each part per feed.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from stargate_operator.core.wire import format_time
from stargate_operator.kinds import API_VERSION, GRID_EVENT

WINDOWS = (1, 5)  # seconds
PARTS = ("workload", "operator")
Watts = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class GridEventRun:
    """A GridEvent on the site during the run, and the site's ramp rates (None: none)."""

    percent: int
    start_s: int
    duration_s: int
    ramp_down: int | None = None
    ramp_up: int | None = None

    def apply(self, objects: list[dict[str, Any]], t0: datetime) -> list[dict[str, Any]]:
        out = []
        site = ""
        for o in objects:
            if o["kind"] == "StargateCluster":
                o = copy.deepcopy(o)
                site = o["metadata"]["name"]
                power = o["spec"]["power"]
                for key, rate in (("rampDownWattsPerSecond", self.ramp_down),
                                  ("rampUpWattsPerSecond", self.ramp_up)):
                    if rate is not None:
                        power[key] = rate
            out.append(o)
        start = t0 + timedelta(seconds=self.start_s)
        out.append({
            "apiVersion": API_VERSION, "kind": GRID_EVENT.kind,
            "metadata": {"name": "sim-event", "namespace": out[0]["metadata"].get("namespace", "sim"),
                         "uid": "uid-sim-event", "creationTimestamp": format_time(t0 - timedelta(hours=1))},
            "spec": {"clusterRef": site, "start": format_time(start),
                     "end": format_time(start + timedelta(seconds=self.duration_s)),
                     "reducePercent": self.percent, "basis": "Baseline", "reason": "simulated"},
        })
        return out


class StepMeter:
    """The largest 1 s and 5 s steps per constraint, workload and operator parts apart."""

    def __init__(self, matrix: Watts, count: Watts, rows: list[int]):
        self.matrix = matrix[rows]
        self.rows = rows
        self.count = count
        self.history: deque[tuple[Watts, Watts]] = deque(maxlen=max(WINDOWS))
        self.largest = {w: {part: np.zeros(len(rows)) for part in PARTS} for w in WINDOWS}

    def see(self, wanted: Watts, limit: Watts) -> None:
        now = np.minimum(wanted, limit)
        for w in WINDOWS:
            if len(self.history) >= w:
                w_before, l_before = self.history[-w]
                workload = self.count * (np.minimum(wanted, l_before) - np.minimum(w_before, l_before))
                operator = self.count * (now - np.minimum(wanted, l_before))
                for part, per_node in (("workload", workload), ("operator", operator)):
                    step = np.abs(self.matrix @ per_node)
                    np.maximum(self.largest[w][part], step, out=self.largest[w][part])
        self.history.append((wanted.copy(), limit.copy()))

    def report(self, names: list[str]) -> dict[str, dict[str, dict[str, int]]]:
        """{constraint: {"1s": {"workload": W, "operator": W}, "5s": {...}}}."""
        return {names[c]: {f"{w}s": {part: int(self.largest[w][part][i] + 0.5) for part in PARTS}
                           for w in WINDOWS}
                for i, c in enumerate(self.rows)}


def feed_rows(objects: list[dict[str, Any]], names: list[str]) -> list[int]:
    """The site (row 0) and its feeds: the Electrical PowerDomains with no parent."""
    feeds = {o["metadata"]["name"] for o in objects if o["kind"] == "PowerDomain"
             and not o["spec"].get("parentRef") and o["spec"].get("type", "Electrical") == "Electrical"}
    return [0, *(i for i, n in enumerate(names) if i > 0 and n in feeds)]
