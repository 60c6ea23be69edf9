"""The hot-path client against the real API server: watch echoes of our own writes go undecoded;
apply, create and delete for any resource (core group, cluster-scoped, ours); the one informer
for any resource (429 Too Many Requests: tests/unit/test_client_throttling.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from helpers.site import cluster
from stargate_operator import kinds
from stargate_operator.client import (
    CONFIGMAPS,
    NODES,
    ApiError,
    ApiResource,
    KubeClient,
    run_informer,
)
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration

CLUSTERS = ApiResource.of(kinds.STARGATE_CLUSTER)


async def _create(client: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    body = cluster(name)
    body["metadata"]["namespace"] = namespace
    obj: dict[str, Any] = await client.request(
        "POST", CLUSTERS.path(namespace), verb="create", body=body)
    return obj


async def test_known_versions_come_as_bookmarks_and_others_decoded(
        control_plane: LocalControlPlane, namespace: str) -> None:
    client = KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    try:
        first = await _create(client, namespace, "a")
        _, list_rv = await client.list(CLUSTERS, namespace)
        asked: list[bytes] = []
        own: set[bytes] = set()

        def is_known(rv: bytes) -> bool:
            asked.append(rv)
            return rv in own

        # Our write (its version is "known") and someone else's (not known).
        ours = await client.patch_status(CLUSTERS, namespace, "a",
                                         {"observedGeneration": 1})
        own.add(ours["metadata"]["resourceVersion"].encode())
        theirs = await _create(client, namespace, "b")

        events: list[dict[str, Any]] = []

        async def collect() -> None:
            async for ev in client.watch(CLUSTERS, namespace, list_rv, timeout_seconds=30,
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


# -- apply, create, delete for any resource ------------------------------------------------------

RACKS = ApiResource.of(kinds.RACK)


def _managers(obj: dict[str, Any]) -> set[str]:
    return {m["manager"] for m in obj["metadata"].get("managedFields", [])}


async def test_create_apply_delete_in_the_core_group_and_ours(
        control_plane: LocalControlPlane, namespace: str) -> None:
    client = KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    try:
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"a": "1"}}
        made = await client.create(CONFIGMAPS, namespace, cm)
        assert made["metadata"]["namespace"] == namespace and made["data"] == {"a": "1"}
        with pytest.raises(ApiError) as exists:
            await client.create(CONFIGMAPS, namespace, cm)
        assert exists.value.status == 409
        # Server-side apply: the manager's whole intent; a field it no longer applies is removed.
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c2", "namespace": namespace},
                "data": {"x": "1", "y": "2"}}
        first = await client.apply(CONFIGMAPS, namespace, "c2", body, field_manager="stargate-test",
                                   force=True)
        assert first["data"] == {"x": "1", "y": "2"} and "stargate-test" in _managers(first)
        again = await client.apply(CONFIGMAPS, namespace, "c2", {**body, "data": {"x": "3"}},
                                   field_manager="stargate-test", force=True)
        assert again["data"] == {"x": "3"}
        # A stargate kind, by the registry's resource.
        rack = {"apiVersion": kinds.API_VERSION, "kind": "Rack",
                "metadata": {"name": "r1", "namespace": namespace},
                "spec": {"clusterRef": "site", "maxPowerWatts": 1000}}
        applied = await client.apply(RACKS, namespace, "r1", rack, field_manager="stargate-test", force=True)
        assert applied["spec"]["priority"] == kinds.DEFAULT_RACK_PRIORITY  # the CRD's default
        gone = await client.delete(CONFIGMAPS, namespace, "c1")
        assert gone is not None
        with pytest.raises(ApiError) as missing:
            await client.get(CONFIGMAPS, namespace, "c1")
        assert missing.value.status == 404
        with pytest.raises(ApiError) as again_gone:
            await client.delete(CONFIGMAPS, namespace, "c1")
        assert again_gone.value.status == 404
        # A uid precondition: an object re-created under the name is not the one to delete.
        old_uid = applied["metadata"]["uid"]
        await client.delete(RACKS, namespace, "r1", uid=old_uid)
        await client.create(RACKS, namespace, rack)
        with pytest.raises(ApiError) as other:
            await client.delete(RACKS, namespace, "r1", uid=old_uid)
        assert other.value.status == 409
        assert client.requests[("patch", "configmaps")] == 2 and client.requests[("delete", "racks")] == 2
    finally:
        await client.aclose()


async def test_apply_without_force_conflicts_with_another_manager(
        control_plane: LocalControlPlane, namespace: str) -> None:
    client = KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    try:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": namespace},
                "data": {"owner": "a"}}
        await client.apply(CONFIGMAPS, namespace, "c", body, field_manager="manager-a", force=True)
        taken = {**body, "data": {"owner": "b"}}
        with pytest.raises(ApiError) as conflict:
            await client.apply(CONFIGMAPS, namespace, "c", taken, field_manager="manager-b", force=False)
        assert conflict.value.status == 409 and "manager-a" in str(conflict.value)
        forced = await client.apply(CONFIGMAPS, namespace, "c", taken, field_manager="manager-b", force=True)
        assert forced["data"] == {"owner": "b"}
    finally:
        await client.aclose()


async def test_a_cluster_scoped_core_resource(control_plane: LocalControlPlane, namespace: str) -> None:
    client = KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    name = f"gpu-{namespace}"
    try:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"nvidia.com/gpu.count": "8"}}}
        # A namespace given for a cluster-scoped resource is not put in its path.
        out = await client.apply(NODES, namespace, name, node, field_manager="stargate-test", force=True)
        assert out["metadata"]["labels"]["nvidia.com/gpu.count"] == "8" and "namespace" not in out["metadata"]
        items, _ = await client.list(NODES, None,
                                     field_selector=f"metadata.name={name}")
        assert [i["metadata"]["name"] for i in items] == [name] and items[0]["kind"] == "Node"
    finally:
        with contextlib.suppress(ApiError):
            await client.delete(NODES, None, name)
        await client.aclose()


async def test_one_informer_lists_then_watches_any_resource(
        control_plane: LocalControlPlane, namespace: str) -> None:
    client = KubeClient.from_kubeconfig(str(control_plane.kubeconfig))
    listed: list[list[str]] = []
    events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    synced = asyncio.Event()
    try:
        await client.create(CONFIGMAPS, namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                                                    "metadata": {"name": "before"}})
        task = asyncio.create_task(run_informer(
            client, CONFIGMAPS, namespace, lambda kind, ns, items: listed.append(
                [f"{kind}/{i['metadata']['name']}" for i in items]),
            lambda t, o: events.put_nowait((t, o)), synced))
        try:
            await asyncio.wait_for(synced.wait(), 20)
            assert listed == [["ConfigMap/before"]]
            await client.create(CONFIGMAPS, namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                                                        "metadata": {"name": "after"}})
            await client.delete(CONFIGMAPS, namespace, "before")
            seen = [await asyncio.wait_for(events.get(), 20) for _ in range(2)]
            assert [(t, o["kind"], o["apiVersion"], o["metadata"]["name"]) for t, o in seen] == [
                ("ADDED", "ConfigMap", "v1", "after"), ("DELETED", "ConfigMap", "v1", "before")]
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        await client.aclose()
