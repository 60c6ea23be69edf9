"""The chart's API Priority and Fairness objects on the real API server: the FlowSchema and
PriorityLevelConfiguration that `helm template` renders (real Helm) are applied with the operator's
ServiceAccount and RBAC, and requests made with that ServiceAccount's token are classified as the API
server says in its response headers (`X-Kubernetes-PF-FlowSchema-UID`,
`X-Kubernetes-PF-PriorityLevel-UID`): a GPUNode status patch goes to the chart's low priority level,
while a PowerLimitSlice write (an apply, an update) and a Lease write stay in the built-in
`service-accounts` schema (priority level `workload-low`), and so does a GPUNode status patch by
another identity (an agent)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.api import Api
from helpers.kube import Kubectl
from helpers.operator_process import wait_for
from helpers.site import node
from stargate_operator import kinds
from stargate_operator.localcp.binaries import BinaryError, ensure_helm
from stargate_operator.localcp.controlplane import LocalControlPlane
from stargate_operator.localcp.versions import KUBERNETES_VERSION

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "helm" / "stargate-operator"
RELEASE = "fc"
FLOWCONTROL = "/apis/flowcontrol.apiserver.k8s.io/v1"
APPLIED = ("ServiceAccount", "Role", "RoleBinding", "FlowSchema", "PriorityLevelConfiguration")
# Lower case: header names are case-insensitive (the API server sends X-Kubernetes-Pf-Flowschema-Uid).
FS_HEADER, PL_HEADER = "x-kubernetes-pf-flowschema-uid", "x-kubernetes-pf-prioritylevel-uid"


def render(namespace: str, home: Path) -> list[dict[str, Any]]:
    """`helm template` of the chart for a release in `namespace` that watches that namespace only
    (a Role there, not a ClusterRole), with private Helm folders."""
    try:
        binary = ensure_helm()
    except BinaryError as e:
        pytest.fail(f"the helm CLI is missing and could not be built: {e}", pytrace=False)
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(home / var.lower())
    values = home / "values.yaml"
    values.write_text(yaml.safe_dump({"watchNamespaces": [namespace], "crds": {"enabled": False}}))
    proc = subprocess.run([str(binary), "template", RELEASE, str(CHART), "--namespace", namespace,
                           "--kube-version", KUBERNETES_VERSION.lstrip("v"), "-f", str(values)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


class AsServiceAccount:
    """Raw HTTPS requests with a ServiceAccount's token (the CA only: no client certificate, which
    the API server would authenticate first), returning the status and the response headers (their
    names in lower case)."""

    def __init__(self, control_plane: LocalControlPlane, name: str, namespace: str) -> None:
        self.server = control_plane.server
        self.token = control_plane.create_token(name, namespace)
        self.context = ssl.create_default_context(cafile=str(control_plane.ca_file))

    def __call__(self, method: str, path: str, body: Any, content_type: str) -> tuple[int, dict[str, str]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.server}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": content_type,
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=10) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}
        except urllib.error.HTTPError as e:
            return e.code, {k.lower(): v for k, v in e.headers.items()}


def uid(api: Api, path: str) -> str:
    got: dict[str, Any] = api.request("GET", path)
    return str(got["metadata"]["uid"])


@pytest.fixture
def chart_objects(kubectl: Kubectl, namespace: str, tmp_path: Path) -> Iterator[dict[str, dict[str, Any]]]:
    """The rendered ServiceAccount, RBAC and flow-control objects, applied; the cluster-wide ones are
    deleted afterwards (the namespace takes the rest)."""
    docs = [d for d in render(namespace, tmp_path) if d["kind"] in APPLIED]
    assert sorted(d["kind"] for d in docs) == sorted(APPLIED), [d["kind"] for d in docs]
    kubectl.apply(docs)
    try:
        yield {d["kind"]: d for d in docs}
    finally:
        for kind in ("FlowSchema", "PriorityLevelConfiguration"):
            name = next(d for d in docs if d["kind"] == kind)["metadata"]["name"]
            kubectl("delete", f"{kind.lower()}s.flowcontrol.apiserver.k8s.io", name, "--ignore-not-found")


def test_gpunode_status_patches_of_the_operator_go_to_the_low_priority_level(
        api: Api, kubectl: Kubectl, control_plane: LocalControlPlane, namespace: str,
        chart_objects: dict[str, dict[str, Any]]) -> None:
    ns = namespace
    schema_name = chart_objects["FlowSchema"]["metadata"]["name"]
    level_name = chart_objects["PriorityLevelConfiguration"]["metadata"]["name"]
    ours = (uid(api, f"{FLOWCONTROL}/flowschemas/{schema_name}"),
            uid(api, f"{FLOWCONTROL}/prioritylevelconfigurations/{level_name}"))
    # Where the operator's other requests go: the built-in schema for every ServiceAccount.
    builtin = (uid(api, f"{FLOWCONTROL}/flowschemas/service-accounts"),
               uid(api, f"{FLOWCONTROL}/prioritylevelconfigurations/workload-low"))
    operator_sa = chart_objects["ServiceAccount"]["metadata"]["name"]
    operator = AsServiceAccount(control_plane, operator_sa, ns)
    api.create(ns, node("n1", "r"))

    gpunodes = f"/apis/{kinds.API_VERSION}/namespaces/{ns}/{kinds.GPU_NODE.plural}"
    merge = "application/merge-patch+json"

    def status_patch(who: AsServiceAccount) -> tuple[str, str]:
        code, headers = who("PATCH", f"{gpunodes}/n1/status", {"status": {"powerLimitWatts": 300}}, merge)
        assert code == 200, (code, headers)
        return headers[FS_HEADER], headers[PL_HEADER]

    # The API server's flow-control configuration follows the new objects within moments.
    wait_for(lambda: status_patch(operator) == ours, 30, 0.2,
             "the operator's GPUNode status patch classified into the chart's priority level")
    assert api.status("GPUNode", ns, "n1")["powerLimitWatts"] == 300

    # Its slice writes (server-side apply, which also creates, and an update) are not.
    slices = f"/apis/{kinds.API_VERSION}/namespaces/{ns}/{kinds.POWER_LIMIT_SLICE.plural}"
    body = {"apiVersion": kinds.API_VERSION, "kind": kinds.POWER_LIMIT_SLICE.kind,
            "metadata": {"name": "s1", "namespace": ns},
            "spec": {"limits": {"n1": 300}, "safeLimits": {}, "revision": 1}}
    code, headers = operator("PATCH", f"{slices}/s1?fieldManager=stargate-operator&force=true", body,
                             "application/apply-patch+yaml")
    assert code in (200, 201), (code, headers)
    assert (headers[FS_HEADER], headers[PL_HEADER]) == builtin
    # Nor its rewrite of a held slice (an update onto the version it holds).
    held = api.request("GET", f"{slices}/s1")
    body["metadata"]["resourceVersion"] = held["metadata"]["resourceVersion"]
    body["spec"] = {"limits": {"n1": 280}, "safeLimits": {}, "revision": 2}
    code, headers = operator("PUT", f"{slices}/s1", body, "application/json")
    assert code == 200, (code, headers)
    assert (headers[FS_HEADER], headers[PL_HEADER]) == builtin
    # Nor its fail-safe Lease, created and renewed.
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": kinds.FAILSAFE_LEASE_NAME, "namespace": ns},
             "spec": {"holderIdentity": "test", "leaseDurationSeconds": 15}}
    code, headers = operator("POST", leases, lease, "application/json")
    assert code == 201, (code, headers)
    assert (headers[FS_HEADER], headers[PL_HEADER]) == builtin
    code, headers = operator("PATCH", f"{leases}/{kinds.FAILSAFE_LEASE_NAME}",
                             {"spec": {"leaseDurationSeconds": 16}}, merge)
    assert code == 200, (code, headers)
    assert (headers[FS_HEADER], headers[PL_HEADER]) == builtin

    # A GPUNode status patch by another ServiceAccount (a node agent's telemetry, the confirmations
    # that raises wait for) stays where every ServiceAccount's requests go.
    kubectl("create", "serviceaccount", "agent", "-n", ns)
    kubectl("create", "rolebinding", "agent", "-n", ns, f"--role={chart_objects['Role']['metadata']['name']}",
            f"--serviceaccount={ns}:agent")
    agent = AsServiceAccount(control_plane, "agent", ns)
    assert wait_for(lambda: status_patch(agent), 10, 0.2, "the agent's patch") == builtin
