"""The hot-path client against the real API server: watch echoes of our own writes go undecoded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from helpers.site import cluster
from stargate_operator.kube import GROUP_PATH, KubeClient
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration


async def _create(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    body = cluster(name)
    body["metadata"]["namespace"] = namespace
    obj: dict[str, Any] = await client.request(
        "POST", f"{GROUP_PATH}/namespaces/{namespace}/stargateclusters", verb="create", body=body)
    return obj


async def test_known_versions_come_as_bookmarks_and_others_decoded(
        control_plane: LocalControlPlane, namespace: str) -> None:
    client = KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    try:
        first = await _create(client, namespace, "a")
        _, list_rv = await client.list("stargateclusters", namespace)
        asked: list[bytes] = []
        own: set[bytes] = set()

        def is_known(rv: bytes) -> bool:
            asked.append(rv)
            return rv in own

        # Our write (its version is "known") and someone else's (not known).
        ours = await client.patch_status("stargateclusters", namespace, "a",
                                         {"observedGeneration": 1})
        own.add(ours["metadata"]["resourceVersion"].encode())
        theirs = await _create(client, namespace, "b")

        events: list[dict[str, Any]] = []

        async def collect() -> None:
            async for ev in client.watch("stargateclusters", namespace, list_rv, timeout_seconds=30,
                                         is_known=is_known):
                events.append(ev)
                if ev["type"] == "ADDED":
                    return

        await asyncio.wait_for(collect(), 20)
        by_type = {ev["type"]: ev for ev in events}
        # The echo of our write: only its resourceVersion, as a bookmark, nothing decoded.
        ours_rv = ours["metadata"]["resourceVersion"]
        assert by_type["BOOKMARK"] == {"type": "BOOKMARK",
                                       "object": {"metadata": {"resourceVersion": ours_rv}}}
        # The other writer's event: decoded in full.
        added = by_type["ADDED"]["object"]
        assert added["metadata"]["name"] == "b"
        assert added["metadata"]["resourceVersion"] == theirs["metadata"]["resourceVersion"]
        assert added["spec"] == theirs["spec"]
        # The resourceVersion read from the raw line is the object's own, for both events.
        assert asked == [ours["metadata"]["resourceVersion"].encode(),
                         theirs["metadata"]["resourceVersion"].encode()]
        assert first["metadata"]["resourceVersion"].encode() not in asked  # listed, not watched
    finally:
        await client.aclose()
