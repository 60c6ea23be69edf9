"""The agent's side of the PowerLimitSlices: its entry (with the slice's ramp, interpolated), its
safe limit, and the order slice, then an older operator's rack map, then its GPUNode."""

from __future__ import annotations

import asyncio
from typing import Any

from stargate_operator.agent.runner import FROM_GPUNODE, FROM_RACK, FROM_SLICE, Fleet, simulated_factory
from stargate_operator.agent.simulate import SimulatedBackend
from stargate_operator.agent.slices import SliceEntry, slice_entries
from stargate_operator.client import KubeClient

SPEC: dict[str, Any] = {"rackRef": "r1", "basePowerWatts": 2000,
                        "gpu": {"model": "H100", "count": 8, "memoryBytes": 80 * 2**30,
                                "minPowerWatts": 200, "maxPowerWatts": 700}}


def _obj(limit: int) -> dict[str, Any]:
    return {"apiVersion": "stargate.dev/v1alpha1", "kind": "GPUNode",
            "metadata": {"name": "n1", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": SPEC, "status": {"powerLimitWatts": limit}}


class SimClient:
    """What the agents of a fleet write: their telemetry (kept), Events (none here)."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, Any]] = []

    async def patch_status(self, resource: Any, namespace: str, name: str, patch: Any) -> Any:
        self.patches.append((name, patch))
        return {}

    async def create_event(self, **kw: Any) -> Any:
        return {}

    async def list(self, *a: Any, **kw: Any) -> Any:
        return [], "1"


def _fleet_of_two() -> Fleet:
    """A simulated fleet of n1 and n2 at 400 W from their GPUNodes, no rack listing them."""
    fleet = Fleet(KubeClient.__new__(KubeClient), "ns", simulated_factory(seed=1), interval=60)
    fleet.client = SimClient()  # type: ignore[assignment]
    fleet._replace_racks([])
    for name in ("n1", "n2"):
        fleet.upsert({**_obj(400), "metadata": {"name": name, "namespace": "ns", "generation": 1}})
    return fleet


def test_a_ramp_is_interpolated_linearly_and_rounded_down() -> None:
    entries = slice_entries({"spec": {
        "limits": {"a": 400, "b": 600, "c": 500},
        "safeLimits": {"b": 450},
        "ramp": {"from": {"a": 700, "b": 300}, "startAt": "2027-01-01T00:00:00Z",
                 "endAt": "2027-01-01T00:01:00Z"},
        "revision": 3}})
    a, b, c = entries["a"], entries["b"], entries["c"]
    t0 = a.start_at
    assert (a.at(t0 - 5), a.at(t0), a.at(t0 + 30), a.at(t0 + 59.9), a.at(t0 + 60), a.at(t0 + 600)) == \
        (700, 700, 550, 400, 400, 400)
    assert (b.at(t0 + 20), b.at(t0 + 60)) == (400, 600)
    assert b.at(t0 + 1) == 305  # 300 + 300 * 1/60
    assert a.ramping(t0 + 10) and not a.ramping(t0 + 60) and not c.ramping(t0 + 10)
    assert c.at(t0) == 500  # not in from: its limit holds throughout
    assert (a.safe_limit(), b.safe_limit()) == (400, 450)


def test_a_malformed_slice_gives_what_can_be_read() -> None:
    entries = slice_entries({"spec": {"limits": {"a": 400, "b": "x", "c": -1},
                                      "ramp": {"from": {"a": 700}, "startAt": "soon", "endAt": "later"}}})
    assert entries == {"a": SliceEntry(400, None)}
    assert slice_entries({}) == {} and slice_entries({"spec": {"limits": []}}) == {}


async def test_the_slice_wins_over_the_rack_and_the_gpunode() -> None:
    fleet = _fleet_of_two()
    try:
        n1, n2 = fleet.agents["n1"], fleet.agents["n2"]
        await asyncio.sleep(0.05)
        assert n1.assigned_limit() == (400, FROM_GPUNODE)
        fleet._on_rack_event("MODIFIED", {"metadata": {"name": "r1"},
                                          "status": {"powerLimits": {"n1": 350, "n2": 350}}})
        assert n1.assigned_limit() == (350, FROM_RACK)
        s0: dict[str, Any] = {"metadata": {"name": "limits-0"},
                              "spec": {"limits": {"n1": 300}, "safeLimits": {"n1": 250}, "revision": 1}}
        fleet._on_slice_event("ADDED", s0)
        assert n1.assigned_limit() == (300, FROM_SLICE) and n2.assigned_limit() == (350, FROM_RACK)
        await asyncio.sleep(0.05)
        assert isinstance(n1.backend, SimulatedBackend) and n1.backend.limit_watts == 300
        # the fail-safe reads the slice's safe limits; a node absent there is safe at its limit
        assert n1.safe_limit() == 250
        # the node moves to another slice: the one that lists it last wins, the old one's removal
        # of it changes nothing
        fleet._on_slice_event("ADDED", {"metadata": {"name": "limits-1"},
                                        "spec": {"limits": {"n1": 280, "n2": 320}, "revision": 1}})
        fleet._on_slice_event("MODIFIED", {"metadata": {"name": "limits-0"},
                                           "spec": {"limits": {}, "revision": 2}})
        assert n1.assigned_limit() == (280, FROM_SLICE) and n2.assigned_limit() == (320, FROM_SLICE)
        assert n1.safe_limit() == 280
        fleet._on_slice_event("DELETED", {"metadata": {"name": "limits-1"}, "spec": {}})
        assert n1.assigned_limit() == (350, FROM_RACK)  # back to the older operator's map
        await asyncio.sleep(0.05)
        assert fleet.stats.limit_changes[FROM_SLICE] >= 1
    finally:
        await fleet.stop()



class _Blocking(SimulatedBackend):
    blocking = True  # as NVML's: set from a worker thread


async def test_a_slice_event_sets_the_limits_of_a_backend_that_does_not_block_at_once() -> None:
    """A slice's event sets every listed agent's limit before the handler returns (no task per
    agent, no step of the loop between them); a backend that blocks is set by a task, off the
    loop, and its limit is in force once that task has run."""
    fleet = _fleet_of_two()
    try:
        await asyncio.sleep(0.05)
        n1, n2 = fleet.agents["n1"], fleet.agents["n2"]
        n2.backend = _Blocking("n2", SPEC, seed=1)
        n2.backend.apply_power_limit(400)
        changes = fleet.stats.limit_changes[FROM_SLICE]
        fleet._on_slice_event("ADDED", {"metadata": {"name": "limits-0"},
                                        "spec": {"limits": {"n1": 300, "n2": 300}, "revision": 1}})
        assert isinstance(n1.backend, SimulatedBackend) and n1.backend.limit_watts == 300
        assert fleet.stats.limit_changes[FROM_SLICE] == changes + 1  # n1's, in the handler
        assert n2.backend.limit_watts == 400  # not yet: its task has not run
        await asyncio.sleep(0.05)
        assert n2.backend.limit_watts == 300
    finally:
        await fleet.stop()


async def test_a_relist_of_the_same_slices_never_sets_another_limit_in_between() -> None:
    """After a watch restarts, the list holds the same slices: no agent passes through its
    GPUNode's limit (400, a raise over the slice's 300) on the way back to its entry."""
    fleet = _fleet_of_two()
    try:
        await asyncio.sleep(0.05)
        s0 = {"metadata": {"name": "limits-0"}, "spec": {"limits": {"n1": 300, "n2": 300}, "revision": 1}}
        fleet._on_slice_event("ADDED", s0)
        changes = fleet.stats.limit_changes.copy()
        fleet._sync_slices([s0])
        assert fleet.stats.limit_changes == changes
        fleet._sync_slices([])  # the slice gone: back to the GPUNode's limit
        assert fleet.agents["n1"].assigned_limit() == (400, FROM_GPUNODE)
    finally:
        await fleet.stop()
