"""One simulated run: a site of n nodes under one policy, second by second, the operator's own core at
every control step.

Each second every GPU draws what its trace asks for, up to the limit its agent enforces; each
control step (every `control_interval_s`) the agents report (telemetry: the last second's node
power and the peak over the report window, the control interval) and the operator's core plans the
site, exactly as the operator's engine does: the core's planner (`plan_campus`, what the
engine's power controller runs), with its cache, every status fed back into the objects so that the
capping state travels in status, and the PowerLimitSlices it writes held for the next plan. The
slices a plan writes reach the agents `enforcement_lag_s` later (the enforcement path's reaction:
operator, slice, agent, NVML); from then each agent enforces its entry, following the slice's ramp
second by second as the agents do. Every second the load of each
domain (its racks' nodes, base power included) is checked against its usable power and its breaker
(breaker.py).

What a run reports: the breakers that tripped, the seconds each constraint spent above its usable
power (the site above its budget), and the share of the GPUs' wanted energy that their limits took
away (energy lost to capping). Deterministic: the traces come from the seed, the core is pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from stargate_operator import kinds
from stargate_operator.core import CoreSettings
from stargate_operator.core.domains import ELECTRICAL
from stargate_operator.core.objects import parse_cluster, parse_domain
from stargate_operator.core.power import site_budget
from stargate_operator.core.sliceplan import CampusCache, CampusSettings, plan_campus
from stargate_operator.core.sliceramp import Held, held_entries
from stargate_operator.core.wire import format_time
from stargate_operator.process import gc_paused
from stargate_operator.sim import (
    DEFAULT_CONTROL_INTERVAL_S,
    DEFAULT_DURATION_S,
    DEFAULT_ENFORCEMENT_LAG_S,
    DEFAULT_MAX_CAPPED_PERCENT,
    DEFAULT_START_HOUR,
)
from stargate_operator.sim.breaker import Breakers, TripCurve
from stargate_operator.sim.site import NAMESPACE, Oversubscribe, Template, build
from stargate_operator.sim.steps import GridEventRun, StepMeter, feed_rows
from stargate_operator.sim.traces import TraceBank

DAY = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SimSettings:
    duration_s: int = DEFAULT_DURATION_S
    control_interval_s: int = DEFAULT_CONTROL_INTERVAL_S
    enforcement_lag_s: float = DEFAULT_ENFORCEMENT_LAG_S
    start_hour: float = DEFAULT_START_HOUR
    over: Oversubscribe = field(default_factory=Oversubscribe)
    curve: TripCurve = field(default_factory=TripCurve)
    max_capped_percent: float = DEFAULT_MAX_CAPPED_PERCENT  # a run that loses more is not hosting its nodes
    stop_early: bool = True  # stop at the first trip or once the capped share is past the bound
    event: GridEventRun | None = None  # a grid event on the site during the run (steps.py)
    follow_timers: bool = False  # plan also when the plan's next change comes (the engine's timers)

    @property
    def start(self) -> datetime:
        return DAY + timedelta(hours=self.start_hour)


@dataclass(slots=True)
class Series:
    """Per second, for the report: each constraint's load, and its usable power and rating."""

    names: list[str]
    usable_w: list[int]
    rating_w: list[int]  # 0 for the site and cooling domains (no breaker)
    load_w: npt.NDArray[np.float32]  # constraints x seconds
    capped_w: npt.NDArray[np.float32]  # seconds: GPU power its limits took away


@dataclass(slots=True)
class RunResult:
    nodes: int
    policy: str
    seconds: int  # simulated (fewer than the duration when stopped early)
    trips: list[tuple[str, int]]  # (domain, second)
    seconds_over_usable: dict[str, int]
    energy_capped_percent: float  # rounded to 3 decimals, for people
    plans: int  # calls of the core
    series: Series | None = None
    capped_share: float = 0.0  # the exact share of wanted GPU energy lost to capping, 0 to 1
    stopped_early: bool = False
    steps: dict[str, dict[str, dict[str, int]]] | None = None  # with settings.event: steps.py

    def hosts(self, max_capped_percent: float) -> bool:
        """No trip, the whole run simulated, at most the bound lost (exactly: never by rounding)."""
        return not self.trips and not self.stopped_early and self.capped_share * 100 <= max_capped_percent


Planner = Callable[..., Any]


def simulate(template: Template, nodes: int, policy: str, settings: SimSettings, bank: TraceBank,
             keep_series: bool = False, tick: Callable[[int], None] | None = None) -> RunResult:
    """One run (module docstring). `tick(seconds)` is called as simulated time advances."""
    objects = build(template, nodes, policy, settings.over)
    if settings.event is not None:
        objects = settings.event.apply(objects, settings.start)
    places: list[tuple[int, int]] = []
    node_objs: list[dict[str, Any]] = []
    for o in objects:
        if o["kind"] == "GPUNode":
            places.append(o.pop("sim"))
            node_objs.append(o)
    duration = settings.duration_s
    count = np.array([o["spec"]["gpu"]["count"] for o in node_objs], dtype=np.float64)
    tdp = np.array([o["spec"]["gpu"]["maxPowerWatts"] for o in node_objs], dtype=np.float64)
    base = np.array([o["spec"].get("basePowerWatts", 0) for o in node_objs], dtype=np.float64)
    wanted = bank.traces(places).astype(np.float64) * tdp[:, None]  # W per GPU, nodes x seconds
    total_wanted = float((wanted * count[:, None]).sum())

    names, usable, rating, member_rows = _constraints(objects, node_objs)
    matrix = np.zeros((len(names), len(node_objs)))
    for c, rows in enumerate(member_rows):
        matrix[c, rows] = 1.0
    breakers_at = [c for c, r in enumerate(rating) if r > 0]
    breakers = Breakers(np.array([rating[c] for c in breakers_at], dtype=np.float64), settings.curve)
    usable_arr = np.array(usable, dtype=np.float64)

    # The engine's power controller's planner, settings and cache: the core.
    core_settings = CampusSettings(core=CoreSettings(stale_after_seconds=kinds.DEFAULT_STALE_AFTER_SECONDS))
    cache = CampusCache()
    slices: dict[str, dict[str, Any]] = {}  # the PowerLimitSlices written so far, by name
    keys = [(o["kind"], NAMESPACE, o["metadata"]["name"]) for o in objects]
    node_index = {o["metadata"]["name"]: i for i, o in enumerate(node_objs)}
    lag = max(math.ceil(settings.enforcement_lag_s), 0)
    interval = max(settings.control_interval_s, 1)

    power = np.zeros(len(node_objs))
    window_peak = np.zeros(len(node_objs))
    pending: list[tuple[int, _Enforced]] = []
    plans = 0
    trips: list[tuple[str, int]] = []
    over_s = np.zeros(len(names), dtype=np.int64)
    capped = 0.0
    loads = np.zeros((len(names), duration), dtype=np.float32) if keep_series else None
    capped_series = np.zeros(duration, dtype=np.float32) if keep_series else None

    next_change: float | None = None
    meter = StepMeter(matrix, count, feed_rows(objects, names)) if settings.event is not None else None

    def plan(t: int) -> _Enforced:
        nonlocal plans, next_change
        at = settings.start + timedelta(seconds=t)
        stamp = format_time(at)
        for i, o in enumerate(node_objs):
            watts = int(power[i] + 0.5)
            status = o.get("status") or {}
            o["status"] = {**status, "telemetry": {
                "powerWatts": watts, "peakPowerWatts": max(int(window_peak[i] + 0.5), watts),
                "healthyGPUs": int(count[i]), "observedAt": stamp}}
        with gc_paused():
            result = plan_campus([*objects, *slices.values()], at, core_settings, cache)
        plans += 1
        when = result.next_change_at
        next_change = None if when is None else (when - settings.start).total_seconds()
        for o, key in zip(objects, keys, strict=True):
            status = result.statuses.get(key)
            if status is not None:
                telemetry = (o.get("status") or {}).get("telemetry")
                o["status"] = {**status, "telemetry": telemetry} if telemetry is not None else dict(status)
        for body in result.applies:
            if body["kind"] == kinds.POWER_LIMIT_SLICE.kind:
                spec = {k: v for k, v in body["spec"].items() if v is not None}
                slices[body["metadata"]["name"]] = {**body, "spec": spec}
        entries: dict[str, Held] = {}
        for sl in slices.values():
            entries.update(held_entries(sl["spec"]))
        return _Enforced(entries, node_index)

    # Before the first second: the site was running, its agents report what the GPUs want (up to
    # their TDP) and the first plan's limits are in force.
    power = base + count * wanted[:, 0]
    window_peak = power.copy()
    enforced = plan(0)
    seconds = 0
    for t in range(duration):
        due = settings.follow_timers and next_change is not None and t >= next_change
        if t > 0 and (t % interval == 0 or due):
            pending.append((t + lag, plan(t)))
            window_peak = np.zeros(len(node_objs))
        while pending and pending[0][0] <= t:
            enforced = pending.pop(0)[1]
        limits_now = enforced.at((settings.start + timedelta(seconds=t)).timestamp())
        gpu = np.minimum(wanted[:, t], limits_now)
        lost = float(((wanted[:, t] - gpu) * count).sum())
        capped += lost
        power = base + count * gpu
        if meter is not None:
            meter.see(wanted[:, t], limits_now)
        np.maximum(window_peak, power, out=window_peak)
        load = matrix @ power
        over_s += load > usable_arr
        tripped = breakers.step(load[breakers_at])
        for j in np.flatnonzero(tripped):
            trips.append((names[breakers_at[j]], t))
        if loads is not None and capped_series is not None:
            loads[:, t] = load
            capped_series[t] = lost
        seconds = t + 1
        if tick is not None:
            tick(1)
        if settings.stop_early and (trips or capped > settings.max_capped_percent / 100 * total_wanted):
            break
    share = 100.0 * capped / total_wanted if total_wanted > 0 else 0.0
    series = None
    if loads is not None and capped_series is not None:
        series = Series(names, usable, rating, loads[:, :seconds], capped_series[:seconds])
    return RunResult(
        nodes=nodes, policy=policy, seconds=seconds, trips=trips,
        seconds_over_usable={n: int(s) for n, s in zip(names, over_s, strict=True) if s > 0},
        energy_capped_percent=round(share, 3), plans=plans, series=series,
        capped_share=share / 100, stopped_early=seconds < duration,
        steps=None if meter is None else meter.report(names))


class _Enforced:
    """What the agents enforce from the slices they were given: each node's entry, on a ramp
    interpolated at each second (agents round down, as here)."""

    def __init__(self, entries: dict[str, Held], rows: dict[str, int]) -> None:
        self.rows = [(i, entries[name]) for name, i in rows.items()]
        self.fixed = np.empty(len(rows))
        for i, e in self.rows:
            self.fixed[i] = e.limit
        self.moving_until = max((e.end_at for _, e in self.rows if e.start_from is not None),
                                default=-math.inf)

    def at(self, epoch: float) -> npt.NDArray[np.float64]:
        if epoch >= self.moving_until:
            return self.fixed
        out = np.empty(len(self.rows))
        for i, e in self.rows:
            out[i] = e.at(epoch)
        return out


def _constraints(objects: list[dict[str, Any]], nodes: list[dict[str, Any]]
                 ) -> tuple[list[str], list[int], list[int], list[list[int]]]:
    """Every constraint (the site first, then each PowerDomain), its usable power, its breaker's
    rating (0: no breaker: the site's budget, a cooling domain) and the node rows beneath it."""
    cluster = parse_cluster(next(o for o in objects if o["kind"] == "StargateCluster"))
    domains = {o["metadata"]["name"]: o for o in objects if o["kind"] == "PowerDomain"}
    racks = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Rack"}
    names = [cluster.name]
    usable = [site_budget(cluster.it_capacity_w, cluster.reserve_percent, 0)]  # no curtailment
    rating = [0]
    rows: list[list[int]] = [list(range(len(nodes)))]
    index: dict[str, int] = {}
    for name, obj in domains.items():
        d = parse_domain(obj)  # the core's reading: rating, derating and type as the plan sees them
        index[name] = len(names)
        names.append(name)
        usable.append(d.usable_w)
        rating.append(d.rating_w if d.type == ELECTRICAL else 0)
        rows.append([])
    for i, n in enumerate(nodes):
        rack = racks[n["spec"]["rackRef"]]["spec"]
        seen: set[str] = set()
        for ref in (rack.get("powerDomainRef"), rack.get("coolingDomainRef")):
            while ref in domains and ref not in seen:
                seen.add(ref)
                rows[index[ref]].append(i)
                ref = domains[ref]["spec"].get("parentRef")
    return names, usable, rating, rows
