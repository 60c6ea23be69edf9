"""The engine without a server: an in-memory API (lists, watches that echo every write, status
patches, applies, creates, deletes; failures on demand) and clocks the test moves by hand.

The test drives the scheduler one step at a time (`Engine.run_due`) after moving the injected
monotonic and wall clocks, so coalescing, max_delay, retries and timers are checked without a
single real wait. Watch events go through the engine's real informers (client/informer.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from helpers.engine import SETTINGS, Clocks, FakeApi, plurals, started
from stargate_operator import kinds
from stargate_operator.client import ApiError, ApiResource
from stargate_operator.controller.engine import Engine, EngineSettings, _holds, connections_needed
from stargate_operator.controller.slot import Controller, power_controller
from stargate_operator.core.sliceplan import (
    CampusCache,
    CampusSettings,
    StagedCampus,
    plan_campus,
    stage_campus,
)
from stargate_operator.core.statusdiff import merge_patch
from stargate_operator.core.types import ObjectRef, Plan
from stargate_operator.fixtures.synth import SYNTH_NOW, synthetic_site

CONFIGMAPS = ApiResource("", "v1", "configmaps", "ConfigMap")
NODES = ApiResource("", "v1", "nodes", "Node", namespaced=False)
RACKS = ApiResource.of(kinds.RACK)






def rack_obj(name: str, ns: str = "site-a", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": kinds.API_VERSION, "kind": "Rack",
            "metadata": {"name": name, "namespace": ns, "generation": 1},
            "spec": {"clusterRef": "site", "maxPowerWatts": 1000, "priority": 500, **spec}}


class CountingPlanner:
    """A planner that wants status.seen = spec.priority on every Rack, and counts its calls."""

    def __init__(self, next_change_in: float | None = None) -> None:
        self.calls = 0
        self.next_change_in = next_change_in

    def __call__(self, objects: list[dict[str, Any]], now: datetime, settings: None, cache: None) -> Plan:
        self.calls += 1
        statuses = {("Rack", o["metadata"]["namespace"], o["metadata"]["name"]):
                    {"seen": o["spec"]["priority"]} for o in objects if o["kind"] == "Rack"}
        nxt = now + timedelta(seconds=self.next_change_in) if self.next_change_in is not None else None
        return Plan(statuses=statuses, next_change_at=nxt)


def rack_controller(planner: Callable[..., Plan], **kw: Any) -> Controller[None, None]:
    return Controller(name="racks", resources=(RACKS,), planner=planner, settings=None,
                      new_cache=lambda: None, **kw)






@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
async def engines() -> AsyncIterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for e in made:
        await e.stop()




# -- the real core through the engine -----------------------------------------------------------

async def test_cold_start_writes_what_the_core_decides_once_and_its_echoes_cause_nothing(
        clocks: Clocks, engines: list[Engine]) -> None:
    site = synthetic_site(40, 3, "site-a", now=SYNTH_NOW)
    api = FakeApi(site, plurals(*(ApiResource.of(k) for k in kinds.KINDS)))
    engine = await started(api, clocks, [power_controller()])
    engines.append(engine)
    await engine.run_due()
    plan = plan_campus(list(api.objects.values()), clocks.wall(), CampusSettings())
    # Every status the core wants is now on the server, and nothing else was written.
    for key, want in plan.statuses.items():
        assert merge_patch(api.objects[key].get("status"), want) == {}, key
    before = {(o["kind"], "site-a", o["metadata"]["name"]): o.get("status") for o in site}
    changed = {k for k, want in plan.statuses.items() if merge_patch(before.get(k), want)}
    assert len(api.writes("patch_status")) == len(changed) > 0
    # the slices that carry the limits, each created by one apply (its status patched after it)
    slices = {k for k in api.objects if k[0] == kinds.POWER_LIMIT_SLICE.kind}
    assert slices and len(api.writes("apply")) == len(slices)
    assert engine.stats.reconciles == 1
    # The watch echoes of those writes: skipped (bookmarks); the next recomputation is due only
    # when the core said time alone changes the result (telemetry going stale).
    await api.settle()
    assert plan.next_change_at is not None
    timer = (plan.next_change_at - clocks.wall()).total_seconds() + 0.05
    assert engine.next_due() == pytest.approx(clocks.t + timer)
    clocks.advance(timer - 0.1)
    await engine.run_due()
    assert engine.stats.reconciles == 1 and len(api.writes()) == len(changed) + len(slices)
    assert engine.counts(), "the core's counts are kept for metrics"


async def test_the_slices_go_out_before_the_statuses_are_built(clocks: Clocks, engines: list[Engine]) -> None:
    """The power controller's planner in two steps: every slice's apply is answered before the
    second step (the statuses, the larger part of a recomputation) starts."""
    site = synthetic_site(40, 3, "site-a", now=SYNTH_NOW)
    api = FakeApi(site, plurals(*(ApiResource.of(k) for k in kinds.KINDS)))
    seen: list[tuple[int, int]] = []  # (applies, status patches) written when finish() starts

    class Recorded:
        def __init__(self, staged: StagedCampus) -> None:
            self.applies, self.staged = staged.applies, staged

        def finish(self) -> Plan:
            seen.append((len(api.writes("apply")), len(api.writes("patch_status"))))
            return self.staged.finish()

    def stager(objects: list[dict[str, Any]], now: datetime, settings: CampusSettings,
               cache: CampusCache) -> Recorded:
        return Recorded(stage_campus(objects, now, settings, cache))

    engine = await started(api, clocks, [replace(power_controller(), stager=stager)])
    engines.append(engine)
    await engine.run_due()
    slices = {k for k in api.objects if k[0] == kinds.POWER_LIMIT_SLICE.kind}
    assert slices and seen == [(len(slices), 0)]
    assert api.writes("patch_status"), "the statuses follow"


# -- coalescing ----------------------------------------------------------------------------------

async def test_a_burst_of_events_costs_one_recomputation(clocks: Clocks, engines: list[Engine]) -> None:
    api = FakeApi([rack_obj(f"r{i}") for i in range(20)], plurals(RACKS))
    planner = CountingPlanner()
    engine = await started(api, clocks, [rack_controller(planner)])
    engines.append(engine)
    await engine.run_due()
    assert planner.calls == 1
    await api.settle()
    for i in range(20):  # 20 changes, 10 ms apart
        api.change("Rack", "site-a", f"r{i}", {"priority": 600})
        await api.settle()
        clocks.advance(0.01)
        await engine.run_due()
    assert planner.calls == 1  # still inside the quiet time after the last change
    clocks.advance(0.1)
    await engine.run_due()
    assert planner.calls == 2
    assert all(o["status"]["seen"] == 600 for o in api.objects.values())
    await api.settle()
    assert engine.next_due() is None


async def _stream(clocks: Clocks, engines: list[Engine],
                  spec_at_step: int | None = None) -> tuple[float, float | None, float | None]:
    """A report to rack r0 every 62.5 ms (exact in binary), never quiet for 100 ms, and at step
    `spec_at_step` a spec change to rack r1: (first change, spec change, second recomputation)."""
    api = FakeApi([rack_obj("r0"), rack_obj("r1")], plurals(RACKS))
    planner = CountingPlanner()
    engine = await started(api, clocks, [rack_controller(planner)])
    engines.append(engine)
    await engine.run_due()
    await api.settle()
    first_change = clocks.t
    spec_at = None
    for step in range(40):
        api.change("Rack", "site-a", "r0", {"priority": 501 + step})
        if step == spec_at_step:
            api.change("Rack", "site-a", "r1", {"priority": 700}, generation=True)
            spec_at = clocks.t
        await api.settle()
        await engine.run_due()
        if planner.calls == 2:
            return first_change, spec_at, clocks.t
        clocks.advance(0.0625)
    return first_change, spec_at, None


async def test_a_steady_stream_still_recomputes_within_max_delay(
        clocks: Clocks, engines: list[Engine]) -> None:
    first_change, _, recomputed_at = await _stream(clocks, engines)
    assert recomputed_at is not None, "a busy namespace must still be recomputed"
    assert recomputed_at - first_change == pytest.approx(SETTINGS.max_delay)


async def test_a_spec_change_is_due_a_quiet_time_after_itself_amid_a_stream_of_reports(
        clocks: Clocks, engines: list[Engine]) -> None:
    """Agents' reports keep a unit dirty, so it waits out max_delay; a spec change in that stream
    (a curtailment) is due the quiet time after itself instead."""
    first_change, spec_at, recomputed_at = await _stream(clocks, engines, spec_at_step=4)
    assert spec_at is not None and recomputed_at is not None
    assert recomputed_at - spec_at <= SETTINGS.coalesce_delay + 0.0625
    assert recomputed_at - first_change < SETTINGS.max_delay


class ChangingApi(FakeApi):
    """Each status write yields to the event loop; the `at`-th one changes rack r0 (its spec, with a
    new generation, or with `spec=False` its status alone, as an agent's report does) and moves the
    clocks past the quiet time (a change that comes while a recomputation writes)."""

    def __init__(self, clocks: Clocks, at: int, *a: Any, spec: bool = True) -> None:
        super().__init__(*a)
        self.clocks = clocks
        self.at = at
        self.spec = spec
        self.status_writes = 0

    async def patch_status(self, resource: ApiResource, namespace: str | None, name: str,
                           patch: Mapping[str, Any], *, resource_version: str | None = None) -> Any:
        self.status_writes += 1
        if self.status_writes == self.at:
            key = ("Rack", "site-a", "r0")
            o = self.objects[key]
            meta = {**o["metadata"], "resourceVersion": str(next(self._rv))}
            if self.spec:
                o = {**o, "spec": {**o["spec"], "priority": 900},
                     "metadata": {**meta, "generation": meta["generation"] + 1}}
            else:  # the same spec, and a report in its status
                o = {**o, "metadata": meta, "status": {**o.get("status", {}), "report": 1}}
            self.objects[key] = o
            self._emit("MODIFIED", o)
            await self.settle()  # the informer has it: the unit is dirty
            self.clocks.advance(0.2)
        for _ in range(3):
            await asyncio.sleep(0)
        return await super().patch_status(resource, namespace, name, patch, resource_version=resource_version)


async def test_a_newer_change_supersedes_what_is_left_of_a_recomputations_status_writes(
        clocks: Clocks, engines: list[Engine]) -> None:
    """A change that is due while a recomputation still writes statuses stops those writes (a
    curtailment must not queue behind them); the next recomputation writes what is still wrong,
    from the new objects, and nothing is lost."""
    api = ChangingApi(clocks, 10, [rack_obj(f"r{i}") for i in range(100)], plurals(RACKS))
    planner = CountingPlanner()
    engine = await started(api, clocks, [rack_controller(planner)])
    engines.append(engine)
    await engine.run_due()
    assert planner.calls == 1
    first = api.status_writes
    # Stopped soon after the change: at most the writes in flight then, one per writer.
    assert 10 <= first <= 10 + SETTINGS.write_concurrency < 100
    assert engine.stats.superseded == 1
    await api.settle()
    await engine.run_due()  # due already: planned again at once, from the changed rack
    assert planner.calls == 2
    assert api.status_writes == 100 + 1  # the rest, and r0 again (written before its change)
    assert all(o["status"]["seen"] == o["spec"]["priority"] for o in api.objects.values())
    assert api.objects["Rack", "site-a", "r0"]["status"]["seen"] == 900


async def test_a_status_change_does_not_supersede_a_recomputations_writes(
        clocks: Clocks, engines: list[Engine]) -> None:
    """Agents' reports (and the echoes of our own writes) change statuses all the time: they wait
    for the recomputation's writes, or no status write would ever finish under a busy fleet."""
    api = ChangingApi(clocks, 10, [rack_obj(f"r{i}") for i in range(100)], plurals(RACKS), spec=False)
    planner = CountingPlanner()
    engine = await started(api, clocks, [rack_controller(planner)])
    engines.append(engine)
    await engine.run_due()
    assert api.status_writes == 100 and engine.stats.superseded == 0
    assert engine.next_due() is not None  # and it is planned again


class BusyApi(FakeApi):
    """Each status write takes `seconds` of the clocks' time (a busy API server)."""

    def __init__(self, clocks: Clocks, seconds: float, *a: Any) -> None:
        super().__init__(*a)
        self.clocks = clocks
        self.seconds = seconds
        self.status_writes = 0

    async def patch_status(self, resource: ApiResource, namespace: str | None, name: str,
                           patch: Mapping[str, Any], *, resource_version: str | None = None) -> Any:
        self.status_writes += 1
        self.clocks.advance(self.seconds)
        for _ in range(3):
            await asyncio.sleep(0)
        return await super().patch_status(resource, namespace, name, patch, resource_version=resource_version)


async def test_the_plans_own_change_by_time_supersedes_its_status_writes(
        clocks: Clocks, engines: list[Engine]) -> None:
    """A plan that changes by time alone (a ramp's next piece) is planned again when that time
    comes, even while its own status writes are still going: a ramp's next slices never wait
    behind a fleet's statuses."""
    api = BusyApi(clocks, 0.1, [rack_obj(f"r{i}") for i in range(100)], plurals(RACKS))
    planner = CountingPlanner(next_change_in=2.0)
    engine = await started(api, clocks, [rack_controller(planner)])
    engines.append(engine)
    await engine.run_due()
    # 2 s of writes at 0.1 s each: stopped at the change, not after all 100 (10 s).
    assert 20 <= api.status_writes <= 20 + SETTINGS.write_concurrency < 100
    assert engine.stats.superseded == 1
    due = engine.next_due()
    assert due is not None and due <= clocks.t + 0.1  # planned again at once
    clocks.advance(0.1)
    await engine.run_due()
    assert planner.calls == 2


# -- write failures ------------------------------------------------------------------------------

async def test_404_on_a_status_write_drops_the_object_without_retrying(
        clocks: Clocks, engines: list[Engine]) -> None:
    api = FakeApi([rack_obj("gone"), rack_obj("kept")], plurals(RACKS))
    api.fail("patch_status", "gone", 404)
    engine = await started(api, clocks, [rack_controller(CountingPlanner())])
    engines.append(engine)
    await engine.run_due()
    assert engine.store.get(("Rack", "site-a", "gone")) is None
    assert engine.store.get(("Rack", "site-a", "kept")) is not None
    assert engine.stats.write_errors == 0
    await api.settle()
    assert engine.next_due() is None  # not a failure: nothing to retry


async def test_409_on_a_status_write_recomputes_after_the_retry_delay(
        clocks: Clocks, engines: list[Engine]) -> None:
    api = FakeApi([rack_obj("r0")], plurals(RACKS))
    api.fail("patch_status", "r0", 409)
    planner = CountingPlanner()
    engine = await started(api, clocks, [rack_controller(planner)])
    engines.append(engine)
    await engine.run_due()
    assert planner.calls == 1 and "status" not in api.objects[("Rack", "site-a", "r0")]
    assert engine.stats.write_errors == 0  # a conflict is not an error
    assert engine.next_due() == pytest.approx(clocks.t + SETTINGS.retry_delay)
    clocks.advance(SETTINGS.retry_delay - 0.01)
    await engine.run_due()
    assert planner.calls == 1
    clocks.advance(0.02)
    await engine.run_due()
    assert planner.calls == 2
    assert api.objects[("Rack", "site-a", "r0")]["status"] == {"seen": 500}


async def test_a_failed_write_is_retried_and_counted(clocks: Clocks, engines: list[Engine]) -> None:
    api = FakeApi([rack_obj("r0"), rack_obj("r1")], plurals(RACKS))
    api.fail("patch_status", "r1", 500, times=2)
    planner = CountingPlanner()
    engine = await started(api, clocks, [rack_controller(planner)])
    engines.append(engine)
    await engine.run_due()
    assert engine.stats.write_errors == 1 and "refused by the test" in engine.stats.last_error
    assert api.objects[("Rack", "site-a", "r0")]["status"] == {"seen": 500}  # the others still land
    for _ in range(2):
        clocks.advance(SETTINGS.retry_delay)
        await api.settle()
        await engine.run_due()
    assert engine.stats.write_errors == 2
    assert api.objects[("Rack", "site-a", "r1")]["status"] == {"seen": 500}
    # r0 was written once: the retries found nothing to change there.
    assert [c[1] for c in api.writes("patch_status")].count("r0") == 1
    await api.settle()
    assert engine.next_due() is None


# -- the leader-election gate ---------------------------------------------------------------------

async def test_an_inactive_engine_writes_nothing_and_writes_once_activated(
        clocks: Clocks, engines: list[Engine]) -> None:
    api = FakeApi([rack_obj("r0"), rack_obj("r1")], plurals(RACKS))
    planner = CountingPlanner()
    engine = await started(api, clocks, [rack_controller(planner)], active=False)
    engines.append(engine)
    for _ in range(3):
        clocks.advance(1)
        await engine.run_due()
    api.change("Rack", "site-a", "r0", {"priority": 700})
    await api.settle()
    clocks.advance(1)
    await engine.run_due()
    assert planner.calls == 0 and api.writes() == []
    engine.active.set()
    await engine.run_due()
    assert planner.calls == 1
    assert {c[1]: c[2] for c in api.writes("patch_status")} == {"r0": {"seen": 700}, "r1": {"seen": 500}}


async def test_the_gate_closing_during_a_recomputation_stops_its_writes(
        clocks: Clocks, engines: list[Engine]) -> None:
    api = FakeApi([rack_obj("r0")], plurals(RACKS))
    engine: Engine | None = None

    def planner(objects: list[dict[str, Any]], now: datetime, settings: None, cache: None) -> Plan:
        assert engine is not None
        engine.active.clear()  # the standby took over while we computed
        return CountingPlanner()(objects, now, settings, cache)

    engine = await started(api, clocks, [rack_controller(planner)])
    engines.append(engine)
    await engine.run_due()
    assert api.writes() == []


# -- echoes and timers ---------------------------------------------------------------------------

async def test_the_echo_of_our_own_write_is_not_recomputed_but_a_change_is(
        clocks: Clocks, engines: list[Engine]) -> None:
    api = FakeApi([rack_obj("r0")], plurals(RACKS))
    planner = CountingPlanner()
    engine = await started(api, clocks, [rack_controller(planner)])
    engines.append(engine)
    await engine.run_due()
    assert len(api.writes("patch_status")) == 1
    await api.settle()  # the echo arrives
    assert engine.next_due() is None and not engine._own_versions
    api.change("Rack", "site-a", "r0", {"priority": 900})  # someone else's write
    await api.settle()
    assert engine.next_due() == pytest.approx(clocks.t + SETTINGS.coalesce_delay)


async def test_a_timer_recomputes_at_next_change_at(clocks: Clocks, engines: list[Engine]) -> None:
    api = FakeApi([rack_obj("r0")], plurals(RACKS))
    planner = CountingPlanner(next_change_in=30.0)
    engine = await started(api, clocks, [rack_controller(planner)])
    engines.append(engine)
    await engine.run_due()
    await api.settle()
    clocks.advance(29.9)
    await engine.run_due()
    assert planner.calls == 1
    clocks.advance(0.2)
    await engine.run_due()
    assert planner.calls == 2
    # A recomputation set the next timer, from its own plan.
    assert engine.next_due() == pytest.approx(clocks.t + 30.0 + 0.05)


# -- applies, creates, deletes -------------------------------------------------------------------

def configmap(name: str, data: Mapping[str, str], ns: str = "site-a") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
            "data": dict(data)}


async def test_applies_creates_and_deletes_are_written_once_and_skipped_once_in_effect(
        clocks: Clocks, engines: list[Engine]) -> None:
    stale = configmap("stale", {"a": "1"})
    api = FakeApi([rack_obj("r0"), rack_obj("r1"), stale], plurals(RACKS, CONFIGMAPS))
    calls: list[int] = []

    def planner(objects: list[dict[str, Any]], now: datetime, settings: None, cache: None) -> Plan:
        # One ConfigMap per rack, kept by apply; a marker created once; the rest deleted.
        calls.append(len(objects))
        racks = [o["metadata"]["name"] for o in objects if o["kind"] == "Rack"]
        cms = [o for o in objects if o["kind"] == "ConfigMap"]
        wanted = {f"rack-{r}" for r in racks} | {"marker"}
        return Plan(
            applies=[configmap(f"rack-{r}", {"rack": r}) for r in racks],
            creates=[configmap("marker", {"made": "once"})],
            deletes=[ObjectRef("ConfigMap", "site-a", o["metadata"]["name"], o["metadata"]["uid"])
                     for o in cms if o["metadata"]["name"] not in wanted],
        )

    ctl: Controller[None, None] = Controller(
        name="configs", resources=(RACKS, CONFIGMAPS), planner=planner, settings=None,
        new_cache=lambda: None, field_manager="stargate-test")
    engine = await started(api, clocks, [ctl])
    engines.append(engine)
    await engine.run_due()
    assert sorted(c[1] for c in api.writes("apply")) == ["rack-r0", "rack-r1"]
    assert {c[2] for c in api.writes("apply")} == {"stargate-test"}
    assert [c[1] for c in api.writes("create")] == ["marker"]
    assert api.writes("delete") == [("delete", "stale", "uid-stale")]
    assert set(n for (_, _, n) in api.objects) == {"r0", "r1", "rack-r0", "rack-r1", "marker"}
    # Their echoes (ADDED, DELETED) change nothing the engine does not hold: nothing is due.
    await api.settle()
    assert engine.next_due() is None and len(calls) == 1
    # Recomputed (a rack changed): every object is as applied, so nothing is written again.
    api.change("Rack", "site-a", "r0", {"priority": 1})
    await api.settle()
    clocks.advance(1)
    await engine.run_due()
    assert len(calls) == 2 and len(api.writes()) == 4
    # A ConfigMap edited by someone else is applied back.
    cm = api.objects[("ConfigMap", "site-a", "rack-r1")]
    cm["data"] = {"rack": "tampered"}
    cm["metadata"]["resourceVersion"] = "99999"
    api._emit("MODIFIED", cm)
    await api.settle()
    clocks.advance(1)
    await engine.run_due()
    assert api.writes("apply")[-1][1] == "rack-r1" and len(api.writes("apply")) == 3
    assert api.objects[("ConfigMap", "site-a", "rack-r1")]["data"] == {"rack": "r1"}


async def test_a_kind_only_the_controller_writes_is_created_by_apply_then_replaced_onto_its_held_version(
        clocks: Clocks, engines: list[Engine]) -> None:
    """`replace_kinds`: an absent object is created by an apply; a held one is changed by a PUT that
    carries the store's resourceVersion and keeps what others set on its metadata; a write made
    since (409) is retried onto the version the watch brings; one deleted meanwhile (404) is
    created again; an update that RBAC refuses (403) turns the kind's writes back into applies."""
    api = FakeApi([rack_obj("r0"), rack_obj("r1")], plurals(RACKS, CONFIGMAPS))

    def planner(objects: list[dict[str, Any]], now: datetime, settings: None, cache: None) -> Plan:
        racks = [o for o in objects if o["kind"] == "Rack"]
        return Plan(applies=[configmap(f"rack-{o['metadata']['name']}",
                                       {"priority": str(o["spec"]["priority"])}) for o in racks])

    ctl: Controller[None, None] = Controller(
        name="configs", resources=(RACKS, CONFIGMAPS), planner=planner, settings=None,
        new_cache=lambda: None, replace_kinds=("ConfigMap",))
    engine = await started(api, clocks, [ctl])
    engines.append(engine)
    await engine.run_due()
    assert sorted(c[1] for c in api.writes("apply")) == ["rack-r0", "rack-r1"] and not api.writes("replace")
    await api.settle()
    # Someone labels one; the engine sees it (the watch).
    key = ("ConfigMap", "site-a", "rack-r0")
    cm = api.objects[key]
    cm["metadata"] = {**cm["metadata"], "labels": {"team": "ops"}, "resourceVersion": "90001"}
    api._emit("MODIFIED", cm)
    await api.settle()

    async def recompute(priority: int) -> None:
        api.change("Rack", "site-a", "r0", {"priority": priority})
        await api.settle()
        clocks.advance(1)
        await engine.run_due()

    await recompute(7)
    (_, name, body), = api.writes("replace")
    assert name == "rack-r0" and body["metadata"]["resourceVersion"] == "90001"
    assert api.objects[key]["data"] == {"priority": "7"}
    assert api.objects[key]["metadata"]["labels"] == {"team": "ops"}, "a PUT keeps what others set"
    assert len(api.writes("apply")) == 2
    await api.settle()
    # Written by someone the watch has not shown yet: 409, and retried onto the version it brings.
    held = api.objects[key]
    api.objects[key] = {**held, "metadata": {**held["metadata"], "resourceVersion": "90002"}}
    await recompute(8)
    assert api.objects[key]["data"] == {"priority": "7"} and engine.stats.write_errors == 0
    assert engine.next_due() == pytest.approx(clocks.t + SETTINGS.retry_delay)
    api._emit("MODIFIED", api.objects[key])
    await api.settle()
    clocks.advance(SETTINGS.retry_delay)
    await engine.run_due()
    assert api.writes("replace")[-1][2]["metadata"]["resourceVersion"] == "90002"
    assert api.objects[key]["data"] == {"priority": "8"}
    await api.settle()
    # Deleted by someone the watch has not shown yet: 404, and created again by the retry.
    del api.objects[key]
    await recompute(9)
    assert key not in api.objects and engine.store.get(key) is None
    assert engine.stats.write_errors == 0, "an object gone is not a failed write"
    clocks.advance(SETTINGS.retry_delay)
    await engine.run_due()
    assert api.writes("apply")[-1][1] == "rack-r0" and api.objects[key]["data"] == {"priority": "9"}
    await api.settle()
    # A Role without the update verb (from before it was needed): refused once, applied from then on.
    api.fail("replace", "rack-r0", 403)
    replaced, applied = len(api.writes("replace")), len(api.writes("apply"))
    await recompute(10)
    clocks.advance(SETTINGS.retry_delay)
    await engine.run_due()
    await api.settle()
    await recompute(11)
    assert api.objects[key]["data"] == {"priority": "11"}
    assert len(api.writes("replace")) == replaced + 1 and len(api.writes("apply")) == applied + 2


async def test_a_delete_of_an_object_already_gone_is_done_and_a_conflict_is_retried(
        clocks: Clocks, engines: list[Engine]) -> None:
    api = FakeApi([configmap("a", {}), configmap("b", {})], plurals(CONFIGMAPS))
    api.fail("delete", "a", 404)
    api.fail("delete", "b", 409)

    def planner(objects: list[dict[str, Any]], now: datetime, settings: None, cache: None) -> Plan:
        return Plan(deletes=[ObjectRef("ConfigMap", "site-a", o["metadata"]["name"]) for o in objects])

    ctl: Controller[None, None] = Controller(name="gc", resources=(CONFIGMAPS,), planner=planner,
                                             settings=None, new_cache=lambda: None)
    engine = await started(api, clocks, [ctl])
    engines.append(engine)
    await engine.run_due()
    assert engine.store.get(("ConfigMap", "site-a", "a")) is None  # 404: gone, done
    assert engine.next_due() == pytest.approx(clocks.t + SETTINGS.retry_delay)  # 409: again later
    clocks.advance(SETTINGS.retry_delay)
    await engine.run_due()
    assert ("ConfigMap", "site-a", "b") not in api.objects


# -- the slot: several controllers in one engine -------------------------------------------------

async def test_two_controllers_share_one_cache_and_each_is_woken_only_by_its_kinds(
        clocks: Clocks, engines: list[Engine]) -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "k8s-1"}, "spec": {}}
    api = FakeApi([rack_obj("r0"), rack_obj("r1", ns="site-b"), node], plurals(RACKS, NODES))
    per_site = CountingPlanner()
    seen: list[list[str]] = []

    def cluster_wide(objects: list[dict[str, Any]], now: datetime, settings: None, cache: None) -> Plan:
        seen.append(sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects))
        return Plan()

    engine = await started(api, clocks, [
        rack_controller(per_site),
        Controller(name="nodes", resources=(NODES, RACKS), planner=cluster_wide, settings=None,
                   new_cache=lambda: None, per_namespace=False, reconcile_kind="discovery"),
    ])
    engines.append(engine)
    assert set(engine.resources) == {"Rack", "Node"}  # one watch of Racks for both
    await engine.run_due()
    assert per_site.calls == 2  # one per namespace
    assert seen == [["Node/k8s-1", "Rack/r0", "Rack/r1"]]  # one call over the whole cluster
    await api.settle()
    api.objects[("Node", "", "k8s-1")]["metadata"]["resourceVersion"] = "99999"
    api._emit("MODIFIED", api.objects[("Node", "", "k8s-1")])
    await api.settle()
    clocks.advance(1)
    await engine.run_due()
    assert per_site.calls == 2 and len(seen) == 2  # a Node concerns only the controller watching it


def test_the_power_controller_watches_every_registered_kind() -> None:
    ctl = power_controller()
    assert [r.kind for r in ctl.resources] == [k.kind for k in kinds.KINDS]
    assert all(r.group_path == kinds.GROUP_PATH for r in ctl.resources)
    # One watch per resource and namespace; a cluster-scoped resource is watched once.
    s = EngineSettings(namespaces=("a", "b"), write_concurrency=32, event_concurrency=8)
    assert connections_needed(s) == 32 + 8 + 2 * len(kinds.KINDS) + 4
    assert connections_needed(s, [rack_controller(CountingPlanner()),
                                  Controller(name="n", resources=(NODES,), planner=CountingPlanner(),
                                             settings=None, new_cache=lambda: None)]) == 32 + 8 + 2 + 1 + 4


def test_core_and_cluster_resources_have_their_paths() -> None:
    assert NODES.path() == "/api/v1/nodes" and NODES.path("ignored", "n1") == "/api/v1/nodes/n1"
    assert CONFIGMAPS.path("ns", "c", "status") == "/api/v1/namespaces/ns/configmaps/c/status"
    assert RACKS.path("ns") == f"{kinds.GROUP_PATH}/namespaces/ns/racks"
    assert RACKS.api_version == kinds.API_VERSION


def test_an_apply_counts_as_in_effect_only_when_every_applied_field_is_held() -> None:
    held = {"metadata": {"name": "a", "uid": "u", "labels": {"x": "1"}}, "spec": {"n": 1, "on": True,
                                                                              "list": [1, 2]}}
    assert _holds(held, {"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"n": 1}})
    assert not _holds(held, {"spec": {"n": 2}})
    assert not _holds(held, {"spec": {"missing": 0}})
    assert not _holds(held, {"spec": {"on": 1}})  # a bool is not a number on the wire
    assert not _holds(held, {"spec": {"list": [1]}})  # lists are whole
    assert _holds(held, {"spec": {"gone": None}}) and not _holds(held, {"spec": {"n": None}})


class SlowApi(FakeApi):
    """Each status write takes a few turns of the event loop; the order of starts and answers is
    recorded by kind."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.log: list[tuple[str, str]] = []

    async def _slowly(self, kind: str, start: str, done: str, write: Awaitable[Any]) -> Any:
        self.log.append((start, kind))
        for _ in range(3):
            await asyncio.sleep(0)
        out = await write
        self.log.append((done, kind))
        return out

    async def patch_status(self, resource: ApiResource, namespace: str | None, name: str,
                           patch: Mapping[str, Any], *, resource_version: str | None = None) -> Any:
        return await self._slowly(resource.kind, "start", "done", super().patch_status(
            resource, namespace, name, patch, resource_version=resource_version))

    async def apply(self, resource: ApiResource, namespace: str | None, name: str, body: Mapping[str, Any],
                    *, field_manager: str, force: bool) -> Any:
        return await self._slowly(resource.kind, "apply", "applied", super().apply(
            resource, namespace, name, body, field_manager=field_manager, force=force))

    async def replace(self, resource: ApiResource, namespace: str | None, name: str,
                      body: Mapping[str, Any]) -> Any:
        return await self._slowly(resource.kind, "replace", "replaced", super().replace(
            resource, namespace, name, body))


async def test_slices_are_written_and_answered_before_any_node(
        clocks: Clocks, engines: list[Engine]) -> None:
    """A new limit reaches the agents through their PowerLimitSlice, so every slice write of a plan
    is answered before the first GPUNode or Rack write starts (a barrier, not only an order), in a
    cold start and in a curtailment alike."""
    site = synthetic_site(60, 5, "site-a", now=SYNTH_NOW)
    api = SlowApi(site, plurals(*(ApiResource.of(k) for k in kinds.KINDS)))
    engine = await started(api, clocks, [power_controller()])
    engines.append(engine)

    def check_order() -> None:
        slices_done = max(i for i, (what, kind) in enumerate(api.log)
                          if kind == "PowerLimitSlice" and what in ("applied", "replaced"))
        first_other = min(i for i, (what, kind) in enumerate(api.log) if kind in ("GPUNode", "Rack"))
        assert slices_done < first_other
        # Each slice carries its nodes' limits, the figure their own statuses carry (a curtailment
        # only lowers: nothing waits for a confirmation), and each node names its slice.
        seen = 0
        for (kind, ns, name), o in api.objects.items():
            if kind == "PowerLimitSlice":
                assert len(o["spec"]["limits"]) <= kinds.DEFAULT_SLICE_SIZE
                for node, watts in o["spec"]["limits"].items():
                    status = api.objects["GPUNode", ns, node]["status"]
                    assert status["powerLimitWatts"] == watts and status["powerLimitSlice"] == name
                    seen += 1
        assert seen == sum(1 for k in api.objects if k[0] == "GPUNode")

    await engine.run_due()
    check_order()
    await api.settle()
    api.log.clear()
    cluster = next(k for k in api.objects if k[0] == "StargateCluster")
    spec = api.objects[cluster]["spec"]
    api.change(*cluster, {"power": {**spec["power"], "curtailment": {"percent": 20, "reason": "grid"}}})
    await api.settle()
    clocks.advance(1)
    await engine.run_due()
    assert {kind for _, kind in api.log} >= {"PowerLimitSlice", "Rack", "GPUNode"}
    assert ("replaced", "PowerLimitSlice") in api.log, "a held slice is written onto its version"
    check_order()
    plan = plan_campus(list(api.objects.values()), clocks.wall(), CampusSettings())
    assert all(merge_patch(api.objects[k].get("status"), want) == {} for k, want in plan.statuses.items())


async def test_a_refused_create_says_whether_its_namespace_is_being_deleted_or_gone(
        clocks: Clocks, engines: list[Engine], caplog: pytest.LogCaptureFixture) -> None:
    """The API server refuses a create in a terminating namespace (403, NamespaceTerminating) and in
    one already gone (404 naming a namespace): the log says which, once per namespace."""
    engine = await started(FakeApi([], plurals(RACKS)), clocks, [rack_controller(CountingPlanner())])
    engines.append(engine)
    terminating = ApiError(403, "forbidden",
                           body={"details": {"causes": [{"reason": "NamespaceTerminating"}]}})
    gone = ApiError(404, "not found", body={"details": {"kind": "namespaces", "name": "site-b"}})
    assert terminating.namespace_terminating and gone.namespace_gone
    with caplog.at_level("INFO", logger="stargate.engine"):
        engine._write_failed("create", ("Event", "site-a", "e1"), terminating)
        engine._write_failed("create", ("Event", "site-a", "e2"), terminating)
        engine._write_failed("create", ("Event", "site-b", "e3"), gone)
    said = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert said == [
        "namespace site-a is being deleted: create of Event e1 skipped (and the like, until the watch "
        "sees it gone)",
        "namespace site-b is gone: create of Event e3 skipped (and the like, until the watch sees it gone)",
    ], said
