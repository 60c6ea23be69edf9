"""The local control plane itself: it starts and stops cleanly, serves the CRDs, enforces the status
subresource and RBAC, and survives an API server restart with its objects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.kube import Kubectl, create_namespace, namespace_name, purge_namespace
from stargate_operator import kinds
from stargate_operator.localcp.controlplane import LocalControlPlane, default_crd_dir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# The smallest valid object of each kind.
MINIMAL: dict[str, dict[str, Any]] = {
    "StargateCluster": {
        "site": {"region": "eu-north", "kind": "Onshore", "cooling": "DirectLiquid"},
        "power": {"itCapacityWatts": 1_000_000},
    },
    "Rack": {"clusterRef": "site", "maxPowerWatts": 40_000},
    "PowerDomain": {"clusterRef": "site", "ratingWatts": 450_000},
    "GPUNode": {
        "rackRef": "rack",
        "gpu": {"model": "H200", "count": 8, "memoryBytes": 141 * 2**30,
                "minPowerWatts": 200, "maxPowerWatts": 700},
    },
    "MemoryPool": {"clusterRef": "site", "tier": "DRAM"},
    "MemoryClaim": {"poolRef": "pool", "sizeBytes": 2**30},
    "GridEvent": {"clusterRef": "site", "start": "2026-07-01T17:00:00Z", "reducePercent": 20},
    "PowerLimitSlice": {"limits": {"node": 500}},
}


def crd_docs() -> list[dict[str, Any]]:
    return [yaml.safe_load(f.read_text()) for f in sorted(default_crd_dir().glob("*.yaml"))]


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": kinds.API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------- lifecycle
def test_starts_and_stops_cleanly() -> None:
    cp = LocalControlPlane()
    with cp:
        pids = list(cp.server_pids().values())
        workdir = cp.workdir
        assert cp.server.startswith("https://127.0.0.1:")
        assert cp.kubeconfig.exists() and cp.ca_file.exists()
        assert cp.startup_seconds > 0  # measured (hack/bench figures), not judged by a timer here
        assert "ok" in cp.kubectl("get", "--raw", "/readyz").stdout
        assert cp.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}").stdout.count(
            "system:masters"
        )
    assert len(pids) == 2
    assert not any(_alive(p) for p in pids)
    assert not workdir.exists()
    cp.stop()  # idempotent


def test_no_orphans_when_owner_is_killed(tmp_path: Path) -> None:
    """SIGKILL skips atexit and every handler: the reaper must still end etcd and kube-apiserver."""
    script = (
        "import json, sys, time\n"
        "from stargate_operator.localcp.controlplane import LocalControlPlane\n"
        "cp = LocalControlPlane(sys.argv[1]).start()\n"
        "print(json.dumps(list(cp.server_pids().values())), flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        pids = json.loads(owner.stdout.readline())
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), f"left running: {[p for p in pids if _alive(p)]}"


def test_command_line_start_detach_and_stop(tmp_path: Path) -> None:
    script = [str(REPO / "hack" / "control-plane.sh"), "--dir", str(tmp_path)]
    env = dict(os.environ, PYTHON=sys.executable)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*script, *args], capture_output=True, text=True, env=env, timeout=300)

    started = run("start", "--detach")
    assert started.returncode == 0, started.stderr
    kubeconfig = started.stdout.strip()
    assert kubeconfig == str(tmp_path / "kubeconfig")
    try:
        assert run("kubeconfig").stdout.strip() == kubeconfig
        state = json.loads(run("status").stdout)
        assert set(state["server_pids"]) == {"etcd", "kube-apiserver"}
        assert run("start", "--detach").returncode == 1, "a second start in the same folder must refuse"
        kubectl = str(Path(sys.executable).parent / "kubectl")
        crds = subprocess.run(
            [kubectl, "--kubeconfig", kubeconfig, "get", "crd", "-o", "name"],
            capture_output=True, text=True, timeout=60,
        )
        assert "racks.stargate.dev" in crds.stdout, crds.stderr
    finally:
        assert run("stop").returncode == 0
    assert run("status").returncode == 1
    assert not any(_alive(p) for p in state["server_pids"].values())


# --------------------------------------------------------------------------- CRDs
def test_every_crd_is_established(kubectl: Kubectl) -> None:
    docs = crd_docs()
    assert len(docs) >= 5
    for doc in docs:
        crd = kubectl.json("get", "crd", doc["metadata"]["name"])
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", conditions
        assert conditions.get("NamesAccepted") == "True", conditions


def test_get_stargate_lists_every_kind(kubectl: Kubectl, namespace: str) -> None:
    kinds = {d["spec"]["names"]["kind"]: d["spec"]["names"]["plural"] for d in crd_docs()}
    assert set(kinds) == set(MINIMAL), "a kind was added: give it a minimal object in MINIMAL"
    objects = [obj(kind, f"x-{kind.lower()}", spec) for kind, spec in MINIMAL.items()]
    kubectl.apply(objects, namespace=namespace)
    names = set(kubectl("get", "stargate", "-n", namespace, "-o", "name").stdout.split())
    assert names == {f"{kind.lower()}.stargate.dev/x-{kind.lower()}" for kind in kinds}
    table = kubectl("get", "stargate", "-n", namespace).stdout
    for kind in kinds:  # one table per kind, rows named <kind>.stargate.dev/<name>
        assert f"{kind.lower()}.stargate.dev/x-{kind.lower()}" in table


def test_namespace_purge_leaves_nothing_behind(kubectl: Kubectl) -> None:
    """What the `namespace` fixture does after each test, without a namespace controller."""
    ns = namespace_name("purge")
    create_namespace(kubectl, ns)
    rack = obj("Rack", "held", MINIMAL["Rack"])
    rack["metadata"]["finalizers"] = ["stargate.dev/test"]  # as an operator that has stopped leaves it
    kubectl.apply(rack, namespace=ns)
    kubectl("create", "configmap", "c", "-n", ns)

    purge_namespace(kubectl, ns)

    assert kubectl("get", "namespace", ns, check=False).returncode != 0, "namespace still there"
    assert f"{ns} " not in kubectl("get", "racks,configmaps", "-A", "--no-headers").stdout


# --------------------------------------------------------------------------- status subresource
def _rack(kubectl: Kubectl, namespace: str, name: str = "r1") -> dict[str, Any]:
    return dict(kubectl.json("get", "rack", name, "-n", namespace))


def _patch_status(kubectl: Kubectl, namespace: str, patch: dict[str, Any], name: str = "r1") -> None:
    kubectl("patch", "rack", name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps(patch))


def test_main_resource_write_cannot_change_status(kubectl: Kubectl, namespace: str) -> None:
    rack = obj("Rack", "r1", MINIMAL["Rack"]) | {"status": {"nodes": 7}}
    kubectl.apply(rack, namespace=namespace)
    assert "nodes" not in _rack(kubectl, namespace).get("status", {}), "create must drop status"

    _patch_status(kubectl, namespace, {"status": {"nodes": 3}})
    kubectl("patch", "rack", "r1", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"priority": 600}, "status": {"nodes": 99}}))
    got = _rack(kubectl, namespace)
    assert got["spec"]["priority"] == 600
    assert got["status"]["nodes"] == 3

    got["status"]["nodes"] = 42
    kubectl("replace", "-f", "-", "-n", namespace, input=json.dumps(got))
    assert _rack(kubectl, namespace)["status"]["nodes"] == 3


def test_status_write_cannot_change_spec(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(obj("Rack", "r1", MINIMAL["Rack"]), namespace=namespace)
    _patch_status(kubectl, namespace, {"status": {"nodes": 5}, "spec": {"priority": 1, "maxPowerWatts": 1}})
    got = _rack(kubectl, namespace)
    assert got["status"]["nodes"] == 5
    assert got["spec"]["priority"] == 500  # the default, untouched
    assert got["spec"]["maxPowerWatts"] == MINIMAL["Rack"]["maxPowerWatts"]


def test_generation_moves_only_with_spec(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(obj("Rack", "r1", MINIMAL["Rack"]), namespace=namespace)

    def generation() -> int:
        return int(_rack(kubectl, namespace)["metadata"]["generation"])

    assert generation() == 1
    _patch_status(kubectl, namespace, {"status": {"nodes": 2, "observedGeneration": 1}})
    assert generation() == 1
    kubectl("label", "rack", "r1", "-n", namespace, "hall=b")
    kubectl("annotate", "rack", "r1", "-n", namespace, "note=x")
    assert generation() == 1
    kubectl("patch", "rack", "r1", "-n", namespace, "--type=merge", "-p", '{"spec":{"priority":700}}')
    assert generation() == 2
    kubectl("patch", "rack", "r1", "-n", namespace, "--type=merge", "-p", '{"spec":{"priority":700}}')
    assert generation() == 2, "a no-op spec write must not move generation"


# --------------------------------------------------------------------------- RBAC and tokens
def test_rbac_is_enforced_for_service_account_tokens(
    control_plane: LocalControlPlane, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    kubectl("create", "serviceaccount", "op", "-n", namespace)
    token = control_plane.create_token("op", namespace)
    as_op = kubectl.as_user(control_plane.write_token_kubeconfig(tmp_path / "op.kubeconfig", token))

    denied = as_op("get", "racks", "-n", namespace, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

    kubectl("create", "role", "racks", "-n", namespace, "--verb=get,list,watch",
            "--resource=racks.stargate.dev")
    kubectl("create", "rolebinding", "racks", "-n", namespace, "--role=racks",
            f"--serviceaccount={namespace}:op")
    deadline = time.monotonic() + 10
    while as_op("get", "racks", "-n", namespace, check=False).returncode != 0:
        assert time.monotonic() < deadline, "the RoleBinding never took effect"
        time.sleep(0.2)
    assert as_op("auth", "can-i", "patch", "racks", "-n", namespace, check=False).stdout.strip() == "no"


# --------------------------------------------------------------------------- restarts
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_restart_apiserver_keeps_objects(
    control_plane: LocalControlPlane, kubectl: Kubectl, namespace: str, kill: bool
) -> None:
    kubectl.apply(obj("Rack", "r1", MINIMAL["Rack"]), namespace=namespace)
    before = _rack(kubectl, namespace)
    server = control_plane.server

    control_plane.restart_apiserver(downtime=0.5, kill=kill)

    assert control_plane.server == server, "clients must find the API server at the same URL"
    after = _rack(kubectl, namespace)
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "r1" in kubectl("get", "stargate", "-n", namespace, "-o", "name").stdout


def test_graceful_stop_ends_open_watches(
    control_plane: LocalControlPlane, kubectl: Kubectl, namespace: str
) -> None:
    """An operator's watches must see the stream end promptly, and the stop must not wait for them."""
    watch = subprocess.Popen(
        [str(control_plane.kubectl_path), "--kubeconfig", str(control_plane.kubeconfig),
         "get", "racks", "-n", namespace, "--watch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)  # let the watch reach the server
        started = time.monotonic()
        control_plane.stop_apiserver()
        stopped_in = time.monotonic() - started
        assert watch.wait(timeout=10) is not None
    finally:
        watch.kill()
        control_plane.start_apiserver()
    assert stopped_in < 10, f"graceful stop took {stopped_in:.1f}s: open watches held it up"


def test_apiserver_down_then_up(control_plane: LocalControlPlane, kubectl: Kubectl) -> None:
    control_plane.stop_apiserver()
    try:
        refused = kubectl("get", "ns", check=False, timeout=30)
        assert refused.returncode != 0
    finally:
        control_plane.start_apiserver()
    kubectl("get", "ns")
