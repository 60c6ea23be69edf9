"""The chart as a user installs it, on a real node: a kubelet, containerd and the operator image built
from operator/Dockerfile on this machine (tests/helpers/node.py; docs/development/real-node.md).

One release for the module, installed with `helm install` as the install docs say (discovery and the
agent on, the agent simulating GPUs since the node has none, the namespace at PodSecurity
`restricted`, rollouts awaited with `kubectl rollout status`), then in order: the pods Ready; the
GPUNode discovered from the Node labelled as GPU Feature Discovery labels one; the agent's own
kubelet-issued token writing its node's telemetry and refused for another node's GPUNode; a grid
event created through the official `kubernetes` client reaching the agent's (simulated) GPUs; a real
Prometheus scraping the operator through its Service's endpoints; the operator pod killed and the
operator converging again; `helm upgrade` rolling both pods; `helm uninstall` leaving nothing.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from helpers.api import condition
from helpers.node import RealNode
from helpers.site import cluster, now_plus, rack
from prometheus.harness import PrometheusServer
from stargate_operator import kinds
from stargate_operator.core import discovery as d

pytestmark = pytest.mark.node

RELEASE = "stargate-operator"
NAMESPACE = "stargate-system"
SITE = "site-a"
AGENT_METRICS_PORT = 9400
OPERATOR_DEPLOYMENT = RELEASE
AGENT_DAEMONSET = f"{RELEASE}-agent-{SITE}"
SERVICE = f"{RELEASE}-metrics"
WAIT = 120.0
T = TypeVar("T")

# As GPU Feature Discovery labels a DGX H100 (and the site's operator its site and rack).
GFD_LABELS = {
    "nvidia.com/gpu.present": "true",
    d.GFD_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3",
    d.GFD_COUNT_LABEL: "8",
    d.GFD_MEMORY_LABEL: "81559",
    "stargate.dev/site": SITE,
    "stargate.dev/rack": "r1",
}


def wait_for(check: Callable[[], T | None], what: str, timeout: float = WAIT) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.5)


def values(tag: str) -> dict[str, Any]:
    return {
        "image": {"repository": "stargate.local/stargate-operator", "tag": tag,
                  # Nothing may come from a registry: the image is on the node or the pod fails.
                  "pullPolicy": "Never"},
        "discovery": {"enabled": True},
        "agent": {"enabled": True, "simulate": True, "sites": [SITE], "metricsPort": AGENT_METRICS_PORT},
    }


def pods(rn: RealNode, component: str) -> list[dict[str, Any]]:
    out = rn.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/component={component}",
                     "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return condition(pod.get("status") or {}, "Ready").get("status") == "True"


def rollout(rn: RealNode) -> None:
    # `helm install --wait` lets one agent of one be unready (maxUnavailable 10 % rounds up to 1),
    # so the rollouts are awaited as the install docs say.
    for what in (f"deployment/{OPERATOR_DEPLOYMENT}", f"daemonset/{AGENT_DAEMONSET}"):
        rn.kubectl("rollout", "status", what, "-n", NAMESPACE, f"--timeout={int(WAIT)}s", timeout=WAIT + 10)


def get(rn: RealNode, kind: kinds.KindSpec, namespace: str, name: str) -> dict[str, Any] | None:
    code, body = rn.cp.api("GET", f"{kinds.GROUP_PATH}/namespaces/{namespace}/{kind.plural}/{name}")
    return body if code == 200 else None


@pytest.fixture(scope="module")
def release(real_node: RealNode) -> Iterator[RealNode]:
    rn = real_node
    rn.kubectl("label", "node", rn.node.name, *(f"{k}={v}" for k, v in GFD_LABELS.items()), "--overwrite")
    # The site: its namespace, a StargateCluster and a Rack (the CRDs come with the chart).
    rn.kubectl("create", "namespace", SITE)
    # The release's namespace as a cautious user makes it: Pod Security `restricted`, enforced.
    rn.kubectl("create", "namespace", NAMESPACE)
    rn.kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted",
               "pod-security.kubernetes.io/warn=restricted")
    values_file = rn.workdir / "values.yaml"
    values_file.write_text(json.dumps(values(rn.node.image_tag)))
    started = time.monotonic()
    rn.helm("install", RELEASE, str(_chart()), "--namespace", NAMESPACE, "-f", str(values_file),
            "--wait", "--timeout=5m")
    rollout(rn)
    # For the record (docs/development/real-node.md quotes them): set-up steps and memory.
    print(f"\n[e2e] node set-up: {', '.join(f'{k} {v:.1f}s' for k, v in rn.node.timings.items())}; "
          f"helm install and rollouts: {time.monotonic() - started:.1f}s")
    site = [cluster(), rack("r1")]
    for o in site:
        o["metadata"]["namespace"] = SITE
    rn.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": site}))
    yield rn
    memory = rn.node.memory_bytes()
    print(f"\n[e2e] node memory (RSS, MiB): "
          f"{', '.join(f'{k} {v / 2**20:.0f}' for k, v in memory.items())}; "
          f"total {sum(memory.values()) / 2**20:.0f}")


def _chart() -> Path:
    return Path(__file__).resolve().parents[2] / "helm" / "stargate-operator"


def test_operator_and_agent_pods_become_ready_under_restricted(release: RealNode) -> None:
    ns = json.loads(release.kubectl("get", "namespace", NAMESPACE, "-o", "json").stdout)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for component in ("operator", "agent"):
        got = pods(release, component)
        assert len(got) == 1 and ready(got[0]), f"{component}: {[p['status'] for p in got]}"
        assert got[0]["spec"]["nodeName"] == release.node.name
        image = got[0]["status"]["containerStatuses"][0]["image"]
        assert image.endswith(f"stargate-operator:{release.node.image_tag}"), image


def test_the_gpunode_is_discovered_from_the_labelled_node(release: RealNode) -> None:
    node = release.node.name
    gpunode = wait_for(lambda: get(release, kinds.GPU_NODE, SITE, node), "the GPUNode of the Node")
    spec = gpunode["spec"]
    assert spec["nodeName"] == node and spec["rackRef"] == "r1"
    assert spec["gpu"]["count"] == 8 and spec["gpu"]["model"] == "H100-SXM", spec


def _patch_status(rn: RealNode, token: str, name: str, status: dict[str, Any]) -> httpx.Response:
    path = f"{kinds.GROUP_PATH}/namespaces/{SITE}/{kinds.GPU_NODE.plural}/{name}/status"
    tls = ssl.create_default_context(cafile=str(rn.cp.ca_file))
    return httpx.patch(rn.cp.server + path, content=json.dumps({"status": status}), verify=tls, timeout=30,
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "application/merge-patch+json"})


def test_the_agents_kubelet_token_writes_its_node_only(release: RealNode) -> None:
    (agent,) = pods(release, "agent")
    token = release.node.pod_token(NAMESPACE, agent["metadata"]["name"])
    own = release.node.name
    wait_for(lambda: get(release, kinds.GPU_NODE, SITE, own), "the GPUNode of the Node")
    telemetry = {"telemetry": {"powerWatts": 4321, "healthyGPUs": 8,
                               "observedAt": now_plus(0)}}
    answer = _patch_status(release, token, own, telemetry)
    assert answer.status_code == 200, answer.text
    # Another node's GPUNode, written by hand: the admission policy refuses the agent's token.
    other = {"apiVersion": kinds.API_VERSION, "kind": kinds.GPU_NODE.kind,
             "metadata": {"name": "another-node", "namespace": SITE},
             "spec": {"nodeName": "another-node", "rackRef": "r1",
                      "gpu": {"model": "H100-SXM", "count": 8, "memoryBytes": 80_000_000_000,
                              "minPowerWatts": 200, "maxPowerWatts": 700}}}
    release.kubectl("apply", "-f", "-", input=json.dumps(other))
    try:
        refused = _patch_status(release, token, "another-node", telemetry)
        assert refused.status_code in (403, 422), refused.text
        assert "another-node" in refused.text or "telemetry" in refused.text, refused.text
    finally:
        release.kubectl("delete", "gpunode", "another-node", "-n", SITE, "--wait=false")


def _agent_metric(rn: RealNode, name: str) -> float:
    (agent,) = pods(rn, "agent")
    url = f"http://{agent['status']['podIP']}:{AGENT_METRICS_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def test_a_grid_events_limit_reaches_the_agent_through_the_official_client(release: RealNode) -> None:
    # The way a user's own Python tooling drives the cluster (docs/development/real-node.md shows it).
    from kubernetes import client, config

    node = release.node.name
    wait_for(lambda: ((get(release, kinds.GPU_NODE, SITE, node) or {}).get("status") or {})
             .get("powerLimitWatts"), "a first power limit")
    before = get(release, kinds.GPU_NODE, SITE, node)
    assert before is not None
    first_limit = before["status"]["powerLimitWatts"]
    changes_before = _agent_metric(release, "stargate_agent_power_limit_changes_total")

    api = client.CustomObjectsApi(config.new_client_from_config(str(release.cp.kubeconfig)))
    group, version = kinds.API_VERSION.split("/")
    api.create_namespaced_custom_object(group, version, SITE, kinds.GRID_EVENT.plural, {
        "apiVersion": kinds.API_VERSION, "kind": kinds.GRID_EVENT.kind,
        "metadata": {"name": "evening-peak"},
        "spec": {"clusterRef": "site", "start": now_plus(1), "limitWatts": 8_000,
                 "source": "e2e:utility/event-1"},
    })

    def active() -> dict[str, Any] | None:
        got = api.get_namespaced_custom_object_status(group, version, SITE, kinds.GRID_EVENT.plural,
                                                      "evening-peak")
        event_status: dict[str, Any] = got.get("status") or {}
        return event_status if event_status.get("phase") == "Active" else None

    status = wait_for(active, "the grid event Active")
    assert status["targetWatts"] == 8_000, status

    def applied() -> dict[str, Any] | None:
        g = get(release, kinds.GPU_NODE, SITE, node) or {}
        s = g.get("status") or {}
        limit = s.get("powerLimitWatts")
        if limit is not None and limit < first_limit and (s.get("telemetry") or {}).get(
                "enforcedLimitWatts") == limit and condition(s, "PowerLimitApplied").get("status") == "True":
            return s
        return None

    # A DGX H100: floor 6,200 W, demand 10,200 W; 8,000 W for the site leaves each GPU 425 W.
    s = wait_for(applied, "the agent enforcing the grid event's lower limit")
    assert s["powerLimitWatts"] == 425, s
    assert _agent_metric(release, "stargate_agent_power_limit_changes_total") > changes_before


def _service_endpoints(rn: RealNode, service: str, port_name: str) -> list[str]:
    """address:port of the Service's ready endpoints, from its EndpointSlices (as kube-proxy and
    Prometheus' Kubernetes discovery read them)."""
    out = rn.kubectl("get", "endpointslices", "-n", NAMESPACE, "-l", f"kubernetes.io/service-name={service}",
                     "-o", "json").stdout
    targets = []
    for eps in json.loads(out)["items"]:
        ports = [p["port"] for p in eps.get("ports") or [] if p.get("name") == port_name]
        for ep in eps.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready"):
                targets += [f"{addr}:{port}" for addr in ep["addresses"] for port in ports]
    return targets


def test_a_real_prometheus_scrapes_the_operator_through_its_service(release: RealNode) -> None:
    # Debian's Prometheus is built without Kubernetes discovery, so the test does its part: the
    # Service's endpoint slices name what to scrape, as a ServiceMonitor's would.
    targets = wait_for(lambda: _service_endpoints(release, SERVICE, "metrics"), "the Service's endpoints")
    (operator,) = pods(release, "operator")
    assert targets == [f"{operator['status']['podIP']}:8080"], targets
    with PrometheusServer(release.workdir / "prometheus", {"stargate-operator": targets},
                          rule_files=()) as prom:
        assert prom.wait_for('up{job="stargate-operator"} == 1', timeout=WAIT)
        # The operator's own series, not only the scrape's `up`.
        assert prom.wait_for('count({job="stargate-operator", __name__=~"stargate_.+"}) > 0', timeout=WAIT)


def test_the_operator_killed_comes_back_and_converges(release: RealNode) -> None:
    (old,) = pods(release, "operator")
    release.kubectl("delete", "pod", old["metadata"]["name"], "-n", NAMESPACE, "--grace-period=0",
                    "--force", "--wait=false")
    # Meanwhile the site changes: the new operator must pick that up.
    release.kubectl("patch", "gridevent", "evening-peak", "-n", SITE, "--type=merge",
                    "-p", json.dumps({"spec": {"limitWatts": 9_000}}))
    wait_for(lambda: [p for p in pods(release, "operator")
                      if p["metadata"]["name"] != old["metadata"]["name"] and ready(p)],
             "a new operator pod Ready")
    wait_for(lambda: ((get(release, kinds.GRID_EVENT, SITE, "evening-peak") or {}).get("status") or {})
             .get("targetWatts") == 9_000, "the edited grid event's new target")


def test_helm_upgrade_rolls_both_pods(release: RealNode) -> None:
    before = {c: {p["metadata"]["name"] for p in pods(release, c)} for c in ("operator", "agent")}
    vals = values(release.node.image_tag)
    vals["podAnnotations"] = {"example.com/upgraded": "yes"}
    vals["agent"]["podAnnotations"] = {"example.com/upgraded": "yes"}
    values_file = release.workdir / "values-upgrade.yaml"
    values_file.write_text(json.dumps(vals))
    release.helm("upgrade", RELEASE, str(_chart()), "--namespace", NAMESPACE, "-f", str(values_file),
                 "--wait", "--timeout=5m")
    rollout(release)
    for component in ("operator", "agent"):
        now = pods(release, component)
        assert now and all(ready(p) for p in now), component
        assert not {p["metadata"]["name"] for p in now} & before[component], f"{component} not rolled"
        assert all(p["metadata"]["annotations"].get("example.com/upgraded") == "yes" for p in now)


def test_helm_uninstall_leaves_nothing_behind(release: RealNode) -> None:
    release.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout=3m")
    selector = f"app.kubernetes.io/instance={RELEASE}"
    wait_for(lambda: (not pods(release, "operator") and not pods(release, "agent")) or None,
             "the release's pods gone")
    left = {}
    for kinds_ in ("clusterroles", "clusterrolebindings", "roles", "rolebindings", "serviceaccounts",
                   "validatingadmissionpolicies", "validatingadmissionpolicybindings",
                   "validatingwebhookconfigurations", "mutatingwebhookconfigurations", "deployments",
                   "daemonsets", "services"):
        out = release.kubectl("get", kinds_, "-A", "-l", selector, "-o", "name").stdout.split()
        if out:
            left[kinds_] = out
    assert not left, f"left behind by helm uninstall: {left}"
