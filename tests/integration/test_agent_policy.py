"""Each node agent confined to its node, on the real API server: the chart's ValidatingAdmissionPolicy
(rendered by the real helm) lets the agent's ServiceAccount change only ``status.telemetry`` of the
GPUNode whose ``spec.nodeName`` is the node its token is bound to.

The tokens are what the kubelet gives an agent Pod: a TokenRequest bound to a Pod whose
``spec.nodeName`` is set (no kubelet needed: a Pod object with a node name and a Node object are
enough), for which the API server writes the node into the token and the authenticator puts it into
the user's extra (``authentication.kubernetes.io/node-name``).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from helpers.kube import Kubectl, create_namespace, purge_namespace
from stargate_operator import kinds
from stargate_operator.localcp.binaries import BinaryError, ensure_helm
from stargate_operator.localcp.controlplane import LocalControlPlane
from stargate_operator.localcp.versions import KUBERNETES_VERSION

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "stargate-operator"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
RELEASE = "vap"  # the policy is cluster-scoped: named after the release
NODES = ("gpu-node-a", "gpu-node-b")


@dataclass
class Agents:
    namespace: str
    service_account: str
    policy: str
    kubectl: Kubectl
    workdir: Path

    def token(self, *bound: str) -> str:
        """A TokenRequest token of the agent's ServiceAccount, bound to an object
        (``--bound-object-kind Pod --bound-object-name ...``) when given."""
        args = ["create", "token", self.service_account, "-n", self.namespace, "--duration=1h", *bound]
        token: str = self.kubectl(*args).stdout.strip()
        return token

    def pod_token(self, node: str) -> str:
        """What the kubelet projects into the agent Pod on `node`."""
        return self.token("--bound-object-kind=Pod", f"--bound-object-name=agent-{node}")

    def whoami(self, token: str) -> dict[str, Any]:
        path = self.kubectl.control_plane.write_token_kubeconfig(self.workdir / "whoami.kubeconfig", token)
        answer = json.loads(self.kubectl.as_user(path)("auth", "whoami", "-o", "json").stdout)
        user: dict[str, Any] = answer["status"]["userInfo"]
        return user

    def patch_status(self, token: str | None, gpunode: str, status: dict[str, Any]) -> Answer:
        """A JSON merge patch of the status subresource, as the agent sends it (one PATCH, no GET:
        its Role has no get), with `token`, or as admin when None."""
        cp = self.kubectl.control_plane
        path = f"{kinds.GROUP_PATH}/namespaces/{self.namespace}/{kinds.GPU_NODE.plural}/{gpunode}/status"
        body = {"status": status}
        if token is None:
            code, answer = cp.api("PATCH", path, body, content_type="application/merge-patch+json")
            return Answer(code, json.dumps(answer))
        # The CA only: the control plane's own TLS context would present the admin certificate.
        tls = ssl.create_default_context(cafile=str(cp.ca_file))
        resp = httpx.patch(cp.server + path, content=json.dumps(body), verify=tls, timeout=30,
                           headers={"Authorization": f"Bearer {token}",
                                    "Content-Type": "application/merge-patch+json"})
        return Answer(resp.status_code, resp.text)


@dataclass
class Answer:
    code: int
    text: str

    @property
    def ok(self) -> bool:
        return self.code == 200


def render(values: dict[str, Any], namespace: str, workdir: Path) -> list[dict[str, Any]]:
    try:
        helm = ensure_helm()
    except BinaryError as e:
        pytest.fail(f"the helm CLI is missing and could not be built: {e}", pytrace=False)
    env = dict(os.environ)
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
        env[var] = str(workdir / var.lower())
    values_file = workdir / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    proc = subprocess.run(
        [str(helm), "template", RELEASE, str(CHART), "--namespace", namespace,
         "--kube-version", KUBERNETES_VERSION.lstrip("v"), "-f", str(values_file)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def gpunode(name: str, node: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"rackRef": "r1", "gpu": {"model": "H100-SXM", "count": 8,
                                                    "memoryBytes": 80_000_000_000,
                                                    "minPowerWatts": 200, "maxPowerWatts": 700}}
    if node is not None:
        spec["nodeName"] = node
    return {"apiVersion": kinds.API_VERSION, "kind": kinds.GPU_NODE.kind,
            "metadata": {"name": name}, "spec": spec}


def telemetry(watts: int) -> dict[str, Any]:
    return {"telemetry": {"powerWatts": watts, "healthyGPUs": 8, "observedAt": "2026-01-01T12:00:00Z"}}


@pytest.fixture(scope="module")
def agents(control_plane: LocalControlPlane, kubectl: Kubectl,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agents]:
    workdir = tmp_path_factory.mktemp("agent-policy")
    ns = f"t-agent-policy-{os.getpid()}"
    create_namespace(kubectl, ns)
    docs = render({"agent": {"enabled": True, "sites": [ns]}, "crds": {"enabled": False}}, ns, workdir)
    wanted = {"ServiceAccount", "Role", "RoleBinding", "ValidatingAdmissionPolicy",
              "ValidatingAdmissionPolicyBinding"}
    picked = [d for d in docs if d["kind"] in wanted and d["metadata"]["name"].endswith(
        ("-agent", "-agent-node-isolation"))]
    assert sorted(d["kind"] for d in picked) == sorted(wanted), [d["kind"] for d in picked]
    kubectl.apply(picked)
    (sa,) = [d for d in picked if d["kind"] == "ServiceAccount"]
    (vap,) = [d for d in picked if d["kind"] == "ValidatingAdmissionPolicy"]
    # Two Nodes, and an agent Pod bound to each (no kubelet: the objects are what the token needs).
    for node in NODES:
        kubectl.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
        kubectl.apply({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": f"agent-{node}", "namespace": ns},
                       "spec": {"serviceAccountName": sa["metadata"]["name"], "nodeName": node,
                                "containers": [{"name": "agent", "image": "stargate-operator:0.1.0"}]}})
    kubectl.apply([gpunode(n, n) for n in NODES] + [gpunode("no-node", None)], namespace=ns)
    # The operator's status on each: what an agent must not touch.
    for name in (*NODES, "no-node"):
        kubectl("patch", f"gpunodes.{kinds.GROUP}", name, "-n", ns, "--subresource=status",
                "--type=merge", "-p", json.dumps({"status": {"powerLimitWatts": 500, "healthyGPUs": 8}}))
    try:
        yield Agents(ns, sa["metadata"]["name"], vap["metadata"]["name"], kubectl, workdir)
    finally:
        kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy",
                vap["metadata"]["name"], "--ignore-not-found", check=False)
        kubectl("delete", "node", *NODES, "--ignore-not-found", check=False)
        purge_namespace(kubectl, ns)


def refused(answer: Answer) -> str:
    """The refusal's message: 403 Forbidden, from the chart's policy (not from RBAC)."""
    assert answer.code == 403, f"not refused ({answer.code}): {answer.text}"
    status = json.loads(answer.text)
    assert status["reason"] == "Forbidden", status
    message: str = status["message"]
    assert "ValidatingAdmissionPolicy" in message and "denied request" in message, message
    return message


def wait_for_the_policy(agents: Agents, token: str) -> None:
    """The admission plugin loads a new policy and binding from its informer: wait until it refuses
    what it must (another node's telemetry)."""
    deadline = time.monotonic() + 60
    while True:
        answer = agents.patch_status(token, NODES[1], telemetry(1))
        if answer.code == 403 and "ValidatingAdmissionPolicy" in answer.text:
            return
        assert not answer.ok, f"node A's agent wrote node B's telemetry: {answer.text}"
        assert time.monotonic() < deadline, f"the policy never refused node B's telemetry: {answer.text}"
        time.sleep(0.5)


def test_the_policy_compiles_without_warnings(agents: Agents) -> None:
    vap = agents.kubectl.json("get", "validatingadmissionpolicy", agents.policy)
    # The API server compiled every expression at creation (a broken one is refused outright);
    # its type check reports no warning either.
    warnings = (vap.get("status") or {}).get("typeChecking", {}).get("expressionWarnings") or []
    assert warnings == [], warnings


def test_a_pod_bound_token_carries_its_node(agents: Agents) -> None:
    """The precondition of the whole policy: the API server puts the Pod's node into the token's
    user info. A token bound to nothing carries none."""
    info = agents.whoami(agents.pod_token(NODES[0]))
    assert info["username"] == f"system:serviceaccount:{agents.namespace}:{agents.service_account}"
    assert info["extra"][NODE_NAME_EXTRA] == [NODES[0]]
    assert NODE_NAME_EXTRA not in (agents.whoami(agents.token()).get("extra") or {})


def test_an_agent_writes_its_own_nodes_telemetry(agents: Agents) -> None:
    on_a = agents.pod_token(NODES[0])
    wait_for_the_policy(agents, on_a)
    answer = agents.patch_status(on_a, NODES[0], telemetry(5100))
    assert answer.ok, answer.text
    status = agents.kubectl.json("get", f"gpunodes.{kinds.GROUP}", NODES[0], "-n", agents.namespace)["status"]
    assert status["telemetry"]["powerWatts"] == 5100
    assert status["powerLimitWatts"] == 500  # untouched


def test_another_nodes_telemetry_is_refused_and_the_message_says_why(agents: Agents) -> None:
    on_a = agents.pod_token(NODES[0])
    wait_for_the_policy(agents, on_a)
    message = refused(agents.patch_status(on_a, NODES[1], telemetry(9999)))
    assert (f"the node agent on node {NODES[0]} may write only the GPUNode whose spec.nodeName is "
            f"{NODES[0]}, and GPUNode {agents.namespace}/{NODES[1]} is node {NODES[1]}") in message, message
    status = agents.kubectl.json("get", f"gpunodes.{kinds.GROUP}", NODES[1], "-n", agents.namespace)["status"]
    assert (status.get("telemetry") or {}).get("powerWatts") != 9999
    # A GPUNode that names no node is nobody's to report for.
    message = refused(agents.patch_status(on_a, "no-node", telemetry(1)))
    assert f"GPUNode {agents.namespace}/no-node names no node" in message, message
    # The same ServiceAccount bound to the Pod on B may write B's: the token decides, not the account.
    assert agents.patch_status(agents.pod_token(NODES[1]), NODES[1], telemetry(4200)).ok


def test_any_field_but_telemetry_is_refused(agents: Agents) -> None:
    on_a = agents.pod_token(NODES[0])
    wait_for_the_policy(agents, on_a)
    message = refused(agents.patch_status(on_a, NODES[0], {"powerLimitWatts": 700}))
    assert "may change only status.telemetry of its GPUNode, not status.powerLimitWatts" in message, message
    # Telemetry together with another field: refused whole.
    message = refused(agents.patch_status(on_a, NODES[0], {**telemetry(1), "healthyGPUs": 0}))
    assert "not status.healthyGPUs" in message, message
    # Removing a field the operator wrote, and adding one it did not: refused.
    removed = refused(agents.patch_status(on_a, NODES[0], {"powerLimitWatts": None}))
    assert "not status.powerLimitWatts" in removed, removed
    added = refused(agents.patch_status(on_a, NODES[0], {"allocatedWatts": 1}))
    assert "not status.allocatedWatts" in added, added
    status = agents.kubectl.json("get", f"gpunodes.{kinds.GROUP}", NODES[0], "-n", agents.namespace)["status"]
    assert status["powerLimitWatts"] == 500 and status["healthyGPUs"] == 8
    assert "allocatedWatts" not in status


def test_a_token_bound_to_no_node_is_refused(agents: Agents) -> None:
    wait_for_the_policy(agents, agents.pod_token(NODES[0]))
    message = refused(agents.patch_status(agents.token(), NODES[0], telemetry(1)))
    assert "the node agent's token is bound to no node" in message, message


def test_the_operator_and_users_are_not_confined(agents: Agents) -> None:
    """matchConditions: only the agent's ServiceAccount is judged (admin writes any status field)."""
    wait_for_the_policy(agents, agents.pod_token(NODES[0]))
    answer = agents.patch_status(None, NODES[1], {"powerLimitWatts": 450, **telemetry(3)})
    assert answer.ok, answer.text
    assert agents.patch_status(None, NODES[1], {"powerLimitWatts": 500}).ok
