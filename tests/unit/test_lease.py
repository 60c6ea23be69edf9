"""The operator's half of the fail-safe: the Lease it renews in every site
namespace while it is active. The agents' half: tests/unit/test_agent_failsafe.py; the whole of it on the
real API server: tests/integration/test_failsafe.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from stargate_operator.client import ApiError
from stargate_operator.controller.lease import LEASES, LeaseKeeper, micro_time, site_namespaces
from stargate_operator.kinds import FAILSAFE_LEASE_NAME

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class FakeClient:
    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    async def patch(self, resource: Any, namespace: str, name: str, patch: dict[str, Any],
                    subresource: str | None = None) -> Any:
        assert resource == LEASES and name == FAILSAFE_LEASE_NAME
        self.calls.append(("patch", namespace))
        if namespace not in self.leases:
            raise ApiError(404, "not found")
        self.leases[namespace]["spec"].update(patch["spec"])
        return self.leases[namespace]

    async def create(self, resource: Any, namespace: str, body: dict[str, Any]) -> Any:
        self.calls.append(("create", namespace))
        self.leases[namespace] = body
        return body


async def test_the_keeper_makes_and_renews_a_lease_per_site_namespace() -> None:
    client = FakeClient()
    store = {"site-a": [{"kind": "GPUNode"}, {"kind": "StargateCluster"}], "no-site": [{"kind": "Rack"}]}
    namespaces = site_namespaces(lambda: list(store), lambda ns: cast(list[dict[str, object]], store[ns]))
    assert namespaces() == ["site-a"]
    clock = iter([NOW, NOW + timedelta(seconds=5)])
    keeper = LeaseKeeper(cast(Any, client), namespaces, asyncio.Event(), lambda: True, holder="op-1",
                         duration_s=15, clock=lambda: next(clock))
    assert keeper.every == 5.0
    assert await keeper.renew_all() == 1
    assert client.calls == [("patch", "site-a"), ("create", "site-a")]
    spec = client.leases["site-a"]["spec"]
    assert spec == {"holderIdentity": "op-1", "leaseDurationSeconds": 15,
                    "acquireTime": "2026-06-01T12:00:00.000000Z", "renewTime": "2026-06-01T12:00:00.000000Z"}
    await keeper.renew_all()
    assert client.calls[-1] == ("patch", "site-a")
    assert spec["renewTime"] == micro_time(NOW + timedelta(seconds=5))
    assert spec["acquireTime"] == micro_time(NOW)  # held since the first renewal


async def test_a_standby_never_renews() -> None:
    client = FakeClient()
    active = asyncio.Event()
    keeper = LeaseKeeper(cast(Any, client), lambda: ["site-a"], active, lambda: True, duration_s=1)
    task = asyncio.create_task(keeper.run())
    await asyncio.sleep(0.7)
    assert client.calls == []
    active.set()
    for _ in range(50):
        if client.calls:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    assert client.calls[:2] == [("patch", "site-a"), ("create", "site-a")]
