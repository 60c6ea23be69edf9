"""The fail-safe on the real API server: the operator renews a Lease in the site's
namespace; stop it and every agent falls back to min(limit, safeLimitWatts) within failsafe-after
plus the spread and one interval of the last renewal, each at its own offset in the spread; start
it again and they return to their limits.

The site is oversubscribed 25 % and its nodes idle (a backend reading 100 W a GPU), so nothing caps:
each node's limit (687 W a GPU, from 125 % of the budget) is above its safe limit (500 W, the same
tree with no oversubscription), and the two are told apart at the GPUs."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from helpers.kube import Kubectl
from helpers.operator_process import OperatorProcess
from helpers.slowproxy import SlowProxy
from stargate_operator import kinds
from stargate_operator.agent.backend import GPUReading, LimitOutcome, NodeReading
from stargate_operator.agent.runner import Fleet
from stargate_operator.agent.spread import failsafe_offset
from stargate_operator.client import KubeClient
from stargate_operator.kinds import FAILSAFE_LEASE_NAME
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration

GiB = 2**30
FAILSAFE_AFTER = 4.0
INTERVAL = 1.0
SPREAD = 2.0  # agents enter and leave the fail-safe spread over this (agent/spread.py)
LIMIT, SAFE = 687, 500  # (18000 * 1.25 - 3 * 3600) / 3 / 8 + 200, and (18000 - 10800) / 3 / 8 + 200


class IdleGPUs:
    """Eight GPUs drawing 100 W each whatever their limit, which they report enforced; records when
    each limit was set."""

    blocking = False

    def __init__(self) -> None:
        self.limit: int | None = None
        self.changes: list[tuple[float, int]] = []  # (wall time, limit)

    def read(self, spec: dict[str, Any], annotations: dict[str, str]) -> NodeReading:
        limit = float(self.limit) if self.limit is not None else None
        return NodeReading(tuple(GPUReading(index=i, power_watts=100.0, limit_watts=limit,
                                            limit_range_watts=(200.0, 700.0), enforced_limit_watts=limit)
                                 for i in range(8)), other_power_watts=2000.0)

    def apply_power_limit(self, watts: int) -> LimitOutcome:
        changed = watts != self.limit
        if changed:
            self.limit = watts
            self.changes.append((time.time(), watts))
        return LimitOutcome(requested_watts=watts, applied=dict.fromkeys(range(8), float(watts)),
                            changed=changed)

    def close(self) -> None:
        pass


def site(ns: str) -> list[dict[str, Any]]:
    api = kinds.API_VERSION
    objs: list[dict[str, Any]] = [
        {"apiVersion": api, "kind": "StargateCluster", "metadata": {"name": "site", "namespace": ns},
         "spec": {"site": {"region": "r", "kind": "Onshore", "cooling": "DirectLiquid"},
                  "power": {"itCapacityWatts": 18_000, "reservePercent": 0,
                            "oversubscription": {"percent": 25, "holdSeconds": 2}}}},
        {"apiVersion": api, "kind": "Rack", "metadata": {"name": "rack-a", "namespace": ns},
         "spec": {"clusterRef": "site", "maxPowerWatts": 100_000}},
    ]
    for i in range(3):
        objs.append({"apiVersion": api, "kind": "GPUNode", "metadata": {"name": f"n{i}", "namespace": ns},
                     "spec": {"rackRef": "rack-a",
                              "gpu": {"model": "H100-SXM", "count": 8, "memoryBytes": 80 * GiB,
                                      "minPowerWatts": 200, "maxPowerWatts": 700},
                              "basePowerWatts": 2000}})
    return objs


@pytest.fixture
async def client(control_plane: LocalControlPlane) -> AsyncIterator[KubeClient]:
    c = KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    yield c
    await c.aclose()


async def until(check: Any, timeout: float, what: str, *, show: Any = None) -> Any:
    """Until `check()` is truthy; on timeout the failure says what `show()` returns then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.1)
    seen = f"; last: {await asyncio.to_thread(show)}" if show is not None else ""
    raise AssertionError(f"not reached in {timeout} s: {what}{seen}")


def renewed_at(kubectl: Kubectl, ns: str) -> float:
    lease = kubectl.json("get", "leases.coordination.k8s.io", FAILSAFE_LEASE_NAME, "-n", ns)
    return datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00")).timestamp()


def every_node(limit: int) -> dict[str, int | None]:
    return {f"n{i}": limit for i in range(3)}


@dataclass
class Agents:
    """The site's three agents in one Fleet, each node's GPUs an IdleGPUs."""

    fleet: Fleet
    backends: dict[str, IdleGPUs] = field(default_factory=dict)

    def limits(self) -> dict[str, int | None]:
        return {n: b.limit for n, b in sorted(self.backends.items())}


@dataclass
class Verdicts:
    """When the site's fail-safe verdict was seen on, sampled well inside the agents' own judging
    period."""

    fleet: Fleet
    tripped: list[float] = field(default_factory=list)

    async def watch(self) -> None:
        while True:
            if self.fleet.failsafe:
                self.tripped.append(time.time())
            await asyncio.sleep(0.05)


StartAgents = Callable[..., Agents]


@pytest.fixture
async def agents(kubectl: Kubectl, namespace: str, client: KubeClient) -> AsyncIterator[StartAgents]:
    """The site applied; `agents(**fleet_options)` starts its agents (through `client=` another
    client if given) and the teardown stops them."""
    kubectl.apply(site(namespace), namespace=namespace)
    tasks: list[asyncio.Task[None]] = []

    def start(*, via: KubeClient | None = None, **options: Any) -> Agents:
        backends: dict[str, IdleGPUs] = {}

        def factory(name: str, obj: dict[str, Any]) -> IdleGPUs:
            backends[name] = IdleGPUs()
            return backends[name]

        made = Agents(Fleet(via or client, namespace, factory, interval=INTERVAL, sample_interval=0.5,
                            **options), backends)
        tasks.append(asyncio.create_task(made.fleet.run()))
        return made

    yield start
    for task in tasks:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
async def lone_operator(agents: StartAgents, namespace: str, control_plane: LocalControlPlane,
                        tmp_path: Path) -> AsyncIterator[tuple[OperatorProcess, Agents]]:
    """One operator renewing the fail-safe Lease every second (duration 3 s) and the agents that
    give up on it after FAILSAFE_AFTER, spread over SPREAD, every agent at its limit."""
    op = OperatorProcess(control_plane, tmp_path, "-n", namespace, "--lease-duration", "3").start()
    try:
        site_agents = agents(failsafe_after=FAILSAFE_AFTER, failsafe_spread=SPREAD)
        await until(lambda: site_agents.limits() == every_node(LIMIT), 30,
                    "every agent at its oversubscribed limit")
        yield op, site_agents
    finally:
        op.stop()


async def test_agents_fall_back_to_safe_limits_while_the_operator_is_gone(
        kubectl: Kubectl, namespace: str, lone_operator: tuple[OperatorProcess, Agents]) -> None:
    op, site_agents = lone_operator
    fleet, backends = site_agents.fleet, site_agents.backends
    status = kubectl.json("get", "gpunode", "n0", "-n", namespace)["status"]
    assert (status["powerLimitWatts"], status["safeLimitWatts"]) == (LIMIT, SAFE)
    assert "peakPowerWatts" in status["telemetry"]
    lease = kubectl.json("get", "leases.coordination.k8s.io", FAILSAFE_LEASE_NAME, "-n", namespace)
    assert lease["spec"]["leaseDurationSeconds"] == 3 and lease["spec"]["holderIdentity"]
    first = renewed_at(kubectl, namespace)
    await until(lambda: renewed_at(kubectl, namespace) > first, 10, "the Lease renewed")
    assert not fleet.failsafe

    # The operator goes: no more renewals.
    op.stop()
    last = renewed_at(kubectl, namespace)
    await until(lambda: site_agents.limits() == every_node(SAFE), FAILSAFE_AFTER + 20,
                "every agent at its safe limit")
    assert fleet.failsafe
    for name, b in backends.items():
        fell_at = next(t for t, w in reversed(b.changes) if w == SAFE)
        # not before the lapse, and within failsafe-after, the spread and one interval of the
        # last renewal; each at its own offset in the spread
        offset = failsafe_offset(name, SPREAD)
        assert FAILSAFE_AFTER + offset <= fell_at - last <= FAILSAFE_AFTER + SPREAD + INTERVAL, (
            name, fell_at - last)

    # The operator returns: the first renewal the agents see lifts the fail-safe.
    op.start()
    await until(lambda: site_agents.limits() == every_node(LIMIT), 30, "every agent back")
    back = renewed_at(kubectl, namespace)
    assert not fleet.failsafe
    for b in backends.values():
        returned = b.changes[-1][0]
        # within a renewal period, the spread and an interval of the renewal seen last
        assert b.changes[-1][1] == LIMIT and returned - back <= 3 + SPREAD + INTERVAL


async def test_a_hung_operator_is_a_gone_one_to_the_agents(
        lone_operator: tuple[OperatorProcess, Agents]) -> None:
    """SIGSTOP: the process lives, holds its connections and renews nothing. The agents judge the
    Lease by what they see move, so they fall back as for a dead operator; SIGCONT lifts it."""
    op, site_agents = lone_operator
    assert op.proc is not None
    op.proc.send_signal(signal.SIGSTOP)
    try:
        hung_at = time.time()
        await until(lambda: site_agents.limits() == every_node(SAFE), FAILSAFE_AFTER + 20,
                    "every agent at its safe limit while the operator hangs")
        assert op.alive and time.time() - hung_at <= FAILSAFE_AFTER + SPREAD + 3 + INTERVAL + 2
    finally:
        op.proc.send_signal(signal.SIGCONT)
    await until(lambda: site_agents.limits() == every_node(LIMIT), 30, "every agent back")
    assert not site_agents.fleet.failsafe


async def test_an_api_server_down_is_an_operator_gone_to_the_agents(
        control_plane: LocalControlPlane, lone_operator: tuple[OperatorProcess, Agents]) -> None:
    """kube-apiserver killed: nothing is read or written, and the GPUs keep their limits until the
    agents, judging on their own clocks, have seen no renewal for FAILSAFE_AFTER; then each falls
    back at its offset in the spread without any request succeeding. The server back, the operator
    renews the Lease again and the agents return to their limits."""
    op, site_agents = lone_operator
    settled = {n: len(b.changes) for n, b in site_agents.backends.items()}
    await asyncio.to_thread(control_plane.stop_apiserver, kill=True)
    try:
        down = time.time()
        await asyncio.sleep(FAILSAFE_AFTER / 2)
        assert site_agents.limits() == every_node(LIMIT) and not site_agents.fleet.failsafe
        await until(lambda: site_agents.limits() == every_node(SAFE), FAILSAFE_AFTER + SPREAD + 10,
                    "every agent at its safe limit while the API server is down",
                    show=site_agents.limits)
        fell = max(b.changes[-1][0] for b in site_agents.backends.values()) - down
        assert fell <= FAILSAFE_AFTER + SPREAD + INTERVAL + 1, fell  # the last renewal came before `down`
    finally:
        await asyncio.to_thread(control_plane.start_apiserver)
    await until(lambda: site_agents.limits() == every_node(LIMIT), 40, "every agent back",
                show=site_agents.limits)
    assert op.alive and not site_agents.fleet.failsafe
    moves = {n: [w for _, w in b.changes[settled[n]:]] for n, b in site_agents.backends.items()}
    assert moves == {n: [SAFE, LIMIT] for n in moves}, moves


async def test_a_failover_between_replicas_never_trips_the_agents_failsafe(
        kubectl: Kubectl, namespace: str, control_plane: LocalControlPlane, agents: StartAgents,
        tmp_path: Path) -> None:
    """Two replicas on the leader-election Lease and the agents at the shipped durations (leader
    Lease 10 s, renew deadline 7 s, retry 1 s; fail-safe Lease 15 s, renewed every 5 s; fail-safe
    after 30 s): the active replica killed (SIGKILL), the standby takes over within the leader
    Lease plus two jittered tries and renews the fail-safe Lease before any agent trips; then the new active
    replica stopped (SIGTERM), it releases the leader Lease and a third takes over at its next try.
    No agent enters the fail-safe at any moment, and every GPU keeps its limit."""
    election = ("-n", namespace, "--leader-election", "sg-failover")
    replicas: list[OperatorProcess] = []

    def replica() -> OperatorProcess:
        op = OperatorProcess(control_plane, tmp_path, *election).start()
        replicas.append(op)
        return op

    site_agents = agents()
    fleet, backends, limits = site_agents.fleet, site_agents.backends, site_agents.limits
    assert fleet.failsafe_after == kinds.DEFAULT_FAILSAFE_AFTER_SECONDS == 30
    verdicts = Verdicts(fleet)
    tripped = verdicts.tripped
    watcher = asyncio.create_task(verdicts.watch())

    async def renewed_after(at: float, what: str) -> float:
        """The first renewal of the fail-safe Lease after `at`, once the agents have seen it (within
        their judging period, at most a second)."""
        first = await until(lambda: (r := renewed_at(kubectl, namespace)) > at and r, 40, what)
        await asyncio.sleep(1.5)
        return float(first)

    try:
        first = replica()
        await until(first.active, 30, "the first replica active")
        second = replica()
        await until(lambda: limits() == every_node(LIMIT), 30, "every agent at its limit")
        assert not second.active()
        settled = {n: len(b.changes) for n, b in backends.items()}

        first.kill()
        killed = time.time()
        await until(lambda: tripped or second.active(), 60, "the standby to take over after SIGKILL")
        took_over = time.time() - killed
        assert not tripped, f"an agent entered the fail-safe {tripped[0] - killed:.1f}s after the kill"
        renewed = await renewed_after(killed, "the fail-safe Lease renewed by the new active replica")
        print(f"\nSIGKILL: active {took_over:.1f}s and the fail-safe Lease renewed "
              f"{renewed - killed:.1f}s after the kill (agents trip at "
              f"{fleet.failsafe_after:.0f}s after the last renewal they saw)")
        assert not tripped, f"an agent entered the fail-safe {tripped[0] - killed:.1f}s after the kill"

        third = replica()
        await asyncio.sleep(3.0)  # a few of the standby's tries: it stays put
        assert second.active() and not third.active()
        stopped = time.time()
        assert second.stop() == 0
        await until(lambda: tripped or third.active(), 60, "the standby to take over after SIGTERM")
        took_over = time.time() - stopped
        assert not tripped, f"an agent entered the fail-safe {tripped[0] - stopped:.1f}s after the stop"
        renewed = await renewed_after(stopped, "the fail-safe Lease renewed after the clean handover")
        print(f"SIGTERM: active {took_over:.1f}s and the fail-safe Lease renewed "
              f"{renewed - stopped:.1f}s after the stop")
        assert not tripped, f"an agent entered the fail-safe {tripped[0] - stopped:.1f}s after the stop"
        # Nobody touched a GPU across both failovers.
        changed = {n: b.changes[settled[n]:] for n, b in backends.items() if b.changes[settled[n]:]}
        assert not changed, changed
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
        for op in replicas:
            if op.alive:
                op.kill()


async def test_with_an_up_rate_agents_leave_the_fail_safe_at_it(
        kubectl: Kubectl, namespace: str, control_plane: LocalControlPlane, client: KubeClient,
        tmp_path: Path) -> None:
    """The site rises at 240 W/s over its 24 GPUs: each slice says 10 W/s a GPU. The operator gone,
    the agents fall to their safe limits (spread as usual); back, they leave together and rise
    from 500 W to 687 W a GPU at 10 W/s (about 19 s), not in one step."""
    objs = site(namespace)
    objs[0]["spec"]["power"]["rampUpWattsPerSecond"] = 240
    kubectl.apply(objs, namespace=namespace)
    op = OperatorProcess(control_plane, tmp_path, "-n", namespace, "--lease-duration", "3").start()
    backends: dict[str, IdleGPUs] = {}

    def factory(name: str, obj: dict[str, Any]) -> IdleGPUs:
        backends[name] = IdleGPUs()
        return backends[name]

    fleet = Fleet(client, namespace, factory, interval=INTERVAL, failsafe_after=FAILSAFE_AFTER,
                  sample_interval=0.5, failsafe_spread=SPREAD)
    task = asyncio.create_task(fleet.run())
    try:
        def limits() -> dict[str, int | None]:
            return {n: b.limit for n, b in sorted(backends.items())}

        await until(lambda: limits() == {f"n{i}": LIMIT for i in range(3)}, 30, "every agent at its limit")
        slices = kubectl.json("get", "powerlimitslices", "-n", namespace)["items"]
        assert [s["spec"].get("failsafeExitWattsPerSecond") for s in slices] == [10]
        op.stop()
        await until(lambda: limits() == {f"n{i}": SAFE for i in range(3)}, FAILSAFE_AFTER + 20,
                    "every agent at its safe limit")
        op.start()
        await until(lambda: limits() == {f"n{i}": LIMIT for i in range(3)}, 60, "every agent back")
        lefts = []
        for name, b in backends.items():
            fell = max(i for i, (_, w) in enumerate(b.changes) if w == SAFE)
            rise = b.changes[fell + 1:]
            left = b.changes[fell + 1][0] - 1.0  # its first step came within a second of leaving
            lefts.append(left)
            assert len({w for _, w in rise}) >= 8, (name, rise)  # in steps, not one
            assert rise[-1][0] - rise[0][0] >= 15, (name, rise)  # 187 W at 10 W/s: about 19 s
            for t, w in rise:
                assert w - SAFE <= 10 * (t - left) + 10, (name, t - left, w)
        assert max(lefts) - min(lefts) <= 2.0, lefts  # together, not spread
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        op.stop()


NEW_LIMIT = 575  # (18000 * 1.10 - 10800) / 3 / 8 + 200: the site's oversubscription cut to 10 %
SLOW_LEASE = 6  # --lease-duration: the fail-safe Lease renewed every 2 s
SLOW_FAILSAFE_AFTER = 8.0


def node_statuses(kubectl: Kubectl, ns: str) -> dict[str, tuple[Any, ...]]:
    out = {}
    for item in kubectl.json("get", "gpunodes", "-n", ns)["items"]:
        status = item.get("status") or {}
        applied = next((c["status"] for c in status.get("conditions") or []
                        if c["type"] == "PowerLimitApplied"), None)
        out[item["metadata"]["name"]] = (status.get("powerLimitWatts"),
                                         (status.get("telemetry") or {}).get("enforcedLimitWatts"), applied)
    return out


@dataclass
class Proxied:
    """The operator (with leader election, at its shipped durations, the fail-safe Lease renewed
    every 2 s) and the agents (fail-safe after SLOW_FAILSAFE_AFTER) reaching the real API server
    through a SlowProxy, every agent at its limit, the site's verdict watched."""

    proxy: SlowProxy
    op: OperatorProcess
    agents: Agents
    client: KubeClient  # the agents'
    verdicts: Verdicts
    settled: dict[str, int]  # each backend's limit changes when it was handed over

    def moves(self) -> dict[str, list[int]]:
        return {n: [w for _, w in b.changes[self.settled[n]:]] for n, b in self.agents.backends.items()}


@pytest.fixture
async def proxied(agents: StartAgents, namespace: str, control_plane: LocalControlPlane,
                  tmp_path: Path) -> AsyncIterator[Proxied]:
    proxy = SlowProxy.of(control_plane).start()
    config = proxy.kubeconfig(tmp_path / "proxied-kubeconfig")
    client = KubeClient.from_kubeconfig(str(config))
    op = OperatorProcess(control_plane, tmp_path, "-n", namespace, "--lease-duration", str(SLOW_LEASE),
                         "--leader-election", "sg-proxied", kubeconfig=config)
    watcher: asyncio.Task[None] | None = None
    try:
        op.start()
        site_agents = agents(via=client, failsafe_after=SLOW_FAILSAFE_AFTER, failsafe_spread=SPREAD)
        verdicts = Verdicts(site_agents.fleet)
        watcher = asyncio.create_task(verdicts.watch())
        await until(lambda: site_agents.limits() == every_node(LIMIT), 30, "every agent at its limit")
        yield Proxied(proxy, op, site_agents, client, verdicts,
                      {n: len(b.changes) for n, b in site_agents.backends.items()})
    finally:
        if watcher is not None:
            watcher.cancel()
            with pytest.raises(asyncio.CancelledError):
                await watcher
        proxy.delay = 0.0
        proxy.refuse(False)
        op.stop()
        await client.aclose()
        proxy.stop()


async def test_a_slow_api_server_keeps_the_limits_and_the_statuses_catch_up(
        kubectl: Kubectl, namespace: str, proxied: Proxied) -> None:
    """Every byte held 1.5 s each way: every request is answered 3 s late, a watch's events arrive
    1.5 s late. The fail-safe Lease is still renewed every 2 s plus a round trip, so no agent trips
    (8 s) and no GPU limit moves but to the new limit a change of the site brings, late; once the
    latency goes, every node's status shows that limit applied. Then a slower server (7 s a round
    trip: the leader's renewal no longer fits its renew deadline, and the renewals the agents see
    come further apart than 8 s) is an operator gone to the agents: they fall back to their safe
    limits, and come back when it is fast again."""
    proxy, site_agents, verdicts = proxied.proxy, proxied.agents, proxied.verdicts
    proxy.delay = 1.5
    slowed = time.time()
    await until(lambda: renewed_at(kubectl, namespace) > slowed, 20, "a renewal through the slow proxy")
    kubectl("patch", "sgc", "site", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"power":{"oversubscription":{"percent":10}}}}')
    changed = time.time()
    await until(lambda: site_agents.limits() == every_node(NEW_LIMIT), 60,
                "the new limit at every agent through the slow API server")
    arrived = time.time() - changed
    # Slow for longer than the agents' fail-safe in all.
    await asyncio.sleep(max(0.0, slowed + 2 * SLOW_FAILSAFE_AFTER - time.time()))
    assert proxied.op.active(), proxied.op.log_tail()
    assert not verdicts.tripped, f"fail-safe {verdicts.tripped[0] - slowed:.1f}s after the slowdown"
    moves = proxied.moves()
    assert moves == {n: [NEW_LIMIT] for n in moves}, moves  # never the safe limit

    proxy.delay = 0.0
    fast = time.time()
    await until(lambda: node_statuses(kubectl, namespace) == dict.fromkeys(every_node(0),
                                                                        (NEW_LIMIT, NEW_LIMIT, "True")),
                30, "every node's status: the new limit assigned, enforced and confirmed",
                show=lambda: node_statuses(kubectl, namespace))
    print(f"\n3 s a request: the new limit reached the agents {arrived:.1f}s after the change; "
          f"statuses confirmed {time.time() - fast:.1f}s after the latency went")
    assert not verdicts.tripped

    # Slower than the agents allow.
    proxy.delay = 3.5
    slower = time.time()
    await until(lambda: site_agents.limits() == every_node(SAFE), 40,
                "every agent at its safe limit while renewals come too late")
    tripped = verdicts.tripped[0] - slower
    proxy.delay = 0.0
    await until(lambda: site_agents.limits() == every_node(NEW_LIMIT), 40, "every agent back")
    print(f"7 s a request: fail-safe {tripped:.1f}s after the slowdown")


async def test_an_api_server_refusing_429_is_waited_out(kubectl: Kubectl, namespace: str, proxied: Proxied,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """The API server sheds load: every open connection dropped, every request answered 429 with
    Retry-After 1 s for 3 s. Every client waits it out and retries (no agent's write fails for a
    429: each is retried up to five times, a second apart); the fail-safe Lease is renewed
    once it answers again, within the agents' 8 s, so no GPU limit moves. Refusing for longer than
    the agents' fail-safe is an API server down to them: safe limits, then back."""
    proxy, site_agents, verdicts = proxied.proxy, proxied.agents, proxied.verdicts
    proxy.refuse(True)
    refused = time.time()
    await asyncio.sleep(3)
    proxy.refuse(False)
    # Nothing is written while it refuses: the first renewal dated after `refused` is written once
    # it answers again (dated when its first try was made, retried until then).
    renewal = await until(lambda: (r := renewed_at(kubectl, namespace)) > refused and r, 20,
                          "a renewal once the API server answers again")
    await asyncio.sleep(max(0.0, refused + 2 * SLOW_FAILSAFE_AFTER - time.time()))
    assert proxy.refused > 0 and proxied.client.throttled > 0, (proxy.refused, proxied.client.throttled)
    lost = [r.getMessage() for r in caplog.records if "HTTP 429" in r.getMessage()]
    assert not lost, lost
    assert not verdicts.tripped, f"fail-safe {verdicts.tripped[0] - refused:.1f}s after the 429s began"
    assert proxied.moves() == {n: [] for n in every_node(0)}, proxied.moves()
    assert proxied.op.active(), proxied.op.log_tail()
    print(f"\n429 for 3 s: {proxy.refused} requests refused; the first renewal tried "
          f"{renewal - refused:.1f}s after the refusals began")

    proxy.refuse(True)
    refused = time.time()
    try:
        await until(lambda: site_agents.limits() == every_node(SAFE), SLOW_FAILSAFE_AFTER + SPREAD + 10,
                    "every agent at its safe limit while every request is refused")
        print(f"429 throughout: fail-safe {verdicts.tripped[0] - refused:.1f}s after the refusals began")
    finally:
        proxy.refuse(False)
    await until(lambda: site_agents.limits() == every_node(LIMIT), 40, "every agent back")
