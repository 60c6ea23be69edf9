"""The Helm chart (helm/stargate-operator) with the real Helm CLI against a real API server.

Three tiers, in this order:

* offline: ``helm lint`` (also ``--strict``), ``helm template`` for the default values and for every
  optional feature, values.schema.json and the chart's own checks rejecting bad values with a clear
  message, the chart's CRDs being the generated YAML of ``crds/``, every value documented;
* a private local control plane (kube-apiserver + etcd, started here with an audit log): ``helm
  install``/``upgrade``/``uninstall`` of real releases, every rendered feature set validated by the
  API server (server-side dry-run apply, ``--validate=strict``: the OpenAPI schemas of the target
  Kubernetes version and of the CRDs; ServiceMonitor and PrometheusRule against the minimal
  monitoring.coreos.com CRDs in tests/fixtures/);
* RBAC, proven both ways: the operator runs as a local process with a token of the chart's
  ServiceAccount (TokenRequest) and the container arguments of the installed Deployment, reconciles a
  sample site and posts an Event, so the RBAC is sufficient; then the API server's audit log of
  that run (every request of that ServiceAccount, with the authorizer's decision) must show no
  denied request and a use of every (apiGroup, resource, verb) the chart grants, so the chart grants
  nothing beyond what the run used;
* leader election: the two Deployments of ``replicaCount=2`` run side by side, one holds the Lease
  and acts, the standby takes over when it is killed.

Why the audit log and not the operator's own request counter (kube.KubeClient.requests): the
operator runs on kopf, whose own requests (CRD and namespace scanning) go through kopf's client,
not ours; the API server sees them all, and says which rule-less requests it denied.

The control plane is private to this module because Helm must own the CRDs it installs (the session
control plane's CRDs are applied by kubectl) and because ``crds.keep`` is tested by uninstalling.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from helpers.kube import Kubectl
from stargate_operator import kinds
from stargate_operator.core.taint import TAINT_KEY
from stargate_operator.localcp.binaries import BinaryError, ensure_control_plane, ensure_helm, ensure_kubectl
from stargate_operator.localcp.controlplane import LocalControlPlane
from stargate_operator.localcp.versions import KUBERNETES_VERSION

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "stargate-operator"
FIXTURES = ROOT / "tests" / "fixtures"
SAMPLES = ROOT / "crds" / "samples"
STARGATE_PLURALS = tuple(k.plural for k in kinds.KINDS)
KUBE_VERSION = KUBERNETES_VERSION.lstrip("v")

# Every optional feature, as the values that switch it on (each rendered, linted and validated).
FEATURES: dict[str, dict[str, Any]] = {
    "default": {},
    "serviceMonitor": {
        "serviceMonitor": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "relabelings": [{"action": "replace", "targetLabel": "site", "replacement": "abilene"}],
        }
    },
    "prometheusRule": {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}},
    "dashboards": {"dashboards": {"enabled": True, "annotations": {"grafana_folder": "Stargate"}}},
    "leaderElection": {"leaderElection": {"enabled": True}, "replicaCount": 2},
    "watchNamespaces": {"watchNamespaces": ["site-a", "site-b"]},
    "watchNamespaces+leaderElection": {
        "watchNamespaces": ["site-a", "site-b"],
        "leaderElection": {"enabled": True},
        "replicaCount": 2,
    },
    "crds.keep=false": {"crds": {"keep": False}},
    "crds.enabled=false": {"crds": {"enabled": False}},
    "telemetry=prometheus": {
        "operator": {
            "telemetry": "prometheus",
            "perNodeMetrics": True,
            "prometheusUrl": "http://prometheus-operated.monitoring:9090",
        }
    },
    "agent+discovery": {
        "agent": {"enabled": True, "sites": ["site-a", "site-b"]},
        "discovery": {"enabled": True},
    },
    "agent+discovery+simulate": {
        "agent": {"enabled": True, "simulate": True, "metricsPort": 9400, "sites": ["site-a"]},
        "discovery": {"enabled": True},
    },
    "agent+prometheus": {
        "operator": {"telemetry": "prometheus", "prometheusUrl": "http://prometheus-operated.monitoring:9090"},
        "agent": {"enabled": True, "simulate": True, "sites": ["site-a"],
                  "serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}}},
        "discovery": {"enabled": True},
    },
    "agent+discovery+watchNamespaces": {
        "watchNamespaces": ["site-a", "site-b"],
        "agent": {"enabled": True, "runtimeClassName": "", "priorityClassName": "system-node-critical"},
        "discovery": {"enabled": True, "siteLabel": "example.com/site", "rackLabel": "example.com/rack"},
    },
    "everything": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboards": {"enabled": True},
        "leaderElection": {"enabled": True, "leaseDurationSeconds": 20, "renewDeadlineSeconds": 12},
        "replicaCount": 2,
        # 20 + 4.4 x 1 + 12 / 3 = 28.4 s to a failover's renewal: the agents must wait longer.
        "agent": {"failsafeAfter": 40},
        "image": {"digest": "sha256:" + "a" * 64},
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"example.com/team": "dc-ops"},
        "priorityClassName": "system-cluster-critical",
        "operator": {
            "failsafeLeaseDurationSeconds": 12,
            "extraArgs": ["--coalesce=0.2"],
            "extraEnv": [{"name": "TZ", "value": "UTC"}],
        },
    },
    "flowControl.enabled=false": {"flowControl": {"enabled": False}},
}


# ----------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        binary = ensure_helm()
    except BinaryError as e:
        pytest.fail(f"the helm CLI is missing and could not be built: {e}", pytrace=False)
    home = tmp_path_factory.mktemp("helm-home")
    return Helm(binary, home)


class HelmError(AssertionError):
    pass


@dataclass
class Helm:
    """The real Helm CLI with private config/cache/data folders (nothing written to ~)."""

    binary: Path
    home: Path
    kubeconfig: Path | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            env[var] = str(self.home / var.lower())
        env.pop("HELM_NAMESPACE", None)
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
            env["KUBECACHEDIR"] = str(self.home / "kube-cache")
        return env

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=self.env(), timeout=timeout
        )
        if check and proc.returncode != 0:
            raise HelmError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    def values_file(self, values: dict[str, Any], name: str = "values") -> Path:
        path = self.home / f"{name}-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def template(
        self,
        values: dict[str, Any] | None = None,
        *,
        release: str = "sg",
        namespace: str = "stargate-system",
        check: bool = True,
        api_versions: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        return self(
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            KUBE_VERSION,
            "-f",
            str(self.values_file(values or {})),
            *(f"--api-versions={v}" for v in api_versions),
            check=check,
        )

    def render(self, values: dict[str, Any] | None = None, **kw: Any) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(self.template(values, **kw).stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def grants(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every rule of every ClusterRole and Role rendered."""
    out: set[tuple[str, str, str]] = set()
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "Role"):
            for rule in doc["rules"]:
                assert "nonResourceURLs" not in rule, rule
                for g in rule["apiGroups"]:
                    for r in rule["resources"]:
                        for v in rule["verbs"]:
                            out.add((g, r, v))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------------ offline
def test_lint_clean(helm: Helm) -> None:
    for strict in ([], ["--strict"]):
        out = helm("lint", *strict, str(CHART)).stdout
        assert "0 chart(s) failed" in out, out
        assert "[WARNING]" not in out and "[ERROR]" not in out, out


def test_template_and_lint_need_no_kube_version(helm: Helm, tmp_path: Path) -> None:
    """Offline, helm assumes the Kubernetes version of the client-go it is built with (as a release
    of helm does), not v1.20.0: the chart's kubeVersion admits it without `--kube-version`."""
    probe = tmp_path / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (probe / "templates" / "version.yaml").write_text(
        "# {{ .Capabilities.KubeVersion.Major }}.{{ .Capabilities.KubeVersion.Minor }}\n")
    assumed = helm("template", "probe", str(probe)).stdout.split("# ")[-1].strip()
    major, minor = (int(x) for x in assumed.split("."))
    assert (major, minor) >= (1, 30), f"helm assumes Kubernetes {assumed} offline"
    rendered = helm("template", "sg", str(CHART), "--namespace", "stargate-system").stdout
    assert "kind: Deployment" in rendered
    out = helm("lint", "--strict", str(CHART)).stdout
    assert "0 chart(s) failed" in out and "[ERROR]" not in out, out


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_lint_every_feature(helm: Helm, feature: str) -> None:
    values = helm.values_file(FEATURES[feature])
    out = helm("lint", "--strict", str(CHART), "-f", str(values)).stdout
    assert "0 chart(s) failed" in out and "[WARNING]" not in out, out


def test_template_default(helm: Helm) -> None:
    docs = helm.render()
    rendered = sorted(d["kind"] for d in docs)
    assert rendered == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "PriorityLevelConfiguration",
            "FlowSchema",
            *["CustomResourceDefinition"] * len(kinds.KINDS),
        ]
    ), rendered
    crd_names = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition")
    assert crd_names == sorted(f"{k.plural}.{kinds.GROUP}" for k in kinds.KINDS), crd_names
    dep = one(docs, "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "sg-stargate-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    assert (
        c["image"] == f"stargate-operator:{yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"
    )
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "health": 8081}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["args"] == [
        "--metrics-port=8080",
        "--health-port=8081",
        "--log-level=INFO",
        "--stale-after=120",
        "--slice-size=500",
        "--raise-after=30",
        "--confirm-grace=60",
        "--measured-refresh=300",
        "--lease-duration=15",
        "--telemetry=none",
    ]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    # helm create's label conventions.
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "stargate-operator"
        assert labels["app.kubernetes.io/instance"] == "sg"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"].startswith("stargate-operator-")
    # RBAC: no wildcards anywhere, no write access to specs, cluster-wide.
    for g, r, v in grants(docs):
        assert "*" not in (g, r, v)
        if g == "stargate.dev" and not r.endswith("/status"):
            # PowerLimitSlices are the operator's own intent, written by it alone
            allowed = ("create", "patch", "update") if r == kinds.POWER_LIMIT_SLICE.plural else ()
            assert v in ("get", "list", "watch", *allowed), (g, r, v)
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "sg-stargate-operator", "namespace": "stargate-system"}
    ]


def test_template_is_restricted_pod_security(helm: Helm) -> None:
    """What the `restricted` Pod Security Standard requires, for every feature set."""
    for feature, values in FEATURES.items():
        for dep in by_kind(helm.render(values), "Deployment"):
            pod = dep["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, feature
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", feature
            assert not pod.get("hostNetwork") and not pod.get("hostPID"), feature
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], (
                    feature
                )
                assert sc["readOnlyRootFilesystem"] is True and not sc.get("privileged"), feature


def test_template_service_monitor(helm: Helm) -> None:
    docs = helm.render(FEATURES["serviceMonitor"])
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    svc = one(docs, "Service")
    assert all(
        svc["metadata"]["labels"].get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items()
    )
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["stargate-system"]}
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == svc["spec"]["ports"][0]["name"] and ep["path"] == "/metrics"
    assert ep["interval"] == "30s" and ep["scrapeTimeout"] == "10s"
    assert ep["relabelings"] == FEATURES["serviceMonitor"]["serviceMonitor"]["relabelings"]
    assert not by_kind(helm.render(), "ServiceMonitor")
    bad = helm.template(
        {"serviceMonitor": {"enabled": True}, "metrics": {"service": {"enabled": False}}}, check=False
    )
    assert (
        bad.returncode != 0 and "serviceMonitor.enabled=true needs metrics.service.enabled=true" in bad.stderr
    )


def test_template_prometheus_rule(helm: Helm) -> None:
    rules_file = CHART / "files" / "stargate-alerts.yaml"
    assert rules_file.exists(), "the chart's alert rules (files/stargate-alerts.yaml) are missing"
    docs = helm.render(FEATURES["prometheusRule"])
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The rule file is the single source: the PrometheusRule carries exactly its groups.
    assert rule["spec"]["groups"] == yaml.safe_load(rules_file.read_text())["groups"]
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert alerts and all(r.get("expr") for g in rule["spec"]["groups"] for r in g["rules"])
    assert not by_kind(helm.render(), "PrometheusRule")


def test_template_prometheus_rule_runbook_urls(helm: Helm) -> None:
    """Every alert links to its runbook; prometheusRule.runbookBaseURL moves the links to where a
    site publishes the docs, and nothing else in the rules changes."""
    base = "https://docs.example.com/stargate/"
    plain = one(helm.render(FEATURES["prometheusRule"]), "PrometheusRule")
    moved = one(helm.render({"prometheusRule": {"enabled": True, "runbookBaseURL": base}}), "PrometheusRule")
    plain_rules = [r for g in plain["spec"]["groups"] for r in g["rules"] if "alert" in r]
    moved_rules = [r for g in moved["spec"]["groups"] for r in g["rules"] if "alert" in r]
    for a, b in zip(plain_rules, moved_rules, strict=True):
        anchor = a["alert"].lower()
        assert a["annotations"]["runbook_url"] == f"http://127.0.0.1:8000/operations/runbooks.html#{anchor}"
        assert b["annotations"]["runbook_url"] == f"{base}operations/runbooks.html#{anchor}"
        assert {**b, "annotations": {**b["annotations"], "runbook_url": ""}} == {
            **a, "annotations": {**a["annotations"], "runbook_url": ""}}
    bad = helm("template", "sg", str(CHART), "--set", "prometheusRule.runbookBaseURL=docs.example.com",
               check=False)
    assert bad.returncode != 0 and "runbookBaseURL" in bad.stderr


def test_template_dashboards(helm: Helm) -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    # Site overview, power, memory pools, operator health, and the power tree.
    assert sorted(f.stem for f in files) == ["memory-pools", "operator-health", "power", "power-tree",
                                             "site-overview"]
    docs = helm.render(FEATURES["dashboards"])
    maps = by_kind(docs, "ConfigMap")
    assert sorted(m["metadata"]["name"] for m in maps) == sorted(
        f"sg-stargate-operator-dashboard-{f.stem}" for f in files
    )
    uids = [json.loads(f.read_text()).get("uid") for f in files]
    assert all(uids) and len(set(uids)) == len(uids), f"each dashboard needs a uid of its own: {uids}"
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "Stargate"}
        ((key, text),) = cm["data"].items()
        assert text == (CHART / "dashboards" / key).read_text().rstrip("\n")
        json.loads(text)
    assert not by_kind(helm.render(), "ConfigMap")


def test_template_leader_election(helm: Helm) -> None:
    docs = helm.render(FEATURES["leaderElection"])
    deps = by_kind(docs, "Deployment")
    assert [d["metadata"]["name"] for d in deps] == ["sg-stargate-operator", "sg-stargate-operator-standby-1"]
    args = [d["spec"]["template"]["spec"]["containers"][0]["args"] for d in deps]
    # Identical replicas: whichever holds the Lease acts (the operator's defaults).
    assert args[0] == args[1]
    assert {"--leader-election=sg-stargate-operator-leader", "--leader-election-namespace=stargate-system",
            "--leader-lease-duration=10", "--leader-renew-deadline=7",
            "--leader-retry-period=1"} <= set(args[0])
    selectors = [d["spec"]["selector"]["matchLabels"] for d in deps]
    assert selectors[0] != selectors[1]
    # The Lease is the operator's to create; its Role is in the release namespace, named to the Lease.
    assert not by_kind(docs, "Lease")
    roles = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] == "stargate-system"]
    assert [r["metadata"]["name"] for r in roles] == ["sg-stargate-operator-leader-election"]
    assert roles[0]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["sg-stargate-operator-leader"], "verbs": ["get", "update"]},
    ]
    crds = by_kind(docs, "CustomResourceDefinition")
    assert not any(d["metadata"]["name"].endswith("kopf.dev") for d in crds)
    named = helm.render({**FEATURES["leaderElection"],
                         "leaderElection": {"enabled": True, "leaseName": "shard-a"}})
    assert all("--leader-election=shard-a" in d["spec"]["template"]["spec"]["containers"][0]["args"]
               for d in by_kind(named, "Deployment"))
    bad = helm.template({"replicaCount": 2}, check=False)
    assert bad.returncode != 0 and "replicaCount=2 needs leaderElection.enabled=true" in bad.stderr


def test_template_failover_beats_the_agents_failsafe(helm: Helm) -> None:
    """A standby's takeover renews the fail-safe Lease before any agent gives up on it: at the
    defaults the rule holds and the chart renders; values that break it are refused (naming them),
    unless there is no failover (no leader election) or no fail-safe (agent.failsafeAfter 0)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    le = values["leaderElection"]
    takeover = (le["leaseDurationSeconds"] + 4.4 * le["retryPeriodSeconds"]
                + values["operator"]["failsafeLeaseDurationSeconds"] / 3)
    assert takeover < values["agent"]["failsafeAfter"], takeover
    docs = helm.render({"leaderElection": {"enabled": True}, "replicaCount": 2,
                        "agent": {"enabled": True, "sites": ["site-a"]}})
    operator_args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--lease-duration=15" in operator_args and "--leader-lease-duration=10" in operator_args
    agent_args = one(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--failsafe-after=30" in agent_args
    too_slow = {"leaderElection": {"enabled": True, "leaseDurationSeconds": 15, "renewDeadlineSeconds": 10,
                                   "retryPeriodSeconds": 3},
                "operator": {"failsafeLeaseDurationSeconds": 9}}  # 15 + 13.2 + 3 = 31.2 s
    bad = helm.template(too_slow, check=False)
    assert bad.returncode != 0
    assert ("leaderElection.retryPeriodSeconds (3) + operator.failsafeLeaseDurationSeconds (9) / 3 = 31.2 s "
            "must stay below agent.failsafeAfter (30 s)") in bad.stderr, bad.stderr
    helm.render({**too_slow, "agent": {"failsafeAfter": 32}})
    helm.render({**too_slow, "agent": {"failsafeAfter": 0}})
    helm.render({**too_slow, "leaderElection": {"enabled": False, "retryPeriodSeconds": 3}})


def _flow_matches(schema: dict[str, Any], group: str, resource: str, verb: str, namespace: str) -> bool:
    """Whether one of the FlowSchema's resource rules matches a namespaced request (as the API
    server's matcher does: exact names, "*" for any)."""
    def has(items: list[str], item: str) -> bool:
        return item in items or "*" in items

    return any(
        has(rule["verbs"], verb) and has(rule["apiGroups"], group) and has(rule["resources"], resource)
        and has(rule.get("namespaces", []), namespace)
        for r in schema["spec"]["rules"] for rule in r.get("resourceRules", [])
    )


def test_template_flow_control(helm: Helm) -> None:
    """The operator's GPUNode status patches get a low priority level of their own; its slice
    writes, its Leases and everything else stay in the built-in service-accounts schema."""
    docs = helm.render()
    plc = one(docs, "PriorityLevelConfiguration")
    schema = one(docs, "FlowSchema")
    for doc in (plc, schema):
        assert doc["apiVersion"] == "flowcontrol.apiserver.k8s.io/v1"
        assert doc["metadata"]["name"] == "sg-stargate-operator-gpunode-status"
    limited = plc["spec"]["limited"]
    assert plc["spec"]["type"] == "Limited"
    # Fewer seats than workload-low (100), where the operator's other requests go; queued, not refused.
    assert 0 < limited["nominalConcurrencyShares"] < 100
    assert limited["limitResponse"]["type"] == "Queue" and limited["limitResponse"]["queuing"]["queues"] > 0
    assert schema["spec"]["priorityLevelConfiguration"] == {"name": plc["metadata"]["name"]}
    # Judged before service-accounts (9000), after the API server's own schemas (below 1000).
    assert 1000 <= schema["spec"]["matchingPrecedence"] < 9000
    (rule,) = schema["spec"]["rules"]
    operator_sa = {"name": "sg-stargate-operator", "namespace": "stargate-system"}
    assert rule["subjects"] == [{"kind": "ServiceAccount", "serviceAccount": operator_sa}]
    assert "nonResourceRules" not in rule
    gpunode_status = f"{kinds.GPU_NODE.plural}/status"
    assert _flow_matches(schema, kinds.GROUP, gpunode_status, "patch", "site-a")
    slices = kinds.POWER_LIMIT_SLICE.plural
    leases = "coordination.k8s.io"
    not_matched = [
        (kinds.GROUP, slices, "create"), (kinds.GROUP, slices, "patch"),
        (kinds.GROUP, f"{slices}/status", "patch"),
        (leases, "leases", "create"), (leases, "leases", "update"), (leases, "leases", "get"),
        (kinds.GROUP, kinds.GPU_NODE.plural, "patch"),
        (kinds.GROUP, gpunode_status, "update"), (kinds.GROUP, gpunode_status, "get"),
        ("", "events", "create"), (kinds.GROUP, f"{kinds.RACK.plural}/status", "patch"),
    ]
    assert [m for m in not_matched if _flow_matches(schema, *m, "site-a")] == []
    # The subject follows the ServiceAccount the operator runs as.
    named = one(helm.render({"serviceAccount": {"create": False, "name": "power-ops"}}), "FlowSchema")
    assert named["spec"]["rules"][0]["subjects"][0]["serviceAccount"]["name"] == "power-ops"
    off = helm.render({"flowControl": {"enabled": False}})
    assert not by_kind(off, "FlowSchema") and not by_kind(off, "PriorityLevelConfiguration")


def test_template_watch_namespaces(helm: Helm) -> None:
    docs = helm.render(FEATURES["watchNamespaces+leaderElection"])
    roles = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] != "stargate-system"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["site-a", "site-b"]
    bindings = [b for b in by_kind(docs, "RoleBinding") if b["metadata"]["namespace"] != "stargate-system"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["site-a", "site-b"]
    for b in bindings:
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": "sg-stargate-operator", "namespace": "stargate-system"}
        ]
        assert b["roleRef"]["kind"] == "Role"
    # No namespaced resource is granted cluster-wide: only cluster-scoped ones are in the ClusterRole.
    cluster_roles = by_kind(docs, "ClusterRole")
    cluster_grants = grants(cluster_roles)
    assert not any(g in ("stargate.dev", "coordination.k8s.io") or r == "events"
                   for g, r, _ in cluster_grants), cluster_grants
    for dep in by_kind(docs, "Deployment"):
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--namespace=site-a" in args and "--namespace=site-b" in args


def _role_grants(docs: list[dict[str, Any]], subject: str) -> dict[str, set[tuple[str, str, str]]]:
    """(apiGroup, resource, verb) granted to the ServiceAccount ``subject`` per namespace of its
    Roles ("" for its ClusterRoles)."""
    bound: set[tuple[str, str, str]] = set()  # (role kind, namespace, name)
    for b in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding"):
        if any(s["kind"] == "ServiceAccount" and s["name"] == subject for s in b["subjects"]):
            bound.add((b["roleRef"]["kind"], b["metadata"].get("namespace", ""), b["roleRef"]["name"]))
    out: dict[str, set[tuple[str, str, str]]] = {}
    for role in by_kind(docs, "Role") + by_kind(docs, "ClusterRole"):
        ns = role["metadata"].get("namespace", "")
        if (role["kind"], ns, role["metadata"]["name"]) in bound:
            out.setdefault(ns, set()).update(grants([role]))
    return out


AGENT_GRANTS = {
    ("stargate.dev", "gpunodes", "list"),
    ("stargate.dev", "gpunodes", "watch"),
    ("stargate.dev", "racks", "list"),
    ("stargate.dev", "racks", "watch"),
    ("stargate.dev", "powerlimitslices", "list"),
    ("stargate.dev", "powerlimitslices", "watch"),
    ("stargate.dev", "gpunodes/status", "patch"),
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "watch"),
    ("", "events", "create"),
}


def test_template_agent(helm: Helm) -> None:
    """agent.enabled: a DaemonSet per site on its GPU Nodes, with the node's name from the downward
    API, the NVIDIA runtime class and only CAP_SYS_ADMIN added; its own ServiceAccount with a Role in
    each site's namespace and nothing cluster-wide; the node-isolation admission policy."""
    assert not by_kind(helm.render(), "DaemonSet")
    assert not by_kind(helm.render(), "ValidatingAdmissionPolicy")
    docs = helm.render(FEATURES["agent+discovery"])
    sets = by_kind(docs, "DaemonSet")
    assert [d["metadata"]["name"] for d in sets] == ["sg-stargate-operator-agent-site-a",
                                                     "sg-stargate-operator-agent-site-b"]
    operator_sa = "sg-stargate-operator"
    for ds, site in zip(sets, ("site-a", "site-b"), strict=True):
        pod = ds["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "sg-stargate-operator-agent" != operator_sa
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true", "stargate.dev/site": site}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        # The agent lifts the power-unmanaged taint: it runs on a Node that carries it.
        assert {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["runtimeClassName"] == "nvidia"
        assert pod["automountServiceAccountToken"] is True
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        assert all("hostPath" not in v for v in pod["volumes"])
        (c,) = pod["containers"]
        assert c["command"] == ["stargate-operator", "agent"]
        assert c["args"] == [
            "--node=$(NODE_NAME)", f"--namespace={site}", "--interval=10", "--failsafe-after=30",
            "--failsafe-spread=10",
            "--log-level=INFO"
        ]
        env = {e["name"]: e for e in c["env"]}
        assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
        assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
        assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
        assert c["image"] == one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
        assert "nvidia.com/gpu" not in json.dumps(c["resources"])  # it takes no GPU from workloads
        sc = c["securityContext"]
        assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
        assert not sc.get("privileged") and sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    agent = _role_grants(docs, "sg-stargate-operator-agent")
    assert agent == {"site-a": AGENT_GRANTS, "site-b": AGENT_GRANTS}, agent
    vap = one(docs, "ValidatingAdmissionPolicy")
    (rule,) = vap["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["gpunodes/status"] and rule["operations"] == ["UPDATE"]
    (cond,) = vap["spec"]["matchConditions"]
    assert "'system:serviceaccount:stargate-system:sg-stargate-operator-agent'" in cond["expression"]
    binding = one(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": vap["metadata"]["name"], "validationActions": ["Deny"]}
    off = helm.render({**FEATURES["agent+discovery"], "agent": {"enabled": True, "sites": ["site-a"],
                                                                 "nodeIsolation": False}})
    assert not by_kind(off, "ValidatingAdmissionPolicy") and len(by_kind(off, "DaemonSet")) == 1
    # Sites default to watchNamespaces; the site label key is discovery's.
    shard = helm.render(FEATURES["agent+discovery+watchNamespaces"])
    selectors = [d["spec"]["template"]["spec"]["nodeSelector"] for d in by_kind(shard, "DaemonSet")]
    assert selectors == [
        {"nvidia.com/gpu.present": "true", "example.com/site": s} for s in ("site-a", "site-b")
    ]
    assert all("runtimeClassName" not in d["spec"]["template"]["spec"] for d in by_kind(shard, "DaemonSet"))
    pinned = {"repository": "registry.example/agent", "digest": "sha256:" + "b" * 64}
    image = helm.render({"agent": {"enabled": True, "sites": ["s"], "image": pinned}})
    assert by_kind(image, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.example/agent@sha256:" + "b" * 64
    )


SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"


def test_template_agents_report_to_prometheus(helm: Helm) -> None:
    """operator.telemetry=prometheus: the operator reads the agents' series at its Prometheus URL;
    the agents report there (--report-to prometheus, metrics on 9402, scrape annotations on the pods
    and on a headless Service); a ServiceMonitor relabels each pod's node into `node` with
    honorLabels false, rendered where the cluster serves the kind (auto) or when asked."""
    values = FEATURES["agent+prometheus"]
    docs = helm.render(values, api_versions=(SERVICE_MONITOR_API,))
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--telemetry=prometheus" in args and "--prometheus-series=agent" in args
    assert "--prometheus-url=http://prometheus-operated.monitoring:9090" in args
    assert not any(a.startswith("--prometheus-node-label") for a in args)  # the series' own: node
    pod = one(docs, "DaemonSet")["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert "--report-to=prometheus" in c["args"] and "--metrics-port=9402" in c["args"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9402, "protocol": "TCP"}]
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": "9402", "prometheus.io/path": "/metrics"}
    assert scrape.items() <= pod["metadata"]["annotations"].items()
    agents = "sg-stargate-operator-agent"
    svc = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"] == f"{agents}-metrics")
    assert svc["spec"]["clusterIP"] == "None" and scrape.items() <= svc["metadata"]["annotations"].items()
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    sm = next(d for d in by_kind(docs, "ServiceMonitor") if d["metadata"]["name"] == agents)
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == "metrics" and ep["interval"] == "15s" and ep["honorLabels"] is False
    assert ep["relabelings"] == [{"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                                  "targetLabel": "node"}]
    # auto: no ServiceMonitor where the cluster does not serve the kind; true: always.
    assert not by_kind(helm.render(values), "ServiceMonitor")
    forced = {**values, "agent": {**values["agent"], "serviceMonitor": {"enabled": True}}}
    assert len(by_kind(helm.render(forced), "ServiceMonitor")) == 1
    # The agents' series not read (dcgm, or no Prometheus): they keep writing their GPUNodes.
    dcgm = {**values, "operator": {**values["operator"], "prometheusSeries": "dcgm",
                                   "prometheusNodeLabel": "Hostname"}}
    docs = helm.render(dcgm, api_versions=(SERVICE_MONITOR_API,))
    assert "--prometheus-node-label=Hostname" in one(docs, "Deployment")["spec"]["template"]["spec"][
        "containers"][0]["args"]
    (c,) = one(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert not any(a.startswith(("--report-to", "--metrics-port")) for a in c["args"])
    assert not by_kind(docs, "ServiceMonitor")
    plain = helm.render(FEATURES["agent+discovery"], api_versions=(SERVICE_MONITOR_API,))
    annotations = by_kind(plain, "DaemonSet")[0]["spec"]["template"]["metadata"]["annotations"]
    assert "prometheus.io/scrape" not in annotations


def test_template_discovery(helm: Helm) -> None:
    """discovery.enabled: the operator's flags, list/watch on Nodes (only then), and GPUNode writes by
    server-side apply and delete: cluster-wide, or in each watched namespace of a shard."""
    assert not any(r == "nodes" for _, r, _ in grants(helm.render()))
    docs = helm.render(FEATURES["agent+discovery"])
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-3:] == ["--discover-nodes", "--discovery-site-label=stargate.dev/site",
                         "--discovery-rack-label=stargate.dev/rack"]
    operator = _role_grants(docs, "sg-stargate-operator")
    writes = {("stargate.dev", "gpunodes", v) for v in ("create", "patch", "delete")}
    assert {("", "nodes", "list"), ("", "nodes", "watch"), *writes} <= operator[""]
    assert not any(r == "nodes" and v not in ("list", "watch") for _, r, v in operator[""])
    shard = helm.render(FEATURES["agent+discovery+watchNamespaces"])
    args = by_kind(shard, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--discovery-site-label=example.com/site" in args
    operator = _role_grants(shard, "sg-stargate-operator")
    assert operator[""] == {("", "nodes", "list"), ("", "nodes", "watch")}  # Nodes are cluster-scoped
    for ns in ("site-a", "site-b"):
        assert writes <= operator[ns] and not operator[ns] & {("", "nodes", "list"), ("", "nodes", "watch")}
    # The power-unmanaged taint: the flag, and patch on Nodes, only with discovery.taintUnconfirmed.
    tainting = helm.render({**FEATURES["agent+discovery"],
                            "discovery": {"enabled": True, "taintUnconfirmed": True}})
    args = one(tainting, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-1] == "--taint-unconfirmed"
    assert ("", "nodes", "patch") in _role_grants(tainting, "sg-stargate-operator")[""]
    assert not any(r == "nodes" and v == "patch" for _, r, v in grants(docs))
    off = helm.render({"discovery": {"taintUnconfirmed": True}})  # without discovery: nothing
    assert not any(r == "nodes" for _, r, _ in grants(off))


def test_template_crds_keep_and_enabled(helm: Helm) -> None:
    def policies(values: dict[str, Any]) -> dict[str, str | None]:
        return {
            d["metadata"]["name"]: (d["metadata"].get("annotations") or {}).get("helm.sh/resource-policy")
            for d in by_kind(helm.render(values), "CustomResourceDefinition")
        }

    kept = policies({})
    assert len(kept) == len(STARGATE_PLURALS) and set(kept.values()) == {"keep"}
    assert set(policies(FEATURES["crds.keep=false"]).values()) == {None}
    assert policies(FEATURES["crds.enabled=false"]) == {}


def test_chart_crds_are_the_generated_crds(helm: Helm) -> None:
    """files/crds/ is byte for byte crds/ (both written by hack/gen-crds.py), and the chart renders it
    unchanged but for its labels and the keep annotation."""
    from stargate_operator.api.crdgen import render_all

    generated = render_all()
    chart_files = {p.name: p.read_text() for p in sorted((CHART / "files" / "crds").glob("*.yaml"))}
    repo_files = {p.name: p.read_text() for p in sorted((ROOT / "crds").glob("*.yaml"))}
    assert chart_files == repo_files, (
        "helm/stargate-operator/files/crds differs from crds/: run hack/gen-crds.py"
    )
    assert chart_files == generated, "the chart's CRDs are not what the models generate: run hack/gen-crds.py"
    rendered = {d["metadata"]["name"]: d for d in by_kind(helm.render(), "CustomResourceDefinition")}
    for text in repo_files.values():
        want = yaml.safe_load(text)
        got = rendered[want["metadata"]["name"]]
        meta = dict(got["metadata"])
        assert meta.pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert meta.pop("labels")["app.kubernetes.io/managed-by"] == "Helm"
        assert {**got, "metadata": meta} == want


# Bad values and the message that must say what is wrong.
BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"replicaCount": 0}, "at '/replicaCount': minimum: got 0, want 1"),
    (
        {"operator": {"telemetry": "grafana"}},
        "at '/operator/telemetry': value must be one of 'none', 'prometheus'",
    ),
    ({"operator": {"logLevel": "verbose"}}, "at '/operator/logLevel': value must be one of"),
    (
        {"serviceMonitor": {"enable": True}},
        "at '/serviceMonitor': additional properties 'enable' not allowed",
    ),
    ({"watchNamespaces": ["Site_A"]}, "at '/watchNamespaces/0': 'Site_A' does not match pattern"),
    ({"watchNamespaces": "site-a"}, "at '/watchNamespaces': got string, want array"),
    ({"metrics": {"port": 70000}}, "at '/metrics/port': maximum"),
    ({"serviceMonitor": {"interval": 30}}, "at '/serviceMonitor/interval': got number, want string"),
    ({"crds": {"keep": "yes"}}, "at '/crds/keep': got string, want boolean"),
    ({"image": {"digest": "latest"}}, "at '/image/digest': 'latest' does not match pattern"),
    ({"replicaCount": 2}, "replicaCount=2 needs leaderElection.enabled=true"),
    (
        {"leaderElection": {"leaseDurationSeconds": 7}},
        "leaderElection.leaseDurationSeconds (7) must be greater than "
        "leaderElection.renewDeadlineSeconds (7)",
    ),
    (
        {"leaderElection": {"retryPeriodSeconds": 9}},
        "leaderElection.renewDeadlineSeconds (7) must be greater than 1.2 x "
        "leaderElection.retryPeriodSeconds (9)",
    ),
    (
        {"leaderElection": {"lifetimeSeconds": 15}},
        "at '/leaderElection': additional properties 'lifetimeSeconds'",
    ),
    (
        {"leaderElection": {"enabled": True, "leaseDurationSeconds": 21}},
        "a failover would trip the agents' fail-safe: leaderElection.leaseDurationSeconds (21) + 4.4 x "
        "leaderElection.retryPeriodSeconds (1) + operator.failsafeLeaseDurationSeconds (15) / 3 = 30.4 s "
        "must stay below agent.failsafeAfter (30 s)",
    ),
    ({"agent": {"failsafeAfter": -1}}, "at '/agent/failsafeAfter'"),
    ({"flowControl": {"enabled": "yes"}}, "at '/flowControl/enabled': got string, want boolean"),
    ({"operator": {"telemetry": "prometheus"}}, "operator.telemetry=prometheus needs operator.prometheusUrl"),
    ({"health": {"port": 8080}}, "metrics.port and health.port are both 8080"),
    (
        {"agent": {"enabled": True, "sites": ["s"], "reportTo": "prometheus"}},
        "agent.reportTo=prometheus needs operator.telemetry=prometheus and operator.prometheusSeries=agent",
    ),
    ({"operator": {"prometheusSeries": "nvml"}}, "at '/operator/prometheusSeries'"),
    ({"serviceAccount": {"create": False}}, "serviceAccount.create=false needs serviceAccount.name"),
    ({"agent": {"enabled": True}}, "agent.enabled=true needs agent.sites (or watchNamespaces)"),
    (
        {"agent": {"enabled": True, "sites": ["Site_A"]}},
        "at '/agent/sites/0': 'Site_A' does not match pattern",
    ),
    ({"agent": {"interval": 0}}, "at '/agent/interval'"),
    ({"agent": {"enable": True}}, "at '/agent': additional properties 'enable' not allowed"),
    (
        {"discovery": {"siteLabel": "no spaces"}},
        "at '/discovery/siteLabel': 'no spaces' does not match pattern",
    ),
    (
        {"agent": {"enabled": True, "sites": ["s"], "serviceAccount": {"name": "sg-stargate-operator"}}},
        "agent.serviceAccount.name must differ from the operator's ServiceAccount",
    ),
    (
        {"watchNamespaces": ["site-a"], "agent": {"enabled": True, "sites": ["site-b"]}},
        "agent.sites names site-b, which is not in watchNamespaces",
    ),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES, ids=[m.split(":")[0] for _, m in BAD_VALUES])
def test_bad_values_rejected_with_a_clear_message(helm: Helm, values: dict[str, Any], message: str) -> None:
    proc = helm.template(values, check=False)
    assert proc.returncode != 0, f"helm template accepted {values}"
    assert message in proc.stderr, proc.stderr




def test_chart_packages_and_renders_the_same(helm: Helm, tmp_path: Path) -> None:
    """`helm package` keeps everything the templates read (.helmignore drops nothing needed)."""
    out = helm("package", str(CHART), "--destination", str(tmp_path)).stdout
    (package,) = tmp_path.glob("stargate-operator-*.tgz")
    assert str(package) in out
    values = helm.values_file(FEATURES["everything"])
    args = ["--namespace", "stargate-system", "--kube-version", KUBE_VERSION, "-f", str(values)]
    from_dir = helm("template", "sg", str(CHART), *args).stdout
    from_package = helm("template", "sg", str(package), *args).stdout
    assert from_package == from_dir


def test_helm_show_readme_lists_every_value(helm: Helm) -> None:
    """`helm show readme` prints the chart's README, which hack/gen-docs.py writes with every
    documented value (tests/unit/test_docs.py checks it is current)."""
    readme = helm("show", "readme", str(CHART)).stdout
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in ("watchNamespaces", "crds.keep", "prometheusRule.runbookBaseURL", "agent.enabled"):
        head = values
        for part in key.split("."):
            head = head[part]  # the key is a real value of the chart
        assert f"| `{key}` |" in readme, key


# ------------------------------------------------------------------------------- control plane
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  # What every ServiceAccount does, with the authorizer's decision in the annotations.
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
"""


@dataclass
class Cluster:
    cp: LocalControlPlane
    kubectl: Kubectl
    helm: Helm
    audit_log: Path
    workdir: Path
    releases: dict[str, dict[str, Any]] = field(default_factory=dict)

    def install(
        self, release: str, namespace: str, values: dict[str, Any]
    ) -> subprocess.CompletedProcess[str]:
        self.kubectl("create", "namespace", namespace, check=False)
        proc = self.helm(
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "-f",
            str(self.helm.values_file(values, release)),
        )
        self.releases[release] = {"namespace": namespace, "values": values}
        return proc

    def manifest(self, release: str) -> list[dict[str, Any]]:
        ns = self.releases[release]["namespace"]
        text = self.helm("get", "manifest", release, "--namespace", ns).stdout
        return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def cluster(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A private control plane with an audit log, the monitoring CRDs, and three releases of the chart:

    * ``sg`` in stargate-system: the default values (all namespaces, no leader election), owns the CRDs;
    * ``sg-peer`` in stargate-peer: all namespaces, leader election, no CRDs;
    * ``sg-shard`` in stargate-shard: only namespace rec-shard, leader election, no CRDs.
    """
    workdir = tmp_path_factory.mktemp("helm-cp")
    policy = workdir / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    audit_log = workdir / "audit.log"
    try:
        binaries = ensure_control_plane()
        kubectl_bin = ensure_kubectl()
    except BinaryError as e:
        pytest.fail(f"the local control plane's binaries are missing: {e}", pytrace=False)
    cp = LocalControlPlane(
        binaries=binaries,
        kubectl=kubectl_bin,
        extra_apiserver_args=[
            f"--audit-policy-file={policy}",
            f"--audit-log-path={audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        ],
    )
    with cp:
        kubectl = Kubectl(cp)
        chart_helm = Helm(helm.binary, helm.home, cp.kubeconfig)
        c = Cluster(cp, kubectl, chart_helm, audit_log, workdir)
        # ServiceMonitor and PrometheusRule (minimal stand-ins of prometheus-operator's CRDs).
        kubectl("apply", "--server-side", "-f", str(FIXTURES / "monitoring.coreos.com-crds.yaml"))
        kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        )
        kubectl("create", "namespace", "rec-shard")
        ports = {"metrics": {"port": free_port()}, "health": {"port": free_port()}}
        c.install("sg", "stargate-system", {**ports})
        c.install(
            "sg-peer", "stargate-peer",
            {**ports, "crds": {"enabled": False}, "leaderElection": {"enabled": True}},
        )
        c.install(
            "sg-shard",
            "stargate-shard",
            {
                **ports,
                "crds": {"enabled": False},
                "watchNamespaces": ["rec-shard"],
                "leaderElection": {"enabled": True},
            },
        )
        kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *[f"crd/{p}.stargate.dev" for p in STARGATE_PLURALS],
        )
        yield c


def test_chart_kube_version_admits_the_local_server(cluster: Cluster) -> None:
    """The local kube-apiserver says its real version (version ldflags at build time), so the chart
    can state kubeVersion and helm checks it on every install above."""
    version = cluster.kubectl.json("version", "-o", "json")["serverVersion"]
    assert version["gitVersion"] == KUBERNETES_VERSION, version
    assert (int(version["major"]), int(version["minor"])) >= (1, 30)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.30.0-0"
    # helm refuses an install on a server the constraint excludes, naming it.
    refused = cluster.helm("template", "x", str(CHART), "--kube-version", "1.29.0", check=False)
    assert refused.returncode != 0 and "kubeVersion" in refused.stderr + refused.stdout, refused


def test_helm_install(cluster: Cluster) -> None:
    for release, info in cluster.releases.items():
        status = json.loads(
            cluster.helm("status", release, "--namespace", info["namespace"], "-o", "json").stdout
        )
        assert status["info"]["status"] == "deployed", status["info"]
        assert "The Stargate operator" in status["info"]["notes"]
    # The CRDs are Helm's, kept on uninstall, and served.
    crd = cluster.kubectl.json("get", "crd", "racks.stargate.dev")
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == "sg"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # The category of every kind (`kubectl get stargate`) is served once discovery has them.
    deadline = time.monotonic() + 30
    while cluster.kubectl("get", "stargate", "-A", check=False).returncode != 0:
        assert time.monotonic() < deadline, "kubectl get stargate: the category is not served"
        shutil.rmtree(cluster.cp.workdir / "kubectl-cache", ignore_errors=True)
        time.sleep(0.5)
    dep = cluster.kubectl.json("get", "deployment", "sg-stargate-operator", "-n", "stargate-system")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "sg-stargate-operator"
    cluster.kubectl("get", "role,rolebinding", "sg-shard-stargate-operator", "-n", "rec-shard")


def test_helm_install_and_upgrade_every_feature(cluster: Cluster) -> None:
    """A release with every optional feature on installs (ServiceMonitor and PrometheusRule against the
    monitoring CRDs), upgrades in place with changed values, and uninstalls, leaving no object."""
    ns = "stargate-all"
    values = {
        **FEATURES["everything"],
        "crds": {"enabled": False},
    }
    cluster.install("sg-all", ns, values)
    cluster.kubectl("get", "servicemonitor,prometheusrule", "sg-all-stargate-operator", "-n", ns)
    maps = cluster.kubectl.json("get", "configmap", "-n", ns, "-l", "grafana_dashboard=1")["items"]
    assert len(maps) == len(list((CHART / "dashboards").glob("*.json")))
    deps = cluster.kubectl.json("get", "deployment", "-n", ns, "-l", "app.kubernetes.io/instance=sg-all")[
        "items"
    ]
    assert len(deps) == 2

    upgraded = cluster.helm(
        "upgrade",
        "sg-all",
        str(CHART),
        "--namespace",
        ns,
        "--reuse-values",
        "--set",
        "operator.logLevel=DEBUG",
        "--set",
        "replicaCount=1",
        "--set",
        "serviceMonitor.interval=15s",
    )
    assert "STATUS: deployed" in upgraded.stdout and "REVISION: 2" in upgraded.stdout
    deps = cluster.kubectl.json("get", "deployment", "-n", ns, "-l", "app.kubernetes.io/instance=sg-all")[
        "items"
    ]
    assert [d["metadata"]["name"] for d in deps] == ["sg-all-stargate-operator"]  # the standby went away
    assert "--log-level=DEBUG" in deps[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    sm = cluster.kubectl.json("get", "servicemonitor", "sg-all-stargate-operator", "-n", ns)
    assert sm["spec"]["endpoints"][0]["interval"] == "15s"
    history = json.loads(cluster.helm("history", "sg-all", "--namespace", ns, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    cluster.helm("uninstall", "sg-all", "--namespace", ns, "--wait")
    cluster.releases.pop("sg-all")
    left = cluster.kubectl(
        "get",
        "all,configmap,servicemonitor,prometheusrule,serviceaccount,role,rolebinding",
        "-n",
        ns,
        "-l",
        "app.kubernetes.io/instance=sg-all",
        "-o",
        "name",
    ).stdout.split()
    left += cluster.kubectl(
        "get",
        "clusterrole,clusterrolebinding",
        "-l",
        "app.kubernetes.io/instance=sg-all",
        "-o",
        "name",
    ).stdout.split()
    assert left == []


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_rendered_manifests_pass_server_side_validation(cluster: Cluster, feature: str) -> None:
    """Every rendered object passes the API server's validation for the target Kubernetes version
    (server-side dry-run apply, unknown or misspelt fields rejected by --validate=strict)."""
    ns = "stargate-dryrun"
    cluster.kubectl("create", "namespace", ns, check=False)
    for site in ("site-a", "site-b"):
        cluster.kubectl("create", "namespace", site, check=False)
    rendered = cluster.helm.template(FEATURES[feature], release="dry", namespace=ns).stdout
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=helm-dry-run",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        input=rendered,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    applied = [line for line in proc.stdout.splitlines() if "serverside-applied" in line]
    assert len(applied) == len([d for d in yaml.safe_load_all(rendered) if d]), proc.stdout


# -------------------------------------------------------------------------------------------- RBAC
def sample_site(namespace: str) -> list[dict[str, Any]]:
    """The abilene sample site (crds/samples/1*.yaml) and its scheduled grid event
    (crds/samples/grid-events/abilene-*.yaml) moved into ``namespace``, plus one rack whose cluster
    does not exist (the operator must post an Event about it)."""
    docs: list[dict[str, Any]] = []
    for path in [*sorted(SAMPLES.glob("1*.yaml")), *sorted(SAMPLES.glob("grid-events/abilene-*.yaml"))]:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["apiVersion"].startswith("stargate.dev/"):
                doc["metadata"]["namespace"] = namespace
                docs.append(doc)
    assert any(d["kind"] == "MemoryClaim" for d in docs) and any(d["kind"] == "StargateCluster" for d in docs)
    docs.append(
        {
            "apiVersion": kinds.API_VERSION,
            "kind": "Rack",
            "metadata": {"name": "orphan", "namespace": namespace},
            "spec": {"clusterRef": "no-such-site", "maxPowerWatts": 40000},
        }
    )
    return docs


@dataclass
class RecordedRun:
    release: str
    user: str
    site_namespace: str
    granted: set[tuple[str, str, str]]
    used: set[tuple[str, str, str]]
    denied: set[tuple[str, str, str]]
    statuses: dict[str, dict[str, Any]]
    events: list[dict[str, Any]]
    log: str


def _operator_command(
    manifest: list[dict[str, Any]], rank: int = 0, ports: tuple[int, int] | None = None
) -> list[str]:
    """`stargate-operator run` with the container arguments of replica ``rank``'s Deployment (the
    image's entrypoint plus the chart's args); ``ports`` (metrics, health) replace the chart's, so
    that two replicas can run side by side on one host."""
    dep = by_kind(manifest, "Deployment")[rank]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert "command" not in container, "the image's entrypoint (stargate-operator run) must run"
    args = list(container["args"])
    if ports is not None:
        args = [a for a in args if not a.startswith(("--metrics-port=", "--health-port="))]
        args += [f"--metrics-port={ports[0]}", f"--health-port={ports[1]}"]
    return [str(ROOT / ".venv" / "bin" / "stargate-operator"), "run", *args]


def _start_operator(cmd: list[str], kubeconfig: Path, identity: str, log: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STARGATE_")}
    env |= {"KUBECONFIG": str(kubeconfig), "POD_ID": identity, "HOSTNAME": identity}
    with log.open("w") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=log.parent,
            start_new_session=True,
        )


def _stop_operator(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _service_account_kubeconfig(
    cluster: Cluster, manifest: list[dict[str, Any]], name: str
) -> tuple[str, Path]:
    """The ServiceAccount's user name and a kubeconfig with a TokenRequest token for it."""
    (sa,) = by_kind(manifest, "ServiceAccount")
    sa_name, sa_ns = sa["metadata"]["name"], sa["metadata"]["namespace"]
    token = cluster.cp.create_token(sa_name, sa_ns)
    kubeconfig = cluster.cp.write_token_kubeconfig(cluster.workdir / f"{name}.kubeconfig", token)
    return f"system:serviceaccount:{sa_ns}:{sa_name}", kubeconfig


def _wait(what: str, check: Any, timeout: float, proc: subprocess.Popen[str], log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if proc.poll() is not None:
            pytest.fail(
                f"the operator exited ({proc.returncode}) while waiting for {what}:\n"
                f"{log.read_text()[-4000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout}s waiting for {what}; operator log:\n{log.read_text()[-4000:]}"
            )
        time.sleep(0.3)


def _statuses(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]] | None:
    """Every stargate object's status in ``namespace`` once all are current (observedGeneration)."""
    objs = cluster.kubectl.json("get", ",".join(STARGATE_PLURALS), "-n", namespace)["items"]
    done = {
        f"{o['kind']}/{o['metadata']['name']}": o["status"]
        for o in objs
        if (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
    }
    return done if objs and len(done) == len(objs) else None


def record_run(cluster: Cluster, release: str, site_namespace: str) -> RecordedRun:
    """Run the operator of ``release`` as a local process with its ServiceAccount's token and the
    installed Deployment's arguments; reconcile a site in ``site_namespace``; return the audit record."""
    info = cluster.releases[release]
    manifest = cluster.manifest(release)
    user, kubeconfig = _service_account_kubeconfig(cluster, manifest, release)
    # RBAC applies to this identity: no write to a spec (asked by the admin impersonating the
    # ServiceAccount, so that the question is not in the ServiceAccount's own audit record).
    can_i = cluster.kubectl(
        "auth", "can-i", "update", "racks.stargate.dev", "-n", site_namespace, f"--as={user}", check=False
    )
    assert can_i.stdout.strip() == "no", can_i.stdout
    cluster.kubectl("create", "namespace", site_namespace, check=False)
    cluster.kubectl.apply(sample_site(site_namespace))
    health_port = info["values"]["health"]["port"]
    log = cluster.workdir / f"{release}.log"
    proc = _start_operator(_operator_command(manifest), kubeconfig, f"{release}-operator-0", log)
    try:
        _wait(
            "/healthz (the chart's liveness and readiness probe path)",
            lambda: _healthy(health_port),
            60,
            proc,
            log,
        )

        def reconciled() -> dict[str, dict[str, Any]] | None:
            return _statuses(cluster, site_namespace)

        statuses = _wait(f"a status on every object in {site_namespace}", reconciled, 90, proc, log)

        def posted() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = cluster.kubectl.json(
                "get", "events", "-n", site_namespace, "--field-selector", "involvedObject.name=orphan"
            )["items"]
            return items

        events = _wait("an Event about the rack with a missing cluster", posted, 30, proc, log)

        def leased() -> bool:
            got = cluster.kubectl(
                "get", "lease", kinds.FAILSAFE_LEASE_NAME, "-n", site_namespace, "-o", "name", check=False
            )
            return got.returncode == 0

        # The fail-safe Lease's first renewal comes once the store is synced, like the statuses,
        # so it may follow them: the record is complete once it exists.
        _wait(f"the fail-safe Lease in {site_namespace}", leased, 30, proc, log)

        # A change of limits: the slices, created by apply, are rewritten onto the version held.
        def revisions() -> dict[str, int]:
            items = cluster.kubectl.json("get", kinds.POWER_LIMIT_SLICE.plural, "-n", site_namespace)["items"]
            return {o["metadata"]["name"]: o["spec"]["revision"] for o in items}

        before = revisions()
        site = next(k.split("/", 1)[1] for k in statuses if k.startswith(f"{kinds.STARGATE_CLUSTER.kind}/"))
        curtailment = {"percent": 90, "reason": "the recorded run's change of limits"}
        cluster.kubectl("patch", kinds.STARGATE_CLUSTER.plural, site, "-n",
                        site_namespace, "--type=merge", "-p",
                        json.dumps({"spec": {"power": {"curtailment": curtailment}}}))
        _wait("a slice rewritten with the curtailment's limits",
              lambda: any(rev > before.get(name, rev) for name, rev in revisions().items()), 30, proc, log)
    finally:
        _stop_operator(proc)
    time.sleep(0.5)  # the last audit lines (the Lease's release) reach the file

    used: set[tuple[str, str, str]] = set()
    refused: set[tuple[str, str, str]] = set()
    for line in cluster.audit_log.read_text().splitlines():
        ev = json.loads(line)
        ref = ev.get("objectRef")
        if ev["user"]["username"] != user or ref is None:
            continue  # non-resource requests (discovery) are every authenticated user's
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        key = (ref.get("apiGroup", ""), resource, ev["verb"])
        decision = (ev.get("annotations") or {}).get("authorization.k8s.io/decision")
        (refused if decision == "forbid" or ev.get("responseStatus", {}).get("code") == 403 else used).add(
            key
        )
    if ("stargate.dev", "powerlimitslices", "patch") in used:
        # A server-side apply that creates a slice is authorized as create too; the audit log
        # records only the patch.
        used.add(("stargate.dev", "powerlimitslices", "create"))
    granted = grants([d for d in manifest if d["kind"] in ("ClusterRole", "Role")])
    return RecordedRun(
        release, user, site_namespace, granted, used, refused, statuses, events, log.read_text()
    )


RUNS = {
    "all-namespaces": ("sg", "rec-all"),
    "all-namespaces+leaderElection": ("sg-peer", "rec-peer"),
    "watch-namespaces+leaderElection": ("sg-shard", "rec-shard"),
}


@pytest.fixture(scope="module")
def recorded(cluster: Cluster) -> dict[str, RecordedRun]:
    return {mode: record_run(cluster, release, ns) for mode, (release, ns) in RUNS.items()}


@pytest.mark.parametrize("mode", list(RUNS))
def test_rbac_is_sufficient(recorded: dict[str, RecordedRun], mode: str) -> None:
    """With nothing but the chart's RBAC the operator reconciles the whole sample site: every object
    gets a status (Ready decided), the bad rack gets Ready=False and an Event, nothing was denied."""
    run = recorded[mode]
    assert not run.denied, f"{run.user} was denied {sorted(run.denied)}; operator log:\n{run.log[-3000:]}"
    for name, status in run.statuses.items():
        if name.startswith(f"{kinds.POWER_LIMIT_SLICE.kind}/"):
            assert status["nodes"] >= 1, (name, status)  # the operator's own intent: no Ready
            continue
        ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
        assert ready and ready[0]["status"] in ("True", "False"), (name, status)
    orphan = run.statuses["Rack/orphan"]
    assert next(c for c in orphan["conditions"] if c["type"] == "Ready")["status"] == "False"
    assert run.events and run.events[0]["involvedObject"]["kind"] == "Rack"
    assert "Traceback" not in run.log, run.log[-3000:]


@pytest.mark.parametrize("mode", list(RUNS))
def test_rbac_grants_nothing_the_run_did_not_use(recorded: dict[str, RecordedRun], mode: str) -> None:
    """Every (apiGroup, resource, verb) the chart grants was used by the recorded run (audit log)."""
    run = recorded[mode]
    unused = run.granted - run.used
    assert not unused, (
        f"the chart grants {sorted(unused)} but the operator never used them (used: {sorted(run.used)})"
    )
    # And the other way round: every request it made is covered by a rule of the chart (none was
    # allowed by some default role instead), so the grants are exactly the recorded use.
    assert run.used == run.granted, sorted(run.used ^ run.granted)


def test_leader_election_standby_takes_over(cluster: Cluster, recorded: dict[str, RecordedRun]) -> None:
    """leaderElection.enabled with replicaCount=2: the replica started first takes the Lease, the
    second stands by and writes nothing; when the active one dies (SIGKILL, no release) the standby
    takes over once the Lease's duration has passed, and reconciles. Both run with the chart's
    ServiceAccount token."""
    assert recorded  # after the recorded runs: their audit record stays theirs alone
    ns, site = "stargate-ha", "rec-ha"
    cluster.install(
        "sg-ha",
        ns,
        {
            "crds": {"enabled": False},
            "replicaCount": 2,
            "leaderElection": {"enabled": True, "leaseDurationSeconds": 5, "renewDeadlineSeconds": 3,
                               "retryPeriodSeconds": 1},
        },
    )
    manifest = cluster.manifest("sg-ha")
    assert len(by_kind(manifest, "Deployment")) == 2
    _, kubeconfig = _service_account_kubeconfig(cluster, manifest, "sg-ha")
    cluster.kubectl("create", "namespace", site)
    cluster.kubectl.apply(sample_site(site))
    logs = [cluster.workdir / f"sg-ha-{rank}.log" for rank in (0, 1)]
    ports = [(free_port(), free_port()) for _ in (0, 1)]
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(_start_operator(_operator_command(manifest, 0, ports[0]), kubeconfig,
                                     "sg-ha-operator-0", logs[0]))
        _wait("replica 0 active", lambda: "is now active" in logs[0].read_text(), 60, procs[0], logs[0])
        procs.append(_start_operator(_operator_command(manifest, 1, ports[1]), kubeconfig,
                                     "sg-ha-operator-1", logs[1]))
        _wait("replica 1 healthy", lambda: _healthy(ports[1][1]), 60, procs[1], logs[1])
        _wait(f"a status on every object in {site}", lambda: _statuses(cluster, site), 90, procs[0], logs[0])
        time.sleep(3)  # a few retry periods: the standby has looked and stood by
        assert "standing by" in logs[1].read_text() and "is now active" not in logs[1].read_text()
        lease = cluster.kubectl.json("get", "lease", "sg-ha-stargate-operator-leader", "-n", ns)["spec"]
        assert lease["holderIdentity"] == "sg-ha-operator-0" and lease["leaseDurationSeconds"] == 5

        os.killpg(procs[0].pid, signal.SIGKILL)
        procs[0].wait()
        _wait("replica 1 to take over", lambda: "is now active" in logs[1].read_text(), 30, procs[1], logs[1])
        cluster.kubectl.apply(
            {
                "apiVersion": kinds.API_VERSION,
                "kind": "Rack",
                "metadata": {"name": "after-failover", "namespace": site},
                "spec": {"clusterRef": "abilene", "maxPowerWatts": 40000},
            }
        )
        _wait("the standby to reconcile a new rack", lambda: _statuses(cluster, site), 60, procs[1], logs[1])
    finally:
        for proc in procs:
            _stop_operator(proc)


def test_shard_releases_reach_only_their_namespaces(cluster: Cluster) -> None:
    """Sharding a campus across releases (docs/operations/scale.md): a release given watchNamespaces may
    write status in its namespaces and nowhere else, next to a cluster-wide release of the same chart."""

    def can(release: str, verb: str, resource: str, *where: str) -> bool:
        (sa,) = by_kind(cluster.manifest(release), "ServiceAccount")
        user = f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
        answer = cluster.kubectl("auth", "can-i", verb, resource, *where, f"--as={user}", check=False)
        return answer.stdout.strip() == "yes"

    for plural in STARGATE_PLURALS:
        resource = f"{plural}.stargate.dev"
        assert can("sg-shard", "patch", resource, "--subresource=status", "-n", "rec-shard")
        assert can("sg-shard", "watch", resource, "-n", "rec-shard")
        # Another shard's site, and the whole cluster: out of reach.
        assert not can("sg-shard", "patch", resource, "--subresource=status", "-n", "rec-all")
        assert not can("sg-shard", "list", resource, "-A")
        # The cluster-wide release reaches both.
        assert can("sg", "patch", resource, "--subresource=status", "-n", "rec-shard")
        assert can("sg", "list", resource, "-A")
    # Events too: the shard's warnings land in its own namespaces only.
    assert can("sg-shard", "create", "events", "-n", "rec-shard")
    assert not can("sg-shard", "create", "events", "-n", "rec-all")


# ------------------------------------------------------------------------ the agent and discovery
AGENT_RELEASE, AGENT_NS, AGENT_SITE, AGENT_NODE = "sg-agent", "stargate-agent", "rec-agent", "gpu-rec-1"
# Granted for what the agent is about to read and does not read yet: none now (its rack's limits
# and the site's fail-safe Lease are read). A rule granted ahead of its use goes
# here until the agent uses it; the proof below then covers it too.
AGENT_PENDING: set[tuple[str, str, str]] = set()


@dataclass
class AgentRun:
    user: str
    granted: set[tuple[str, str, str]]
    used: set[tuple[str, str, str]]
    denied: set[tuple[str, str, str]]
    status: dict[str, Any]
    events: list[dict[str, Any]]
    log: str


def _audit(cluster: Cluster, user: str) -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]]]:
    """(used, refused) (apiGroup, resource, verb) of ``user``'s resource requests in the audit log."""
    used: set[tuple[str, str, str]] = set()
    refused: set[tuple[str, str, str]] = set()
    for line in cluster.audit_log.read_text().splitlines():
        ev = json.loads(line)
        ref = ev.get("objectRef")
        if ev["user"]["username"] != user or ref is None:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        key = (ref.get("apiGroup", ""), resource, ev["verb"])
        decision = (ev.get("annotations") or {}).get("authorization.k8s.io/decision")
        forbidden = decision == "forbid" or ev.get("responseStatus", {}).get("code") == 403
        (refused if forbidden else used).add(key)
    return used, refused


@pytest.fixture(scope="module")
def agent_release(cluster: Cluster) -> list[dict[str, Any]]:
    """A release with the agent (for site rec-agent) and discovery on: its manifest."""
    cluster.kubectl("create", "namespace", AGENT_SITE, check=False)
    ports = {"metrics": {"port": free_port()}, "health": {"port": free_port()}}
    cluster.install(AGENT_RELEASE, AGENT_NS, {
        **ports,
        "crds": {"enabled": False},
        "agent": {"enabled": True, "sites": [AGENT_SITE], "interval": 1},
        "discovery": {"enabled": True},
    })
    return cluster.manifest(AGENT_RELEASE)


@pytest.fixture(scope="module")
def agent_run(cluster: Cluster, agent_release: list[dict[str, Any]]) -> AgentRun:
    """The agent as its DaemonSet runs it (command and arguments of the installed DaemonSet, simulated
    GPUs: there are none here) with the token the kubelet would project into its Pod on node
    gpu-rec-1 (a TokenRequest bound to a Pod with that nodeName), against a GPUNode whose assigned
    limit is above what its GPUs allow, so that it also posts its PowerLimitNotApplied Event."""
    (ds,) = by_kind(agent_release, "DaemonSet")
    pod_spec = ds["spec"]["template"]["spec"]
    sa = pod_spec["serviceAccountName"]
    user = f"system:serviceaccount:{AGENT_NS}:{sa}"
    kubectl = cluster.kubectl
    kubectl.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": AGENT_NODE}})
    kubectl.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent-0", "namespace": AGENT_NS},
                   "spec": {"serviceAccountName": sa, "nodeName": AGENT_NODE,
                            "containers": [{"name": "agent", "image": pod_spec["containers"][0]["image"]}]}})
    kubectl.apply({
        "apiVersion": kinds.API_VERSION, "kind": kinds.GPU_NODE.kind,
        "metadata": {"name": AGENT_NODE, "namespace": AGENT_SITE},
        "spec": {"rackRef": "r1", "nodeName": AGENT_NODE, "basePowerWatts": 4600,
                 "gpu": {"model": "H100-SXM", "count": 8, "memoryBytes": 80_000_000_000,
                         "minPowerWatts": 200, "maxPowerWatts": 700}},
    })
    # Its limit in a PowerLimitSlice its status names (900 W: above the range, so an Event follows).
    kubectl.apply({
        "apiVersion": kinds.API_VERSION, "kind": kinds.POWER_LIMIT_SLICE.kind,
        "metadata": {"name": "limits-0", "namespace": AGENT_SITE},
        "spec": {"limits": {AGENT_NODE: 900}, "revision": 1},
    })
    kubectl("patch", f"{kinds.GPU_NODE.plural}.{kinds.GROUP}", AGENT_NODE, "-n", AGENT_SITE,
            "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"powerLimitWatts": 900, "powerLimitSlice": "limits-0"}}))
    token = kubectl("create", "token", sa, "-n", AGENT_NS, "--duration=1h", "--bound-object-kind=Pod",
                    "--bound-object-name=agent-0").stdout.strip()
    kubeconfig = cluster.cp.write_token_kubeconfig(cluster.workdir / "agent.kubeconfig", token)
    (container,) = pod_spec["containers"]
    assert container["command"] == ["stargate-operator", "agent"]
    args = [a.replace("$(NODE_NAME)", AGENT_NODE) for a in container["args"]]
    cmd = [str(ROOT / ".venv" / "bin" / "stargate-operator"), "agent", *args, "--simulate"]
    log = cluster.workdir / "agent.log"
    proc = _start_operator(cmd, kubeconfig, "agent-0", log)
    path = ["get", f"{kinds.GPU_NODE.plural}.{kinds.GROUP}", AGENT_NODE, "-n", AGENT_SITE]
    try:
        def reported() -> dict[str, Any] | None:
            status: dict[str, Any] = kubectl.json(*path).get("status") or {}
            return status if "observedAt" in (status.get("telemetry") or {}) else None

        status = _wait("the agent's telemetry", reported, 60, proc, log)

        def posted() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = kubectl.json(
                "get", "events", "-n", AGENT_SITE, "--field-selector", f"involvedObject.name={AGENT_NODE}"
            )["items"]
            return [e for e in items if e["reason"] == "PowerLimitNotApplied"]

        events = _wait("the agent's PowerLimitNotApplied Event", posted, 30, proc, log)
        # Its rack's watch starts after the rack's list, and its limit is applied (and the Event
        # posted) before that on a busy machine: give the watch a moment to be made.
        time.sleep(2)
    finally:
        _stop_operator(proc)
    time.sleep(0.5)  # the last audit lines reach the file
    used, refused = _audit(cluster, user)
    roles = [d for d in agent_release if d["kind"] in ("Role", "ClusterRole")
             and d["metadata"]["labels"].get("app.kubernetes.io/component") == "agent"]
    return AgentRun(user, grants(roles), used, refused, status, events, log.read_text())


def test_chart_installs_with_agent_and_discovery(
    cluster: Cluster, agent_release: list[dict[str, Any]]
) -> None:
    status = json.loads(cluster.helm("status", AGENT_RELEASE, "--namespace", AGENT_NS, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed", status["info"]
    (ds,) = cluster.kubectl.json(
        "get", "daemonset", "-n", AGENT_NS, "-l", "app.kubernetes.io/component=agent"
    )["items"]
    assert ds["spec"]["template"]["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.present": "true", "stargate.dev/site": AGENT_SITE}
    name = f"{AGENT_RELEASE}-stargate-operator-agent-node-isolation"
    cluster.kubectl("get", "validatingadmissionpolicy,validatingadmissionpolicybinding", name)
    cluster.kubectl("get", "role,rolebinding", f"{AGENT_RELEASE}-stargate-operator-agent", "-n", AGENT_SITE)
    dep = cluster.kubectl.json("get", "deployment", f"{AGENT_RELEASE}-stargate-operator", "-n", AGENT_NS)
    assert "--discover-nodes" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    cluster.kubectl("get", "clusterrole,clusterrolebinding", f"{AGENT_RELEASE}-stargate-operator-discovery")


def test_agent_rbac_is_sufficient(agent_run: AgentRun) -> None:
    """With the chart's RBAC and its admission policy, the agent reads its GPUNode, writes its
    telemetry (with the power range its GPUs report) and posts its Event; nothing was denied."""
    run = agent_run
    assert not run.denied, f"{run.user} was denied {sorted(run.denied)}; agent log:\n{run.log[-3000:]}"
    telemetry = run.status["telemetry"]
    assert telemetry["healthyGPUs"] == 8 and telemetry["powerWatts"] > 0
    assert (telemetry["minPowerWatts"], telemetry["maxPowerWatts"]) == (200, 700)
    assert run.status["powerLimitWatts"] == 900  # the operator's field, untouched
    assert "700 W" in run.events[0]["message"], run.events[0]
    assert "Traceback" not in run.log, run.log[-3000:]


def test_agent_rbac_grants_nothing_the_run_did_not_use(agent_run: AgentRun) -> None:
    """Every (apiGroup, resource, verb) the agent's Roles grant was used by the recorded run, but for
    the rules of features it does not have yet (AGENT_PENDING); every request it made is one of them."""
    run = agent_run
    assert run.granted >= AGENT_PENDING, sorted(AGENT_PENDING - run.granted)
    unused = run.granted - run.used - AGENT_PENDING
    assert not unused, f"the chart grants the agent {sorted(unused)}, unused (used: {sorted(run.used)})"
    assert run.used <= run.granted, sorted(run.used - run.granted)
    assert not run.used & AGENT_PENDING, (
        f"the agent now uses {sorted(run.used & AGENT_PENDING)}: take them out of AGENT_PENDING"
    )


def test_agent_reaches_nothing_else(cluster: Cluster, agent_run: AgentRun) -> None:
    """What the agent's ServiceAccount cannot do, whatever its token: write a spec, read Nodes or
    Secrets, or reach a namespace that is not its site's."""

    def can(*args: str) -> bool:
        answer = cluster.kubectl("auth", "can-i", *args, f"--as={agent_run.user}", check=False)
        return answer.stdout.strip() == "yes"

    gpunodes = f"{kinds.GPU_NODE.plural}.{kinds.GROUP}"
    assert can("patch", gpunodes, "--subresource=status", "-n", AGENT_SITE)
    for verb in ("patch", "update", "create", "delete", "get"):
        assert not can(verb, gpunodes, "-n", AGENT_SITE), verb
    assert not can("patch", f"racks.{kinds.GROUP}", "--subresource=status", "-n", AGENT_SITE)
    assert not can("list", "nodes") and not can("get", "secrets", "-n", AGENT_SITE)
    assert not can("list", gpunodes, "-n", "rec-all") and not can("list", gpunodes, "-A")
    assert not can("patch", gpunodes, "--subresource=status", "-n", "rec-all")


def test_discovery_rbac_allows_its_writes(cluster: Cluster, agent_release: list[dict[str, Any]]) -> None:
    """discovery.enabled gives the operator what node discovery does (core/discovery.py's plan): list
    and watch Nodes, create and update GPUNodes by server-side apply (a patch, for which the API
    server checks create too when the object is new) and delete them; and no write to a Node.
    (The recorded-run proof covers discovery once the controller is wired into the operator.)"""
    (sa,) = [d for d in by_kind(agent_release, "ServiceAccount")
             if d["metadata"]["labels"].get("app.kubernetes.io/component") != "agent"]
    token = cluster.cp.create_token(sa["metadata"]["name"], AGENT_NS)
    cp = cluster.cp
    # The CA only: the control plane's own TLS context would present the admin certificate.
    tls = ssl.create_default_context(cafile=str(cp.ca_file))
    headers = {"Authorization": f"Bearer {token}"}

    assert httpx.get(f"{cp.server}/api/v1/nodes", headers=headers, verify=tls).status_code == 200
    name = "discovered-1"
    url = f"{cp.server}{kinds.GROUP_PATH}/namespaces/{AGENT_SITE}/{kinds.GPU_NODE.plural}/{name}"
    body = {
        "apiVersion": kinds.API_VERSION, "kind": kinds.GPU_NODE.kind,
        "metadata": {"name": name, "namespace": AGENT_SITE,
                     "labels": {"app.kubernetes.io/managed-by": "stargate-discovery"}},
        "spec": {"rackRef": "r1", "nodeName": name, "cordoned": False, "nodeReady": True,
                 "gpu": {"model": "H100-SXM", "count": 8, "memoryBytes": 80_000_000_000,
                         "minPowerWatts": 200, "maxPowerWatts": 700}},
    }
    apply = {**headers, "Content-Type": "application/apply-patch+yaml"}
    params = {"fieldManager": "stargate-discovery", "force": "true"}
    for rack in ("r1", "r2"):  # creates, then updates
        body["spec"]["rackRef"] = rack
        resp = httpx.patch(url, content=json.dumps(body), headers=apply, params=params, verify=tls)
        assert resp.status_code in (200, 201), resp.text
        assert resp.json()["spec"]["rackRef"] == rack
    assert httpx.delete(url, headers=headers, verify=tls).status_code == 200
    node = f"{cp.server}/api/v1/nodes/{AGENT_NODE}"
    assert httpx.delete(node, headers=headers, verify=tls).status_code == 403


def test_helm_uninstall_keeps_crds(cluster: Cluster, recorded: dict[str, RecordedRun]) -> None:
    """Last: uninstall every release; crds.keep leaves the CRDs (and so every site) in place."""
    assert recorded  # after the recorded runs
    for release, info in list(cluster.releases.items()):
        cluster.helm("uninstall", release, "--namespace", info["namespace"], "--wait")
    left = cluster.kubectl(
        "get", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/part-of=stargate", "-o", "name"
    ).stdout.split()
    assert left == []
    for plural in STARGATE_PLURALS:
        crd = cluster.kubectl.json("get", "crd", f"{plural}.stargate.dev")
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert cluster.kubectl.json("get", "stargateclusters", "-n", "rec-all")["items"], (
        "the site went with the chart"
    )
