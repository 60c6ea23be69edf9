"""A real Kubernetes node on this machine, joined to a :class:`LocalControlPlane` in node mode.

Started here, stopped here, in this order: containerd (Debian's package, a configuration and data of
its own), the images imported into it (:mod:`stargate_operator.localcp.images`), the node's packet
rules, the cluster DNS (:mod:`stargate_operator.localcp.clusterdns`), kube-controller-manager,
kube-scheduler and the kubelet (built from ``k8s.io/kubernetes`` at the control plane's version).

The network stays on the machine: pods get addresses on a bridge of their own (CNI ``bridge`` and
``host-local``, no masquerade), a FORWARD rule rejects anything between that bridge and another
interface, and the only Service address that leads somewhere is the ``kubernetes`` Service's
(one DNAT rule to the API server; there is no kube-proxy, so other Services are reached through
their endpoints, as Prometheus does). ``stop()`` ends every process, removes the pods' network
namespaces and the bridge, unmounts what the kubelet and containerd mounted, deletes the rules and
the cgroups and restores the forwarding switch it found.

    with LocalControlPlane(node_address=node_address()) as cp, LocalNode(cp) as node:
        cp.kubectl("get", "nodes")
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import yaml

from stargate_operator.localcp import images as images_mod
from stargate_operator.localcp import pki as pki_mod
from stargate_operator.localcp.binaries import NodeBinaries, ensure_node
from stargate_operator.localcp.controlplane import (
    CLUSTER_NAME,
    KUBERNETES_SERVICE_IP,
    LocalControlPlane,
    _b64,
    _tail,
)

POD_CIDR = "10.244.0.0/24"
BRIDGE = "sg-cni0"
CLUSTER_DOMAIN = "cluster.local"
NAT_CHAIN = "STARGATE-SERVICES"
FORWARD_CHAIN = "STARGATE-FORWARD"
_RUN_DIR = Path("/run/stargate-node")  # sockets: short paths (a UNIX socket path has 108 bytes)
_CGROUP_ROOT = Path("/sys/fs/cgroup")


class NodeUnavailable(RuntimeError):
    """This machine cannot host the node; the message says what is missing."""


class NodeError(RuntimeError):
    """The node did not come up; the message carries the log tails."""


def node_address() -> str:
    """The machine's address on its default route: the API server and DNS listen there for pods."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.254", 9))  # a UDP "connect" sends nothing; it picks the source address
        except OSError as e:
            raise NodeUnavailable(f"no IPv4 default route to take the node's address from: {e}") from None
        addr: str = s.getsockname()[0]
    if addr.startswith("127."):
        raise NodeUnavailable("the machine has no non-loopback IPv4 address for the node")
    return addr


def missing_for_node() -> list[str]:
    """What this machine lacks to host the node (empty when it can): checked before anything starts."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the kubelet, containerd and the CNI plugins need it)")
    if not (_CGROUP_ROOT / "memory").is_dir() and not (_CGROUP_ROOT / "cgroup.controllers").exists():
        missing.append(f"cgroups (neither the v1 memory controller nor cgroup v2 under {_CGROUP_ROOT})")
    for exe, pkg in (("containerd", "containerd"), ("ctr", "containerd"), ("runc", "runc"),
                     ("iptables", "iptables"), ("ip", "iproute2"), ("debootstrap", "debootstrap"),
                     ("gcc", "gcc")):
        if shutil.which(exe) is None:
            missing.append(f"{exe} (Debian package {pkg}; hack/install-node-deps.sh installs it)")
    for plugin in ("bridge", "host-local", "loopback"):
        if not os.access(f"/usr/lib/cni/{plugin}", os.X_OK):
            missing.append(
                f"the CNI plugin /usr/lib/cni/{plugin} (Debian package containernetworking-plugins)"
            )
    for exe in ("/usr/sbin/dockerd", "/usr/bin/docker"):
        if not os.access(exe, os.X_OK):
            missing.append(f"{exe} (Debian package docker.io, for BuildKit)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        missing.append("the overlay filesystem (containerd's snapshotter)")
    return missing


@dataclass
class _Proc:
    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = field(default=None, repr=False)


class LocalNode:
    """One node named ``name``; a context manager. ``labels`` and ``taints`` are set on the Node once
    it registered (as an administrator or GPU Feature Discovery would), ``taints`` from the start
    (kubelet's ``registerWithTaints``)."""

    def __init__(
        self,
        cp: LocalControlPlane,
        *,
        name: str = "stargate-node",
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str]] = (),
        image_tag: str = "e2e",
        startup_timeout: float = 180.0,
        verbose: bool = False,
    ) -> None:
        if cp.node_address is None:
            raise NodeError("the control plane must run in node mode: LocalControlPlane(node_address=...)")
        self.cp = cp
        self.name = name
        self.labels = dict(labels or {})
        self.taints = [dict(t) for t in taints]
        self.image_tag = image_tag
        self.startup_timeout = startup_timeout
        self.verbose = verbose
        self.address: str = cp.node_address
        self.workdir = Path()
        self._procs: list[_Proc] = []
        self._netns_before: set[str] = set()
        self._forward_before: str | None = None
        self._rules_set = False
        self.images: dict[str, Path] = {}
        self._kubeconfigs: dict[str, Path] = {}
        #: Seconds of the last start, by step, for the record.
        self.timings: dict[str, float] = {}
        self._started = False

    @property
    def operator_image(self) -> str:
        return f"{images_mod.OPERATOR_IMAGE_REPOSITORY}:{self.image_tag}"

    @property
    def kubelet_root(self) -> Path:
        return self.workdir / "kubelet"

    @property
    def containerd_socket(self) -> Path:
        return _RUN_DIR / "containerd.sock"

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        missing = missing_for_node()
        if missing:
            raise NodeUnavailable("this machine cannot host the test node; missing: " + "; ".join(missing))
        t0 = time.monotonic()
        binaries = ensure_node()
        self.timings["binaries"] = time.monotonic() - t0
        self.workdir = Path(tempfile.mkdtemp(prefix="stargate-node-"))
        atexit.register(self.stop)
        self._started = True
        try:
            t = time.monotonic()
            self.images = images_mod.build_images(
                self.workdir / "docker", self.image_tag, self._mkdir("images")
            )
            self.timings["images"] = time.monotonic() - t
            t = time.monotonic()
            self._cleanup_leftovers()
            self._netns_before = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
            self._forward_before = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
            self._write_certs_and_kubeconfigs()
            self._start_containerd()
            self._import_images()
            self._set_rules()
            self._start_dns()
            self._start_components(binaries)
            self._wait_node_ready()
            self._label()
            self.timings["node"] = time.monotonic() - t
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - t0
        self._say(f"node {self.name} Ready ({', '.join(f'{k} {v:.0f}s' for k, v in self.timings.items())})")
        return self

    def stop(self) -> None:
        """Stop everything started, undo rules, mounts, links and cgroups; idempotent."""
        atexit.unregister(self.stop)
        if not self._started:
            return
        self._started = False
        for p in reversed(self._procs):
            if p.name != "containerd":
                self._stop_proc(p)
        self._kill_containers()
        for p in self._procs:
            if p.name == "containerd":
                self._stop_proc(p)
        self._procs = []
        self._remove_netns()
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
        self._unmount_under(self.workdir)
        self._unmount_under(_RUN_DIR)
        self._remove_rules()
        if self._forward_before is not None:
            Path("/proc/sys/net/ipv4/ip_forward").write_text(self._forward_before)
        self._remove_cgroups()
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(_RUN_DIR, ignore_errors=True)

    # ------------------------------------------------------------------ steps
    def _say(self, msg: str) -> None:
        if self.verbose:
            print(f"[node] {msg}", file=sys.stderr, flush=True)

    def _mkdir(self, *parts: str) -> Path:
        d = self.workdir.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _kubeconfig(self, name: str, cert: Path, key: Path) -> Path:
        path = self.workdir / f"{name}.kubeconfig"
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": CLUSTER_NAME, "cluster": {
                "server": f"https://{self.address}:{self.cp.apiserver_port}",
                "certificate-authority-data": _b64(self.cp.pki.ca_cert),
            }}],
            "users": [{"name": name, "user": {
                "client-certificate-data": _b64(cert), "client-key-data": _b64(key),
            }}],
            "contexts": [{"name": CLUSTER_NAME, "context": {"cluster": CLUSTER_NAME, "user": name}}],
            "current-context": CLUSTER_NAME,
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _write_certs_and_kubeconfigs(self) -> None:
        pki = self.cp.pki
        certs = self._mkdir("pki")
        identities = {
            # The Node authorizer and NodeRestriction know a kubelet by this name and group.
            "kubelet": (f"system:node:{self.name}", ["system:nodes"]),
            # The controller manager runs every controller under its own identity (no per-controller
            # ServiceAccounts), so it needs every permission they need together.
            "kube-controller-manager": ("system:kube-controller-manager", ["system:masters"]),
            "kube-scheduler": ("system:kube-scheduler", []),
        }
        for name, (user, groups) in identities.items():
            cert, key = certs / f"{name}.crt", certs / f"{name}.key"
            pki_mod.issue_client(pki, cert, key, user, groups)
            self._kubeconfigs[name] = self._kubeconfig(name, cert, key)

    def _spawn(self, name: str, args: list[str]) -> _Proc:
        p = _Proc(name, args, self.workdir / f"{name}.log")
        p.log_file = p.log.open("ab")
        p.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=p.log_file, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.workdir,
        )
        self.cp.track_pid(p.proc.pid)
        self._procs.append(p)
        return p

    def _stop_proc(self, p: _Proc) -> None:
        if p.proc is not None:
            if p.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.proc.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait()
            self.cp.untrack_pid(p.proc.pid)
        if p.log_file is not None:
            p.log_file.close()

    def _died(self, p: _Proc) -> NodeError:
        code = p.proc.returncode if p.proc else None
        return NodeError(f"{p.name} exited with code {code}; log {p.log}:\n{_tail(p.log, 40)}")

    def _start_containerd(self) -> None:
        _RUN_DIR.mkdir(parents=True, exist_ok=True)
        cni_conf = self._mkdir("cni", "net.d")
        (cni_conf / "10-stargate.conflist").write_text(json.dumps(cni_config(self.workdir / "cni" / "ipam")))
        config = self.workdir / "containerd.toml"
        config.write_text(containerd_config(
            root=self._mkdir("containerd", "root"), state=_RUN_DIR / "containerd-state",
            socket=self.containerd_socket, cni_conf_dir=cni_conf,
        ))
        p = self._spawn("containerd", ["containerd", "--config", str(config)])
        deadline = time.monotonic() + 60
        while self._ctr("version", check=False).returncode != 0:
            if p.proc is not None and p.proc.poll() is not None:
                raise self._died(p)
            if time.monotonic() > deadline:
                raise NodeError(f"containerd did not answer in 60s; log {p.log}:\n{_tail(p.log)}")
            time.sleep(0.2)

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise NodeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        return proc

    def _import_images(self) -> None:
        for archive in self.images.values():
            self._ctr("images", "import", str(archive))

    def _set_rules(self) -> None:
        self._remove_rules()
        self._rules_set = True
        for rule in iptables_rules(self.address, self.cp.apiserver_port):
            _iptables(*rule)

    def _remove_rules(self) -> None:
        for table, chain, parent in (("nat", NAT_CHAIN, ("PREROUTING", "OUTPUT")),
                                     ("filter", FORWARD_CHAIN, ("FORWARD",))):
            for p in parent:
                while _iptables("-t", table, "-D", p, "-j", chain, check=False) == 0:
                    pass
            _iptables("-t", table, "-F", chain, check=False)
            _iptables("-t", table, "-X", chain, check=False)

    def _start_dns(self) -> None:
        pki = self.cp.pki
        p = self._spawn("clusterdns", [
            sys.executable, "-m", "stargate_operator.localcp.clusterdns",
            f"--listen={self.address}:53", f"--server={self.cp.server}", f"--ca={pki.ca_cert}",
            f"--cert={pki.admin_cert}", f"--key={pki.admin_key}",
        ])
        time.sleep(0.5)
        if p.proc is not None and p.proc.poll() is not None:
            raise self._died(p)

    def _start_components(self, b: NodeBinaries) -> None:
        pki = self.cp.pki
        self._spawn("kube-controller-manager", [
            str(b.kube_controller_manager),
            f"--kubeconfig={self._kubeconfigs['kube-controller-manager']}",
            "--leader-elect=false",
            "--secure-port=0",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--cluster-name={CLUSTER_NAME}",
        ])
        self._spawn("kube-scheduler", [
            str(b.kube_scheduler),
            f"--kubeconfig={self._kubeconfigs['kube-scheduler']}",
            f"--authentication-kubeconfig={self._kubeconfigs['kube-scheduler']}",
            f"--authorization-kubeconfig={self._kubeconfigs['kube-scheduler']}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
        ])
        config = self.workdir / "kubelet.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(
            ca_file=pki.ca_cert, dns=self.address, runtime=self.containerd_socket, taints=self.taints,
        )))
        self._spawn("kubelet", [
            str(b.kubelet),
            f"--config={config}",
            f"--kubeconfig={self._kubeconfigs['kubelet']}",
            f"--root-dir={self.kubelet_root}",
            f"--cert-dir={self._mkdir('kubelet-pki')}",
            f"--hostname-override={self.name}",
            f"--node-ip={self.address}",
        ])

    def _wait_node_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = "not registered"
        while True:
            for p in self._procs:
                if p.proc is not None and p.proc.poll() is not None:
                    raise self._died(p)
            status, node = self.cp.api("GET", f"/api/v1/nodes/{self.name}")
            if status == 200:
                conds = {c["type"]: c for c in node.get("status", {}).get("conditions", [])}
                ready = conds.get("Ready", {})
                if ready.get("status") == "True":
                    return
                last = f"Ready={ready.get('status')} ({ready.get('reason')}: {ready.get('message')})"
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name}:\n{_tail(p.log, 15)}" for p in self._procs)
                raise NodeError(f"node {self.name} not Ready after {self.startup_timeout}s: {last}\n{logs}")
            time.sleep(0.5)

    def _label(self) -> None:
        if self.labels:
            status, body = self.cp.api(
                "PATCH", f"/api/v1/nodes/{self.name}", {"metadata": {"labels": self.labels}},
                content_type="application/merge-patch+json",
            )
            if status != 200:
                raise NodeError(f"labelling node {self.name}: {status} {body}")

    # ------------------------------------------------------------------ teardown
    def _kill_containers(self) -> None:
        if not self.containerd_socket.exists():
            return
        tasks = self._ctr("tasks", "ls", "-q", check=False).stdout.split()
        for t in tasks:
            self._ctr("tasks", "kill", "-s", "SIGKILL", t, check=False)
        deadline = time.monotonic() + 15
        for t in tasks:
            while self._ctr("tasks", "delete", t, check=False).returncode != 0:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        for c in self._ctr("containers", "ls", "-q", check=False).stdout.split():
            self._ctr("containers", "delete", c, check=False)

    def _remove_netns(self) -> None:
        netns = Path("/run/netns")
        if not netns.is_dir():
            return
        for name in set(os.listdir(netns)) - self._netns_before:
            if name.startswith("cni-"):
                subprocess.run(["umount", "-l", str(netns / name)], capture_output=True, check=False)
                (netns / name).unlink(missing_ok=True)

    @staticmethod
    def _unmount_under(root: Path) -> None:
        if not str(root) or str(root) == ".":
            return
        prefix = str(root.resolve()).rstrip("/") + "/"
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4].replace("\\040", " ") for line in f]
        for m in sorted((m for m in points if m.startswith(prefix) or m == prefix[:-1]),
                        key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False)

    def _remove_cgroups(self) -> None:
        # The kubelet's QoS tree (kubepods) in every v1 hierarchy, deepest first; empty by now.
        for hierarchy in _CGROUP_ROOT.iterdir() if _CGROUP_ROOT.is_dir() else []:
            top = hierarchy / "kubepods"
            if not top.is_dir():
                continue
            dirs = sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True)
            for d in [*dirs, top]:
                with contextlib.suppress(OSError):
                    d.rmdir()

    def _cleanup_leftovers(self) -> None:
        """What a killed earlier run left: its rules, bridge and sockets (its processes are gone)."""
        self._remove_rules()
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
        self._unmount_under(_RUN_DIR)
        shutil.rmtree(_RUN_DIR, ignore_errors=True)

    # ------------------------------------------------------------------ helpers for tests
    def pod_token(self, namespace: str, pod: str) -> str:
        """The ServiceAccount token the kubelet wrote into a pod (projected, bound to pod and node)."""
        status, body = self.cp.api("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}")
        if status != 200:
            raise NodeError(f"pod {namespace}/{pod}: {status}")
        uid = body["metadata"]["uid"]
        tokens = sorted((self.kubelet_root / "pods" / uid / "volumes" / "kubernetes.io~projected")
                        .glob("*/token"))
        if not tokens:
            raise NodeError(f"no projected token in pod {namespace}/{pod}")
        token: str = tokens[0].read_text()
        return token

    def memory_bytes(self) -> dict[str, int]:
        """Resident memory of the cluster's processes (etcd, kube-apiserver, containerd with its
        shims, the kubelet, the controller manager, the scheduler, the DNS; not the pods'), by name."""
        out: dict[str, int] = {name: _rss(pid) for name, pid in self.cp.server_pids().items()}
        for p in self._procs:
            if p.proc is not None and p.proc.poll() is None:
                out[p.name] = _rss(p.proc.pid)
        shims = 0
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    if b"containerd-shim" in cmd and str(self.containerd_socket).encode() in cmd:
                        shims += _rss(int(pid))
        out["containerd-shims"] = shims
        return out


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _iptables(*args: str, check: bool = True) -> int:
    proc = subprocess.run(["iptables", "-w", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NodeError(f"iptables {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.returncode


def iptables_rules(address: str, apiserver_port: int) -> list[tuple[str, ...]]:
    """The node's rules (pure, tested): the ``kubernetes`` Service's IP leads to the API server, and
    nothing crosses between the pods' bridge and any other interface."""
    return [
        ("-t", "nat", "-N", NAT_CHAIN),
        ("-t", "nat", "-A", NAT_CHAIN, "-d", f"{KUBERNETES_SERVICE_IP}/32", "-p", "tcp", "--dport", "443",
         "-j", "DNAT", "--to-destination", f"{address}:{apiserver_port}"),
        ("-t", "nat", "-I", "PREROUTING", "-j", NAT_CHAIN),
        ("-t", "nat", "-I", "OUTPUT", "-j", NAT_CHAIN),
        ("-t", "filter", "-N", FORWARD_CHAIN),
        ("-t", "filter", "-A", FORWARD_CHAIN, "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"),
        ("-t", "filter", "-A", FORWARD_CHAIN, "-i", BRIDGE, "-j", "REJECT"),
        ("-t", "filter", "-A", FORWARD_CHAIN, "-o", BRIDGE, "-j", "REJECT"),
        ("-t", "filter", "-I", "FORWARD", "-j", FORWARD_CHAIN),
    ]


def cni_config(ipam_dir: Path) -> dict[str, Any]:
    """The pods' network (pure): a bridge with the pods' gateway, addresses from POD_CIDR, no masquerade."""
    return {
        "cniVersion": "0.4.0",
        "name": "stargate-pods",
        "plugins": [{
            "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(ipam_dir)},
        }],
    }


def containerd_config(*, root: Path, state: Path, socket: Path, cni_conf_dir: Path) -> str:
    """containerd 1.6's configuration (pure)."""
    return f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images_mod.PAUSE_IMAGE}"
  # runc cannot lower a container's OOM score where the machine withholds CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf_dir}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"""


def kubelet_config(
    *, ca_file: Path, dns: str, runtime: Path, taints: Sequence[Mapping[str, str]] = ()
) -> dict[str, Any]:
    """The kubelet's configuration file (pure)."""
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # Machines with cgroup v1 only (kubelet 1.35+ refuses them unless told).
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{runtime}",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [dns],
        # Pods resolve the cluster's names only: nothing of the host's resolver is merged in.
        "resolvConf": "",
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "failSwapOn": False,
        # A test machine's disk may be fuller than a server's; evict only when it is nearly full.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%",
                         "nodefs.inodesFree": "2%"},
        "imageGCHighThresholdPercent": 99,
        "imageGCLowThresholdPercent": 98,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "registerWithTaints": [dict(t) for t in taints],
        "shutdownGracePeriod": "0s",
    }
    return config


def main(argv: list[str] | None = None) -> int:
    import argparse

    from stargate_operator.localcp.binaries import BinaryError

    p = argparse.ArgumentParser(
        description="A single-node Kubernetes on this machine (root): the local control plane in node "
        "mode, containerd, a kubelet, kube-controller-manager, kube-scheduler and the cluster DNS, with "
        "the operator image built from operator/Dockerfile. Runs until Ctrl-C, then undoes everything.")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label of the Node (repeat), e.g. nvidia.com/gpu.present=true")
    p.add_argument("--taint", action="append", default=[], metavar="KEY[=VALUE]:EFFECT",
                   help="a taint the Node registers with (repeat), e.g. example.com/x:NoSchedule")
    p.add_argument("--image-tag", default="dev", help="tag of the operator image (default: dev)")
    args = p.parse_args(argv)
    labels = dict(kv.split("=", 1) for kv in args.label)
    taints = []
    for t in args.taint:
        kv, _, effect = t.rpartition(":")
        key, _, value = kv.partition("=")
        taints.append({"key": key, "value": value, "effect": effect} if value else
                      {"key": key, "effect": effect})
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        with LocalControlPlane(node_address=node_address(), verbose=True) as cp, \
                LocalNode(cp, labels=labels, taints=taints, image_tag=args.image_tag, verbose=True) as n:
            print(f"KUBECONFIG={cp.kubeconfig}\nimage: {n.operator_image} (pullPolicy Never)\n"
                  "Ctrl-C stops the node and the control plane.", flush=True)
            while not stop:
                time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except (NodeUnavailable, NodeError, BinaryError, images_mod.ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
