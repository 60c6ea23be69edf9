"""The fail-safe on the real API server: the operator renews a Lease in the site's
namespace; stop it and every agent falls back to min(limit, safeLimitWatts) within failsafe-after
plus one interval of the last renewal; start it again and they return to their limits.

The site is oversubscribed 25 % and its nodes idle (a backend reading 100 W a GPU), so nothing caps:
each node's limit (687 W a GPU, from 125 % of the budget) is above its safe limit (500 W, the same
tree with no oversubscription), and the two are told apart at the GPUs."""

from __future__ import annotations

import asyncio
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
from stargate_operator.client import KubeClient
from stargate_operator.kinds import FAILSAFE_LEASE_NAME
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration

GiB = 2**30
FAILSAFE_AFTER = 4.0
INTERVAL = 1.0
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
                  sample_interval=0.5)
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
            # not before the lapse, and within failsafe-after plus one interval of the last renewal
            assert FAILSAFE_AFTER <= fell_at - last <= FAILSAFE_AFTER + INTERVAL, (name, fell_at - last)

        # The operator returns: the first renewal the agents see lifts the fail-safe.
        op.start()
        await until(lambda: limits() == {f"n{i}": LIMIT for i in range(3)}, 30, "every agent back")
        back = renewed_at(kubectl, namespace)
        assert not fleet.failsafe
        for b in backends.values():
            returned = b.changes[-1][0]
            # within a renewal period and an interval of the renewal seen last
            assert b.changes[-1][1] == LIMIT and returned - back <= 3 + INTERVAL
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        op.stop()
