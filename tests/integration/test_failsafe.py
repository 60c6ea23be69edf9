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
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from helpers.kube import Kubectl
from helpers.operator_process import OperatorProcess
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
    """Eight GPUs drawing 100 W each whatever their limit; records when each limit was set."""

    blocking = False

    def __init__(self) -> None:
        self.limit: int | None = None
        self.changes: list[tuple[float, int]] = []  # (wall time, limit)

    def read(self, spec: dict[str, Any], annotations: dict[str, str]) -> NodeReading:
        limit = float(self.limit) if self.limit is not None else None
        return NodeReading(tuple(GPUReading(index=i, power_watts=100.0, limit_watts=limit,
                                            limit_range_watts=(200.0, 700.0))
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


async def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached in {timeout} s: {what}")


def renewed_at(kubectl: Kubectl, ns: str) -> float:
    lease = kubectl.json("get", "leases.coordination.k8s.io", FAILSAFE_LEASE_NAME, "-n", ns)
    return datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00")).timestamp()


async def test_agents_fall_back_to_safe_limits_while_the_operator_is_gone(
        kubectl: Kubectl, namespace: str, control_plane: LocalControlPlane, client: KubeClient,
        tmp_path: Path) -> None:
    kubectl.apply(site(namespace), namespace=namespace)
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

        try:
            await until(lambda: limits() == {f"n{i}": LIMIT for i in range(3)}, 30,
                        "every agent at its oversubscribed limit")
        except AssertionError as e:
            status = kubectl.json("get", "gpunode", "n0", "-n", namespace)["status"]
            site_status = kubectl.json("get", "sgc", "site", "-n", namespace).get("status")
            raise AssertionError(f"{e}: {limits()}, {status}, {site_status}, {op.log_tail()}") from None
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
        await until(lambda: limits() == {f"n{i}": SAFE for i in range(3)}, FAILSAFE_AFTER + 20,
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
        await until(lambda: limits() == {f"n{i}": LIMIT for i in range(3)}, 30, "every agent back")
        back = renewed_at(kubectl, namespace)
        assert not fleet.failsafe
        for b in backends.values():
            returned = b.changes[-1][0]
            # within a renewal period, the spread and an interval of the renewal seen last
            assert b.changes[-1][1] == LIMIT and returned - back <= 3 + SPREAD + INTERVAL
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        op.stop()


async def test_a_hung_operator_is_a_gone_one_to_the_agents(
        kubectl: Kubectl, namespace: str, control_plane: LocalControlPlane, client: KubeClient,
        tmp_path: Path) -> None:
    """SIGSTOP: the process lives, holds its connections and renews nothing. The agents judge the
    Lease by what they see move, so they fall back as for a dead operator; SIGCONT lifts it."""
    kubectl.apply(site(namespace), namespace=namespace)
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
        assert op.proc is not None
        op.proc.send_signal(signal.SIGSTOP)
        try:
            hung_at = time.time()
            await until(lambda: limits() == {f"n{i}": SAFE for i in range(3)}, FAILSAFE_AFTER + 20,
                        "every agent at its safe limit while the operator hangs")
            assert op.alive and time.time() - hung_at <= FAILSAFE_AFTER + SPREAD + 3 + INTERVAL + 2
        finally:
            op.proc.send_signal(signal.SIGCONT)
        await until(lambda: limits() == {f"n{i}": LIMIT for i in range(3)}, 30, "every agent back")
        assert not fleet.failsafe
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        op.stop()


async def test_a_failover_between_replicas_never_trips_the_agents_failsafe(
        kubectl: Kubectl, namespace: str, control_plane: LocalControlPlane, client: KubeClient,
        tmp_path: Path) -> None:
    """Two replicas on the leader-election Lease and the agents at the shipped durations (leader
    Lease 15 s, renew deadline 10 s, retry 2 s; fail-safe Lease 15 s, renewed every 5 s; fail-safe
    after 30 s): the active replica killed (SIGKILL), the standby takes over within the leader
    Lease plus a retry and renews the fail-safe Lease before any agent trips; then the new active
    replica stopped (SIGTERM), it releases the leader Lease and a third takes over at its next try.
    No agent enters the fail-safe at any moment, and every GPU keeps its limit."""
    kubectl.apply(site(namespace), namespace=namespace)
    election = ("-n", namespace, "--leader-election", "sg-failover")
    replicas: list[OperatorProcess] = []

    def replica() -> OperatorProcess:
        op = OperatorProcess(control_plane, tmp_path, *election).start()
        replicas.append(op)
        return op

    backends: dict[str, IdleGPUs] = {}

    def factory(name: str, obj: dict[str, Any]) -> IdleGPUs:
        backends[name] = IdleGPUs()
        return backends[name]

    fleet = Fleet(client, namespace, factory, interval=INTERVAL, sample_interval=0.5)
    assert fleet.failsafe_after == kinds.DEFAULT_FAILSAFE_AFTER_SECONDS == 30
    tripped: list[float] = []

    async def watch_verdict() -> None:
        while True:  # the site's verdict, sampled well inside the agents' own judging period
            if fleet.failsafe:
                tripped.append(time.time())
            await asyncio.sleep(0.05)

    task = asyncio.create_task(fleet.run())
    watcher = asyncio.create_task(watch_verdict())

    def limits() -> dict[str, int | None]:
        return {n: b.limit for n, b in sorted(backends.items())}

    async def renewed_after(at: float, what: str) -> None:
        # The agents see the renewal within their judging period (at most a second).
        await until(lambda: renewed_at(kubectl, namespace) > at, 40, what)
        await asyncio.sleep(1.5)

    try:
        first = replica()
        await until(first.active, 30, "the first replica active")
        second = replica()
        await until(lambda: limits() == {f"n{i}": LIMIT for i in range(3)}, 30, "every agent at its limit")
        assert not second.active()
        settled = {n: len(b.changes) for n, b in backends.items()}

        first.kill()
        killed = time.time()
        await until(lambda: tripped or second.active(), 60, "the standby to take over after SIGKILL")
        assert not tripped, f"an agent entered the fail-safe {tripped[0] - killed:.1f}s after the kill"
        await renewed_after(killed, "the fail-safe Lease renewed by the new active replica")
        print(f"\nSIGKILL: fail-safe Lease renewed {renewed_at(kubectl, namespace) - killed:.1f}s "
              f"after the kill (agents trip at {fleet.failsafe_after:.0f}s)")
        assert not tripped, f"an agent entered the fail-safe {tripped[0] - killed:.1f}s after the kill"

        third = replica()
        await asyncio.sleep(3 * 2.0)  # a few of the standby's tries: it stays put
        assert second.active() and not third.active()
        assert second.stop() == 0
        stopped = time.time()
        await until(lambda: tripped or third.active(), 60, "the standby to take over after SIGTERM")
        assert not tripped, f"an agent entered the fail-safe {tripped[0] - stopped:.1f}s after the stop"
        await renewed_after(stopped, "the fail-safe Lease renewed after the clean handover")
        print(f"SIGTERM: fail-safe Lease renewed {renewed_at(kubectl, namespace) - stopped:.1f}s "
              "after the stop")
        assert not tripped, f"an agent entered the fail-safe {tripped[0] - stopped:.1f}s after the stop"
        # Nobody touched a GPU across both failovers.
        changed = {n: b.changes[settled[n]:] for n, b in backends.items() if b.changes[settled[n]:]}
        assert not changed, changed
    finally:
        for t in (watcher, task):
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
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
