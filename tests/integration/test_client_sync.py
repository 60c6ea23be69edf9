"""client.SyncApi against the real API server: the one synchronous client of the demo, the local
control plane and the test helpers (paths from kinds, pages, apply, the subresource, errors, and the
identities of a kubeconfig)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from helpers.api import obj
from stargate_operator import kinds
from stargate_operator.client import NAMESPACES, ApiError, ApiResource, SyncApi, TransportError
from stargate_operator.localcp.controlplane import LocalControlPlane

pytestmark = pytest.mark.integration

RACKS = ApiResource.of(kinds.RACK)
SELF_REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"


def _rack(name: str, watts: int = 40_000) -> dict[str, Any]:
    return obj("Rack", name, {"clusterRef": "site", "maxPowerWatts": watts})


def _whoami(api: SyncApi) -> dict[str, Any]:
    """The identity the server saw (SelfSubjectReview), to tell which credentials were sent."""
    review = api.call("POST", SELF_REVIEW, {"apiVersion": "authentication.k8s.io/v1",
                                            "kind": "SelfSubjectReview"})
    info: dict[str, Any] = review["status"]["userInfo"]
    return info


def test_objects_from_create_to_delete(control_plane: LocalControlPlane, namespace: str) -> None:
    with control_plane.connect() as api:
        made = api.create(RACKS, namespace, _rack("r1"))  # the namespace comes from the path
        assert made["metadata"]["uid"]
        got = api.get(RACKS, namespace, "r1")
        assert got["spec"]["maxPowerWatts"] == 40_000
        assert got["spec"]["priority"] == kinds.DEFAULT_RACK_PRIORITY, "the CRD's default, from kinds"

        patched = api.patch(RACKS, namespace, "r1", {"spec": {"priority": 900}})
        assert patched["spec"]["priority"] == 900
        status = api.patch(RACKS, namespace, "r1", {"status": {"nodes": 3}}, subresource="status")
        assert status["status"]["nodes"] == 3
        assert api.get(RACKS, namespace, "r1")["metadata"]["generation"] == 2, "status is a subresource"

        with pytest.raises(ApiError) as conflict:
            api.create(RACKS, namespace, _rack("r1"))
        assert conflict.value.status == 409 and "already exists" in conflict.value.text

        api.delete(RACKS, namespace, "r1")
        with pytest.raises(ApiError) as gone:
            api.get(RACKS, namespace, "r1")
        assert gone.value.status == 404
        assert not isinstance(gone.value, TransportError)


def test_apply_is_server_side_with_its_field_manager(control_plane: LocalControlPlane,
                                                     namespace: str) -> None:
    with control_plane.connect() as api:
        body = {**_rack("r2"), "metadata": {"name": "r2", "namespace": namespace}}
        api.apply(RACKS, namespace, "r2", body, field_manager="grid-operator", force=False)
        api.apply(RACKS, namespace, "r2", body, field_manager="grid-operator", force=False)  # idempotent
        rack = api.get(RACKS, namespace, "r2")
        managers = {m["manager"]: m["operation"] for m in rack["metadata"]["managedFields"]}
        assert managers == {"grid-operator": "Apply"}
        # Another manager changing a field that grid-operator owns is a conflict, unless forced.
        changed = {**body, "spec": {**body["spec"], "maxPowerWatts": 30_000}}
        with pytest.raises(ApiError) as conflict:
            api.apply(RACKS, namespace, "r2", changed, field_manager="someone-else", force=False)
        assert conflict.value.status == 409
        api.apply(RACKS, namespace, "r2", changed, field_manager="someone-else", force=True)
        assert api.get(RACKS, namespace, "r2")["spec"]["maxPowerWatts"] == 30_000


def test_list_reads_every_page(control_plane: LocalControlPlane, namespace: str) -> None:
    with control_plane.connect() as api:
        for i in range(7):
            api.create(RACKS, namespace, _rack(f"r{i}", 10_000 + i))
        names = [r["metadata"]["name"] for r in api.list(RACKS, namespace, page_size=3)]  # 3 pages
        assert sorted(names) == [f"r{i}" for i in range(7)]
        everywhere = {(r["metadata"]["namespace"], r["metadata"]["name"])
                      for r in api.list(RACKS, page_size=2)}
        assert {(namespace, f"r{i}") for i in range(7)} <= everywhere, "no namespace: all of them"
        # A cluster-scoped resource of the core group: namespace None, another group path.
        spaces = api.list(NAMESPACES, None, page_size=5)
        assert namespace in {n["metadata"]["name"] for n in spaces}


def test_identities_from_kubeconfigs(control_plane: LocalControlPlane, namespace: str,
                                     tmp_path: Path) -> None:
    with SyncApi.from_kubeconfig(control_plane.kubeconfig) as admin:
        assert admin.server == control_plane.server
        assert "system:masters" in _whoami(admin)["groups"], "the client certificate was presented"
        admin.call("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                   {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}})
    token = control_plane.create_token("reader", namespace)
    path = control_plane.write_token_kubeconfig(tmp_path / "reader.kubeconfig", token)
    with SyncApi.from_kubeconfig(path) as reader:
        assert _whoami(reader)["username"] == f"system:serviceaccount:{namespace}:reader"
        with pytest.raises(ApiError) as denied:
            reader.list(RACKS, namespace)  # RBAC: a ServiceAccount with no role may not
        assert denied.value.status == 403


def test_no_server_is_no_answer(control_plane: LocalControlPlane) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    with SyncApi(f"https://127.0.0.1:{port}", control_plane.ssl_context, timeout=5) as api:
        with pytest.raises(TransportError) as e:
            api.list(RACKS)
        assert e.value.status == 0 and RACKS.path() in str(e.value)
