"""The hot-path client against the real API server: watch echoes of our own writes go undecoded;
apply, create and delete for any resource (core group, cluster-scoped, ours); the one informer
for any resource. And 429 Too Many Requests, against a tiny local HTTP server that sends it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web

from helpers.site import cluster
from stargate_operator import kinds
from stargate_operator.client import (
    CONFIGMAPS,
    NODES,
    ApiError,
    ApiResource,
    Connection,
    KubeClient,
    run_informer,
)
from stargate_operator.client.asyncclient import MAX_RETRY_AFTER_SECONDS, retry_after_seconds
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
            await client.get("configmaps", namespace, "c1", group_path="/api/v1")
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


# -- 429 Too Many Requests -----------------------------------------------------------------------

class Throttling:
    """A tiny HTTP server that answers 429 (with the given Retry-After values) before it answers."""

    def __init__(self, retry_after: list[str | None]) -> None:
        self.retry_after = retry_after
        self.seen: list[tuple[str, str]] = []
        self._left: dict[str, int] = {}

    def reset(self) -> None:
        self.seen.clear()
        self._left.clear()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = f"{request.method} {request.path}"
        self.seen.append((request.method, request.path_qs))
        left = self._left.setdefault(key, len(self.retry_after))
        if left > 0:
            self._left[key] = left - 1
            value = self.retry_after[len(self.retry_after) - left]
            headers = {"Retry-After": value} if value is not None else {}
            return web.json_response({"kind": "Status", "code": 429, "message": "slow down"}, status=429,
                                     headers=headers)
        if request.query.get("watch"):
            resp = web.StreamResponse()
            await resp.prepare(request)
            rack = {"kind": "Rack", "metadata": {"name": "r", "resourceVersion": "7"}}
            line = {"type": "ADDED", "object": rack}
            await resp.write(json.dumps(line).encode() + b"\n")
            await resp.write_eof()
            return resp
        if request.method == "GET" and not request.path.endswith("/r"):
            return web.json_response({"kind": "RackList", "apiVersion": kinds.API_VERSION,
                                      "metadata": {"resourceVersion": "5"}, "items": []})
        return web.json_response({"kind": "Rack", "metadata": {"name": "r", "resourceVersion": "6"}})


@pytest.fixture
async def throttling() -> AsyncIterator[tuple[Throttling, str]]:
    server = Throttling(["1", "3600"])  # one wait of a second, then one far too long
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield server, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _client(url: str, waits: list[float], retries: int = 5) -> KubeClient:
    async def record(seconds: float) -> None:
        waits.append(seconds)

    return KubeClient(Connection(url, False), max_throttle_retries=retries, sleep=record)


async def test_every_verb_waits_out_429_with_retry_after_capped(throttling: tuple[Throttling, str]) -> None:
    server, url = throttling
    calls: list[tuple[str, Callable[[KubeClient], Awaitable[Any]]]] = [
        ("get", lambda c: c.get(RACKS, "ns", "r")),
        ("list", lambda c: c.list(RACKS, "ns")),
        ("create", lambda c: c.create(RACKS, "ns", {"metadata": {"name": "r"}})),
        ("apply", lambda c: c.apply(RACKS, "ns", "r", {"metadata": {"name": "r"}}, field_manager="m",
                                 force=True)),
        ("patch", lambda c: c.patch(RACKS, "ns", "r", {"spec": {}})),
        ("patch_status", lambda c: c.patch_status(RACKS, "ns", "r", {"x": 1})),
        ("delete", lambda c: c.delete(RACKS, "ns", "r")),
        ("create_event", lambda c: c.create_event(namespace="ns", involved={}, type_="Normal", reason="R",
                                                  message="m")),
    ]
    for verb, call in calls:
        server.reset()
        waits: list[float] = []
        client = _client(url, waits)
        try:
            out = await call(client)
        finally:
            await client.aclose()
        assert out is not None, verb
        assert waits == [1.0, MAX_RETRY_AFTER_SECONDS], verb
        assert client.throttled == 2 and len(server.seen) == 3, verb  # two refused, one answered
    # The watch too: throttled at connect, then its events.
    server.reset()
    waits = []
    client = _client(url, waits)
    try:
        events = [ev async for ev in client.watch(RACKS, "ns", "5")]
    finally:
        await client.aclose()
    assert waits == [1.0, MAX_RETRY_AFTER_SECONDS] and [e["type"] for e in events] == ["ADDED"]
    assert len(server.seen) == 3


async def test_429_retries_are_bounded(throttling: tuple[Throttling, str]) -> None:
    server, url = throttling
    server.retry_after = [None] * 10  # refuses ten times; no Retry-After: a second each
    waits: list[float] = []
    client = _client(url, waits, retries=3)
    try:
        with pytest.raises(ApiError) as refused:
            await client.get(RACKS, "ns", "r")
    finally:
        await client.aclose()
    assert refused.value.status == 429 and "slow down" in str(refused.value)
    assert waits == [1.0, 1.0, 1.0] and len(server.seen) == 4


def test_retry_after_values() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("120") == MAX_RETRY_AFTER_SECONDS
    assert retry_after_seconds(None) == 1.0 and retry_after_seconds("soon") == 1.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 15.0 <= retry_after_seconds(later) <= 20.0  # an HTTP date
