"""Faults: the operator SIGKILLed while binding claims and in the middle of a curtailment's writes,
the API server restarted under it (idle, and in the middle of a curtailment), and an active/standby
pair whose active replica dies. Each test runs its own operator process(es), limited to the test's
namespace (sharding by namespace, as replicas would); the curtailment tests run a simulated node
agent for every GPUNode, in one process as `agent --simulate --all` does."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from helpers.api import Api, condition
from helpers.fleet import FleetThread
from helpers.kube import Kubectl, purge_namespace
from helpers.operator_process import OperatorProcess, wait_for
from helpers.site import claim, cluster, node, pool, rack
from stargate_operator import kinds
from stargate_operator.agent.backend import LimitOutcome
from stargate_operator.agent.runner import Fleet
from stargate_operator.agent.simulate import SimulatedBackend
from stargate_operator.client import KubeClient
from stargate_operator.core.sliceplan import CampusSettings, SliceSettings, plan_campus
from stargate_operator.core.statusdiff import merge_patch
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration

KINDS = tuple(k.kind for k in kinds.KINDS)


@pytest.fixture
def operators(control_plane: LocalControlPlane, tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    """Operator processes a test starts; each is stopped at the end, whatever happened."""
    started: list[OperatorProcess] = []
    yield started
    for op in started:
        if op.alive:
            op.kill()


def start(operators: list[OperatorProcess], control_plane: LocalControlPlane, tmp_path: Path,
          *args: str, wait: bool = True) -> OperatorProcess:
    op = OperatorProcess(control_plane, tmp_path, *args)
    operators.append(op)
    return op.start(wait=wait)


def all_objects(api: Api, ns: str) -> list[dict[str, Any]]:
    out = []
    for kind in KINDS:
        for o in api.list(kind, ns):
            o["kind"] = kind
            out.append(o)
    return out


def fixed_point_diffs(api: Api, ns: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """What the core would still change in the stored statuses: {} when every status is correct."""
    objects = all_objects(api, ns)
    # the operators of this module run with --slice-size PER_RACK (one rack per slice)
    plan = plan_campus(objects, datetime.now(UTC), CampusSettings(slices=SliceSettings(slice_size=PER_RACK)))
    held = {(o["kind"], ns, o["metadata"]["name"]): o.get("status") for o in objects}
    return {k: p for k, want in plan.statuses.items() if (p := merge_patch(held.get(k), want))}


# -- SIGKILL in the middle of binding ----------------------------------------------------------

CAPACITY = 20_000
N_CLAIMS = 200


def _claims() -> list[dict[str, Any]]:
    # Sizes 100..299, priorities 0..2: about twice what the pool holds.
    return [claim(f"c{i:03d}", "cxl", 100 + (i * 37) % 200, priority=i % 3) for i in range(N_CLAIMS)]


def test_sigkill_while_binding_loses_and_duplicates_nothing(
        api: Api, control_plane: LocalControlPlane, namespace: str, operators: list[OperatorProcess],
        tmp_path: Path) -> None:
    ns = namespace
    api.create_all(ns, [cluster(), pool("cxl", capacity=CAPACITY)])
    # One write at a time, so that the kill lands in the middle of the binding writes.
    first = start(operators, control_plane, tmp_path, "-n", ns, "--write-concurrency", "1",
                  "--slice-size", str(PER_RACK))
    wait_for(lambda: api.status("MemoryPool", ns, "cxl").get("capacityBytes") == CAPACITY, 10)

    claims = _claims()
    created = threading.Event()

    def create_burst() -> None:
        with _ClientCtx(control_plane) as client:
            for c in claims:
                client.create(ns, c)
        created.set()

    creator = threading.Thread(target=create_burst)
    creator.start()

    def some_bound() -> list[dict[str, Any]]:
        bound = [c for c in api.list("MemoryClaim", ns) if (c.get("status") or {}).get("phase") == "Bound"]
        return bound if len(bound) >= 20 else []

    wait_for(some_bound, 20, interval=0.02, what="the first bindings")
    first.kill()
    killed_at = time.monotonic()
    before = {c["metadata"]["name"]: c["status"] for c in api.list("MemoryClaim", ns)
              if (c.get("status") or {}).get("phase") == "Bound"}
    creator.join(60)
    assert created.is_set()
    bound_sum_before = sum(s["allocatedBytes"] for s in before.values())
    assert bound_sum_before <= CAPACITY
    # The kill did land mid-way: not every claim that will fit was bound.
    assert len(before) < N_CLAIMS

    second = start(operators, control_plane, tmp_path, "-n", ns, "--slice-size", str(PER_RACK))

    def converged() -> bool:
        pool_st = api.status("MemoryPool", ns, "cxl")
        c = pool_st.get("claims") or {}
        return c.get("bound", 0) + c.get("pending", 0) == N_CLAIMS and not fixed_point_diffs(api, ns)

    wait_for(converged, 30, interval=0.2, what="the second operator to converge")
    print(f"converged {time.monotonic() - killed_at:.1f}s after the kill; {len(before)} bound before it")

    listed = {c["metadata"]["name"]: c for c in api.list("MemoryClaim", ns)}
    assert len(listed) == N_CLAIMS
    statuses = {n: c.get("status") or {} for n, c in listed.items()}
    assert all(s.get("phase") in ("Bound", "Pending") for s in statuses.values()), "a claim was lost"
    bound = {n: s for n, s in statuses.items() if s["phase"] == "Bound"}
    sizes = {n: c["spec"]["sizeBytes"] for n, c in listed.items()}
    allocated = sum(sizes[n] for n in bound)
    assert allocated <= CAPACITY
    for n, s in bound.items():
        assert s["allocatedBytes"] == sizes[n]
    # Bound before the kill: still bound, with the same boundAt (not bound a second time).
    for n, s in before.items():
        assert statuses[n]["phase"] == "Bound", f"{n} lost its binding"
        assert statuses[n]["boundAt"] == s["boundAt"], f"{n} was bound again"
    # Nothing that fits was left waiting: every pending claim is larger than what is left.
    free = CAPACITY - allocated
    for n, s in statuses.items():
        if s["phase"] == "Pending":
            assert sizes[n] > free, f"{n} ({sizes[n]} B) pending with {free} B free"
            assert condition(s, "Ready")["reason"] == "InsufficientCapacity"
    pool_st = api.status("MemoryPool", ns, "cxl")
    assert pool_st["allocatedBytes"] == allocated
    assert pool_st["availableBytes"] == free
    assert pool_st["claims"] == {"bound": len(bound), "pending": N_CLAIMS - len(bound)}
    # At most one Bound Event per claim.
    per_claim = Counter(e["involvedObject"]["name"] for e in api.events(ns) if e.get("reason") == "Bound")
    assert max(per_claim.values(), default=0) <= 1, per_claim.most_common(3)
    assert second.alive


class _ClientCtx:
    """An Api of its own for a thread (httpx clients are not shared across threads here)."""

    def __init__(self, control_plane: LocalControlPlane) -> None:
        self.client = Api(control_plane)

    def __enter__(self) -> Api:
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()


# -- sharding by namespace ---------------------------------------------------------------------

def test_namespace_shard_touches_only_its_namespaces(
        api: Api, kubectl: Kubectl, control_plane: LocalControlPlane, namespace: str,
        operators: list[OperatorProcess], tmp_path: Path) -> None:
    other = namespace + "-other"
    kubectl("create", "namespace", other)
    try:
        site = [cluster(it=10_000), rack("r"), node("n1", "r"), node("n2", "r")]
        api.create_all(namespace, site)
        api.create_all(other, site)
        op = start(operators, control_plane, tmp_path, "-n", namespace)
        wait_for(lambda: api.status("GPUNode", namespace, "n2").get("allocatedWatts") == 3000, 10)
        time.sleep(1.0)
        assert op.writes() == 5  # site, rack, two nodes, the slice that carries their limits
        assert all(not o.get("status") for o in all_objects(api, other)), "wrote outside its shard"
    finally:
        purge_namespace(kubectl, other)


# -- the API server restarted under a running operator -----------------------------------------

@pytest.mark.parametrize("kill", [False, True], ids=["graceful", "crash"])
def test_apiserver_restart(api: Api, control_plane: LocalControlPlane, namespace: str,
                           operators: list[OperatorProcess], tmp_path: Path, kill: bool) -> None:
    ns = namespace
    api.create_all(ns, [cluster(it=10_000), rack("r"), node("n1", "r"), node("n2", "r")])
    op = start(operators, control_plane, tmp_path, "-n", ns)
    wait_for(lambda: api.status("Rack", ns, "r").get("power", {}).get("budgetWatts") == 6000, 10)

    wait_for(lambda: api.status("StargateCluster", ns, "site").get("power", {}).get("allocatedWatts") == 6000,
             10)
    time.sleep(0.5)
    writes = op.writes()
    assert writes == 5  # site, rack, two nodes and their PowerLimitSlice: once each

    control_plane.restart_apiserver(downtime=2.0, kill=kill)
    restarted = time.monotonic()
    assert op.alive, op.log_tail()
    # A change after the restart: B = 5000 -> rack 5000, 1100 per node, limit 375.
    wait_for(lambda: api.patch("StargateCluster", ns, "site",
                               {"spec": {"power": {"itCapacityWatts": 5000}}}), 30)
    wait_for(lambda: api.status("GPUNode", ns, "n2").get("powerLimitWatts") == 375, 30,
             what="the change after the restart to be reflected")
    print(f"reflected {time.monotonic() - restarted:.1f}s after the API server came back")
    st = api.status("StargateCluster", ns, "site")
    assert (st["power"]["budgetWatts"], st["observedGeneration"]) == (5000, 2)
    assert api.status("Rack", ns, "r")["power"]["budgetWatts"] == 5000
    # The five objects whose status changed were written, once each, nothing else: reconnecting
    # (and any re-list) cost no write. The fifth is the PowerLimitSlice: the new limits are a new
    # generation of its spec, which its status's observedGeneration records.
    wait_for(lambda: op.writes() >= writes + 5, 5)
    time.sleep(0.3)
    assert op.writes() == writes + 5
    assert {k: op.writes(k) for k in ("StargateCluster", "Rack", "GPUNode", "PowerLimitSlice")} == {
        "StargateCluster": 2, "Rack": 2, "GPUNode": 4, "PowerLimitSlice": 2}
    # And it keeps following (the watches are back, not just one re-list).
    api.create(ns, node("n3", "r"))
    wait_for(lambda: api.status("Rack", ns, "r").get("nodes") == 3, 10)
    # Floors 4200 of 5000; 800 over three rooms of 1600 -> 266 each, 66 per GPU -> limit 166.
    wait_for(lambda: api.status("GPUNode", ns, "n3").get("allocatedWatts") == 1664, 10)
    assert op.alive
    op.stop()
    assert op.returncode == 0, op.log_tail()


# -- active/standby ----------------------------------------------------------------------------

LEASE, RENEW, RETRY = 6, 4, 1  # --leader-lease-duration, --leader-renew-deadline, --leader-retry-period
ELECTION = ("--leader-election", "sg-test", "--leader-lease-duration", str(LEASE),
            "--leader-renew-deadline", str(RENEW), "--leader-retry-period", str(RETRY))


def _lease(api: Api, ns: str) -> dict[str, Any]:
    spec: dict[str, Any] = api.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/sg-test").get("spec") or {}
    return spec


def test_active_standby_takeover(api: Api, control_plane: LocalControlPlane, namespace: str,
                                 operators: list[OperatorProcess], tmp_path: Path) -> None:
    ns = namespace
    common = ("-n", ns, *ELECTION)
    first = start(operators, control_plane, tmp_path, *common)
    wait_for(lambda: first.active(), 10, what="the first replica to take the Lease")
    second = start(operators, control_plane, tmp_path, *common)
    # Give the standby a few tries to be sure it stays put.
    time.sleep(3 * RETRY + 0.5)
    assert not second.active()
    lease = _lease(api, ns)
    assert lease["holderIdentity"] and lease["leaseDurationSeconds"] == LEASE
    assert lease["acquireTime"] and lease["renewTime"] and lease["leaseTransitions"] == 0

    api.create_all(ns, [cluster(it=10_000), rack("r"), node("n1", "r"), node("n2", "r")])
    wait_for(lambda: api.status("GPUNode", ns, "n2").get("allocatedWatts") == 3000, 10)
    time.sleep(0.5)
    assert first.writes() >= 4
    assert second.writes() == 0, "the standby wrote"

    first.kill()
    killed = time.monotonic()
    # B = 5000: rack 5000, 1100 per node, limit 375; only the standby can make it so.
    api.patch("StargateCluster", ns, "site", {"spec": {"power": {"itCapacityWatts": 5000}}})
    wait_for(lambda: api.status("GPUNode", ns, "n2").get("powerLimitWatts") == 375,
             LEASE + 4 * RETRY + 3, what="the standby to take over")
    took = time.monotonic() - killed
    print(f"standby took over {took:.1f}s after the active replica was killed (lease {LEASE}s)")
    # The killed holder's record expires LEASE s after the standby last saw it change; the standby
    # looks every RETRY x (1 to 2.2) s.
    assert took <= LEASE + 2.2 * RETRY + 2
    assert second.active()
    assert _lease(api, ns)["leaseTransitions"] == 1
    # Site, rack and both nodes change (n2 was seen; the others' writes may still be landing).
    wait_for(lambda: second.writes() >= 4, 5, what="the new active replica's writes")

    # A clean stop hands over at once: a third replica stands by, then the leader gets SIGTERM and
    # releases the Lease (no holder, one second), as client-go's ReleaseOnCancel.
    third = start(operators, control_plane, tmp_path, *common)
    time.sleep(2 * RETRY + 0.5)
    assert not third.active() and second.active()
    assert second.stop() == 0
    stopped = time.monotonic()
    wait_for(lambda: third.active(), 2.2 * RETRY + 2, what="the standby to act after a clean handover")
    print(f"clean handover in {time.monotonic() - stopped:.1f}s")
    assert "released the Lease" in second.log_text()
    assert _lease(api, ns)["leaseTransitions"] == 2


def test_two_candidates_never_both_win_a_round(api: Api, control_plane: LocalControlPlane,
                                                namespace: str) -> None:
    """The Lease is written with the resourceVersion that was read: of candidates that race for a
    free Lease (first absent, then released by the last winner), exactly one wins each round."""
    from stargate_operator.controller.leader import ElectionConfig, LeaderElector

    ns = namespace

    async def race() -> list[list[bool]]:
        client = KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
        try:
            electors = [LeaderElector(client, ElectionConfig("sg-race", ns, f"candidate-{i}", 3, 2, 1),
                                      asyncio.Event()) for i in range(8)]
            rounds = []
            for _ in range(3):
                wins = await asyncio.gather(*(e.try_acquire_or_renew() for e in electors))
                rounds.append(list(wins))
                winner = electors[wins.index(True)] if any(wins) else None
                assert winner is not None
                assert await winner.release()
            return rounds
        finally:
            await client.aclose()

    rounds = asyncio.run(race())
    assert [r.count(True) for r in rounds] == [1, 1, 1], rounds
    spec = api.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/sg-race")["spec"]
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1


# -- faults in the middle of a curtailment's writes --------------------------

RACKS, PER_RACK = 60, 4
NODES = RACKS * PER_RACK
FULL, CURTAILED = 500, 125  # per GPU: every node at its demand; 50 % curtailed: 1500 W a node


class RecordingBackend(SimulatedBackend):
    """A simulated node that remembers every limit it was set to (a limit already in force is not
    set again)."""

    def __init__(self, name: str, gpunode: dict[str, Any]) -> None:  # a Fleet's BackendFactory
        super().__init__(name, gpunode.get("spec") or {}, seed=1)
        self.history: list[int] = []

    def apply_power_limit(self, watts: int) -> LimitOutcome:
        out = super().apply_power_limit(watts)
        if out.changed:
            self.history.append(round(self.limit_watts))
        return out


class AgentsThread(FleetThread):
    """One simulated agent per GPUNode of the namespace (recording backends), the real Fleet in a
    thread of its own, watching the real API server."""

    def __init__(self, control_plane: LocalControlPlane, namespace: str,
                 fleet_class: type[Fleet] = Fleet) -> None:
        super().__init__(control_plane, namespace, RecordingBackend, fleet_class, interval=600)

    def recorders(self) -> dict[str, RecordingBackend]:
        assert self.fleet is not None
        out = {}
        for name, agent in list(self.fleet.agents.items()):
            assert isinstance(agent.backend, RecordingBackend)
            out[name] = agent.backend
        return out

    def applied(self) -> Counter[int]:
        return Counter(round(b.limit_watts) for b in self.recorders().values())

    def from_slices(self, watts: int) -> int:
        """Agents whose PowerLimitSlice gives them `watts`."""
        assert self.fleet is not None
        return sum(a.slice_entry is not None and a.slice_entry.limit == watts
                   for a in list(self.fleet.agents.values()))

    def from_nodes(self, watts: int) -> int:
        """Agents whose GPUNode's powerLimitWatts is `watts`."""
        assert self.fleet is not None
        return sum((a.obj.get("status") or {}).get("powerLimitWatts") == watts
                   for a in list(self.fleet.agents.values()))


@pytest.fixture
def agents(control_plane: LocalControlPlane, namespace: str) -> Iterator[AgentsThread]:
    thread = AgentsThread(control_plane, namespace).start()
    yield thread
    thread.stop()


def _curtailment_site() -> list[dict[str, Any]]:
    out = [cluster(it=NODES * 3000)]  # every node gets its demand: 3000 W, 500 W per GPU
    for r in range(RACKS):
        out.append(rack(f"r{r:02d}"))
        out.extend(node(f"r{r:02d}-n{n}", f"r{r:02d}") for n in range(PER_RACK))
    return out


def _site_confirmed(api: Api, ns: str, watts: int) -> bool:
    """Every status as the core wants it, every agent's report confirming `watts`."""
    if fixed_point_diffs(api, ns):
        return False
    site = api.status("StargateCluster", ns, "site")
    return site.get("power", {}).get("limitsConfirmed") == NODES and all(
        (n.get("status") or {}).get("powerLimitWatts") == watts for n in api.list("GPUNode", ns))


def _converged_after_curtailment(api: Api, ns: str, agents: AgentsThread) -> None:
    """Every rack and node converges; every agent went from the full limit to the curtailed one,
    once, and never back (no agent kept or took up an old limit); the agents' reports confirm it."""
    wait_for(lambda: _site_confirmed(api, ns, CURTAILED), 60, interval=0.3,
             what="every rack and node to converge and every agent to confirm the curtailed limit")
    assert agents.applied() == Counter({CURTAILED: NODES})
    histories = {n: b.history for n, b in agents.recorders().items()}
    assert all(h == [CURTAILED] for h in histories.values()), {
        n: h for n, h in histories.items() if h != [CURTAILED]}
    for r in api.list("Rack", ns):
        st = r["status"]
        assert "powerLimits" not in st
        assert st["power"]["limitsConfirmed"] == PER_RACK
    slices = api.list("PowerLimitSlice", ns)
    assert len(slices) == RACKS  # --slice-size PER_RACK: one rack each
    for s in slices:
        assert set(s["spec"]["limits"].values()) == {CURTAILED} and len(s["spec"]["limits"]) == PER_RACK
    for n in api.list("GPUNode", ns):
        st = n["status"]
        assert st["telemetry"]["enforcedLimitWatts"] == CURTAILED
        assert condition(st, "PowerLimitApplied")["status"] == "True"


def _ready_for_curtailment(api: Api, ns: str, agents: AgentsThread) -> None:
    wait_for(lambda: _site_confirmed(api, ns, FULL), 60, interval=0.3,
             what="the site to converge with every agent confirming the full limit")
    assert agents.applied() == Counter({FULL: NODES})


def _curtail(api: Api, ns: str) -> None:
    api.patch("StargateCluster", ns, "site",
              {"spec": {"power": {"curtailment": {"percent": 50, "reason": "grid emergency"}}}})


def _slices_first_so_far(api: Api, ns: str) -> tuple[int, int]:
    """(slices, nodes) already carrying the curtailed limit; a node never carries it before its
    slice (the engine's barrier: every slice write is answered before the first node write)."""
    slices = {s["metadata"]["name"]: (s.get("spec") or {}).get("limits") or {}
              for s in api.list("PowerLimitSlice", ns)}
    new_slices = sum(set(p.values()) == {CURTAILED} for p in slices.values())
    new_nodes = 0
    for n in api.list("GPUNode", ns):
        st = n.get("status") or {}
        if st.get("powerLimitWatts") == CURTAILED:
            new_nodes += 1
            assert slices[st["powerLimitSlice"]][n["metadata"]["name"]] == CURTAILED
    return new_slices, new_nodes


@pytest.mark.parametrize("during", ["racks", "nodes"])
def test_sigkill_in_the_middle_of_a_curtailment(
        api: Api, control_plane: LocalControlPlane, namespace: str, operators: list[OperatorProcess],
        tmp_path: Path, agents: AgentsThread, during: str) -> None:
    """The operator SIGKILLed while it writes a curtailment's limits (among the racks' writes, or
    among the GPUNodes' after them) and started again: every rack and node converges, and no
    agent keeps an old limit, or goes back to one, after the new operator's first recomputation."""
    ns = namespace
    api.create_all(ns, _curtailment_site())
    # One write at a time (about 300 to write), so that the kill lands in the middle of them.
    first = start(operators, control_plane, tmp_path, "-n", ns, "--write-concurrency", "1",
                  "--slice-size", str(PER_RACK))
    _ready_for_curtailment(api, ns, agents)

    _curtail(api, ns)
    if during == "racks":
        wait_for(lambda: agents.from_slices(CURTAILED) >= 10 * PER_RACK, 20, interval=0.002,
                 what="the first racks' new limits")
    else:
        wait_for(lambda: agents.from_nodes(CURTAILED) >= 20, 20, interval=0.002,
                 what="the first GPUNodes' new limits")
    first.kill()
    racks_new, nodes_new = _slices_first_so_far(api, ns)
    print(f"killed with {racks_new} of {RACKS} racks and {nodes_new} of {NODES} nodes written")
    if during == "racks":
        assert 10 <= racks_new < RACKS and nodes_new == 0
    else:
        assert racks_new == RACKS and 20 <= nodes_new < NODES
    # The agents follow what was written: those of the racks written have the new limit already.
    wait_for(lambda: agents.applied()[CURTAILED] >= racks_new * PER_RACK, 10, interval=0.05)

    second = start(operators, control_plane, tmp_path, "-n", ns, "--slice-size", str(PER_RACK))
    _converged_after_curtailment(api, ns, agents)
    assert second.alive


def test_apiserver_restart_in_the_middle_of_a_curtailment(
        api: Api, control_plane: LocalControlPlane, namespace: str, operators: list[OperatorProcess],
        tmp_path: Path, agents: AgentsThread) -> None:
    """The API server killed while the operator writes a curtailment's racks, and back two seconds
    later: the operator's failed writes are retried, its and the agents' watches come back, every
    rack and node converges and no agent keeps an old limit."""
    ns = namespace
    api.create_all(ns, _curtailment_site())
    op = start(operators, control_plane, tmp_path, "-n", ns, "--write-concurrency", "1",
                  "--slice-size", str(PER_RACK))
    _ready_for_curtailment(api, ns, agents)

    _curtail(api, ns)
    wait_for(lambda: agents.from_slices(CURTAILED) >= 10 * PER_RACK, 20, interval=0.002,
             what="the first racks' new limits")
    control_plane.stop_apiserver(kill=True)
    try:
        seen = agents.from_slices(CURTAILED) // PER_RACK
        assert seen < RACKS, "the racks were all written before the API server went"
        time.sleep(2.0)
    finally:
        control_plane.start_apiserver()
    print(f"API server killed with {seen} of {RACKS} racks seen by the agents")
    assert op.alive, op.log_tail()
    _converged_after_curtailment(api, ns, agents)
    assert op.alive



class OlderFleet(Fleet):
    """Agents as they were before PowerLimitSlices: their rack's powerLimits, else their GPUNode's
    status.powerLimitWatts; no slice is read."""

    async def _follow_slices(self) -> None:
        return


def test_older_agents_follow_a_new_operator_through_their_gpunodes(
        api: Api, control_plane: LocalControlPlane, namespace: str, operators: list[OperatorProcess],
        tmp_path: Path) -> None:
    """An operator upgraded before its agents (the wrong order, but it happens): the racks carry no
    limit maps any more, and the older agents take their limits from their GPUNodes, a curtailment
    included; every node converges and confirms."""
    ns = namespace
    agents = AgentsThread(control_plane, ns, OlderFleet).start()
    try:
        api.create_all(ns, _curtailment_site())
        start(operators, control_plane, tmp_path, "-n", ns, "--slice-size", str(PER_RACK))
        _ready_for_curtailment(api, ns, agents)
        _curtail(api, ns)
        _converged_after_curtailment(api, ns, agents)
        assert agents.fleet is not None
        assert {a.assigned_limit() for a in agents.fleet.agents.values()} == {(CURTAILED, "gpunode")}
    finally:
        agents.stop()
