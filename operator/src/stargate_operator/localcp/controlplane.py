"""A real Kubernetes control plane (etcd and kube-apiserver) as local processes, for tests and `demo`.

It works the way controller-runtime's envtest does: no kubelet, scheduler or controller manager, the
operator runs as a local process against a real API server. Per run we pick free loopback ports,
generate certificates (one CA; an admin client certificate in ``system:masters``; a service-account
signing key so that the TokenRequest API issues tokens), start etcd with its data in the work folder,
start kube-apiserver with ``--authorization-mode=RBAC`` (so that a test can run the operator with the
Helm chart's ServiceAccount and find out whether the chart's RBAC is enough), write a kubeconfig and
wait for ``/readyz``.

Nothing is left running. Each server runs in a session (and process group) of its own, so a Ctrl-C in
the terminal reaches only Python, which then stops them in order: SIGTERM, a grace period, SIGKILL
to the whole group. ``atexit`` covers an interpreter that exits without calling :meth:`stop`; a small
watchdog process (``_reaper.py``) covers the cases ``atexit`` cannot, a SIGKILL or a crash of the
Python process: it holds a pipe from us and ends the registered process groups when that pipe
closes. That needs no ``prctl`` (Linux only, and tied to the forking thread).

Without a controller manager, nothing runs the controllers that a cluster normally has: namespaces
are not emptied when deleted (see ``tests/helpers`` for a purge helper), no ``default``
ServiceAccount appears in a new namespace, Deployments make no Pods. The API server itself creates
the system namespaces, the bootstrap RBAC roles and serves TokenRequest.

Usage::

    with LocalControlPlane() as cp:
        cp.apply_crds()
        cp.kubectl("get", "stargate", "-A")
        env = cp.env()            # KUBECONFIG (and a private kubectl cache) for subprocesses
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import yaml

from stargate_operator.client import SyncApi, TransportError, tls_context
from stargate_operator.localcp import pki as pki_mod
from stargate_operator.localcp.binaries import Binaries, ensure_control_plane, ensure_kubectl

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.0.0.0/24"
#: The ``kubernetes`` Service's cluster IP: the first address of SERVICE_CIDR.
KUBERNETES_SERVICE_IP = "10.0.0.1"
CLUSTER_NAME = "stargate-local"
_STOP_GRACE_SECONDS = 15.0
_REPO_ROOT = Path(__file__).resolve().parents[4]


class ControlPlaneError(RuntimeError):
    """The control plane could not start or stop; the message carries the servers' log tails."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl command failed; unlike CalledProcessError, ``str()`` shows kubectl's stderr."""

    def __str__(self) -> str:
        cmd = " ".join(str(a) for a in self.cmd[1:]) if isinstance(self.cmd, list) else str(self.cmd)
        err = (self.stderr or "").strip() or (self.stdout or "").strip()
        return f"kubectl {cmd} failed (exit {self.returncode}): {err}"


def default_crd_dir() -> Path:
    """``crds/`` of this checkout (the generated CRD YAML)."""
    return _REPO_ROOT / "crds"


def _free_ports(n: int) -> list[int]:
    # Hold every socket until all are chosen so that the n ports differ from one another.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class _Server:
    name: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalControlPlane:
    """etcd and kube-apiserver on loopback; a context manager (``start()`` on enter, ``stop()`` on exit).

    ``workdir``: where certificates, the kubeconfig, etcd's data and the logs go. By default a new
    temporary folder, removed by ``stop()``; a given folder is kept (its etcd data is wiped on start
    so that every run begins empty).
    """

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        binaries: Binaries | None = None,
        kubectl: Path | None = None,
        startup_timeout: float = 90.0,
        extra_apiserver_args: Sequence[str] = (),
        verbose: bool = False,
        node_address: str | None = None,
    ) -> None:
        self._given_workdir = Path(workdir) if workdir is not None else None
        self._binaries = binaries
        self._kubectl = kubectl
        self.startup_timeout = startup_timeout
        self._extra_apiserver_args = list(extra_apiserver_args)
        self.verbose = verbose
        #: Set for a control plane that a real node (:mod:`stargate_operator.localcp.node`) joins.
        self.node_address = node_address
        self._workdir: Path | None = None
        self._pki: pki_mod.Pki | None = None
        self._etcd: _Server | None = None
        self._apiserver: _Server | None = None
        self._reaper: subprocess.Popen[str] | None = None
        self._ssl: ssl.SSLContext | None = None
        self._client: SyncApi | None = None  # for api(): one keep-alive client per run
        self.apiserver_port = 0
        self.etcd_port = 0
        #: Seconds from ``start()`` (binaries at hand) to ``/readyz`` answering ok, for the record.
        self.startup_seconds = 0.0

    # ------------------------------------------------------------------ properties
    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise ControlPlaneError("the control plane is not started")
        return self._workdir

    @property
    def pki(self) -> pki_mod.Pki:
        if self._pki is None:
            raise ControlPlaneError("the control plane is not started")
        return self._pki

    @property
    def server(self) -> str:
        """The API server's URL, e.g. ``https://127.0.0.1:40123``."""
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in ``system:masters``), credentials inline."""
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.pki.ca_cert

    @property
    def admin_cert_file(self) -> Path:
        return self.pki.admin_cert

    @property
    def admin_key_file(self) -> Path:
        return self.pki.admin_key

    @property
    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the API server and presents the admin certificate (``system:masters``)."""
        # Built once per run: loading the CA and key for each client would cost more than a call.
        if self._ssl is None:
            self._ssl = tls_context(self.pki.ca_cert, self.pki.admin_cert, self.pki.admin_key)
        return self._ssl

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def kubectl_path(self) -> Path:
        if self._kubectl is None:
            self._kubectl = ensure_kubectl()
        return self._kubectl

    @property
    def running(self) -> bool:
        return self._apiserver is not None and self._apiserver.running

    def server_pids(self) -> dict[str, int]:
        """Process ids of the running servers, by name (``etcd``, ``kube-apiserver``)."""
        return {s.name: s.proc.pid for s in (self._etcd, self._apiserver) if s and s.proc and s.running}

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        if self._workdir is not None:
            raise ControlPlaneError("already started")
        binaries = self._binaries or ensure_control_plane()  # may build them, once: not counted below
        started = time.monotonic()
        if self._given_workdir is not None:
            self._workdir = self._given_workdir.resolve()
            self._workdir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self._workdir / "etcd", ignore_errors=True)
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="stargate-cp-"))
        atexit.register(self.stop)
        try:
            self._pki = pki_mod.generate(
                self._workdir / "pki",
                extra_ips=(self.node_address, KUBERNETES_SERVICE_IP) if self.node_address else (),
            )
            self._start_reaper()
            self._start_servers(binaries)
            self._write_kubeconfig(self.kubeconfig, user={
                "client-certificate-data": _b64(self.pki.admin_cert),
                "client-key-data": _b64(self.pki.admin_key),
            })
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        self._say(f"ready in {self.startup_seconds:.1f}s at {self.server}; KUBECONFIG={self.kubeconfig}")
        return self

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd; idempotent. Removes the work folder if we created it."""
        atexit.unregister(self.stop)
        for server in (self._apiserver, self._etcd):
            if server is not None:
                self._stop_server(server)
        self._apiserver = self._etcd = None
        if self._reaper is not None:
            # Closing the pipe is the reaper's signal; nothing is registered any more, so it just exits.
            with contextlib.suppress(OSError):
                assert self._reaper.stdin is not None
                self._reaper.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._reaper.wait(timeout=10)
            self._reaper = None
        if self._workdir is not None and self._given_workdir is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None
        if self._client is not None:
            self._client.close()
            self._client = None
        self._ssl = None

    def stop_apiserver(self, *, kill: bool = False) -> None:
        """Stop kube-apiserver only (etcd keeps the data). ``kill``: SIGKILL, as in a crash."""
        if self._apiserver is None:
            raise ControlPlaneError("the control plane is not started")
        self._stop_server(self._apiserver, kill=kill)

    def start_apiserver(self) -> None:
        """Start kube-apiserver again on the same port, certificates and etcd; wait for /readyz."""
        if self._apiserver is None:
            raise ControlPlaneError("the control plane is not started")
        if self._apiserver.running:
            raise ControlPlaneError("kube-apiserver is already running")
        self._spawn(self._apiserver)
        self._wait_ready(self._apiserver)

    def restart_apiserver(self, *, downtime: float = 0.0, kill: bool = False) -> None:
        """Stop kube-apiserver, wait ``downtime`` seconds, start it again; objects survive (etcd).

        Clients see their connections and watches drop and then the same URL answer again, as in
        a control-plane upgrade (``kill=False``) or crash (``kill=True``).
        """
        self.stop_apiserver(kill=kill)
        if downtime > 0:
            time.sleep(downtime)
        self.start_apiserver()

    # ------------------------------------------------------------------ clients
    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for a subprocess that should talk to this control plane.

        ``KUBECACHEDIR`` gives kubectl a discovery cache of its own: its default cache is keyed by
        host and port, and a port reused from an earlier run would otherwise serve stale discovery.
        """
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["KUBECACHEDIR"] = str(self.workdir / "kubectl-cache")
        return env

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 60.0,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this control plane (admin unless ``kubeconfig`` is given).

        Raises :class:`KubectlError` (its message includes stderr) when ``check`` and it fails.
        """
        cmd = [str(self.kubectl_path), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, env=self.env()
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def connect(self, *, timeout: float = 30.0, max_connections: int = 16) -> SyncApi:
        """A synchronous API client of its own, as admin (``system:masters``); close it when done."""
        return SyncApi(self.server, self.ssl_context, timeout=timeout, max_connections=max_connections)

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """One REST call as admin, without a kubectl process (milliseconds instead of a fraction of
        a second): returns the HTTP status and the decoded JSON body (None when empty or not JSON).
        ``body`` is sent as JSON; pass ``content_type`` for patches (``application/merge-patch+json``).
        Raises :class:`~stargate_operator.client.TransportError` when the server does not answer."""
        resp = self._shared_client().send(method, path, body, content_type=content_type, accept=accept,
                                          timeout=timeout)
        try:
            return resp.status_code, resp.json() if resp.content else None
        except ValueError:
            return resp.status_code, None

    def get_json(self, path: str) -> Any:
        """GET a raw API path (``/apis/...``) as admin and decode the JSON; raises
        :class:`~stargate_operator.client.ApiError` on an error status."""
        return self._shared_client().call("GET", path)

    def _shared_client(self) -> SyncApi:
        # One keep-alive client for api() and get_json(), used from several threads at once (the
        # test helpers purge a namespace's resource types in parallel).
        if self._client is None:
            self._client = self.connect()
        return self._client

    def apply_crds(self, crd_dir: Path | None = None, *, timeout: float = 60.0) -> list[str]:
        """Server-side apply every ``*.yaml`` in ``crd_dir`` (default: this checkout's ``crds/``),
        wait until each CRD is Established and served in discovery; return the CRD names."""
        crd_dir = crd_dir or default_crd_dir()
        files = sorted(crd_dir.glob("*.yaml"))
        if not files:
            raise ControlPlaneError(f"no CRD files (*.yaml) in {crd_dir}")
        crds: list[dict[str, Any]] = []
        for f in files:
            docs = yaml.safe_load_all(f.read_text())
            crds += [d for d in docs if d and d.get("kind") == "CustomResourceDefinition"]
        args = ["apply", "--server-side", "--force-conflicts", "--field-manager=stargate-localcp"]
        for f in files:
            args += ["-f", str(f)]
        self.kubectl(*args)
        names = [c["metadata"]["name"] for c in crds]
        self.kubectl(
            "wait", "--for=condition=Established", f"--timeout={int(timeout)}s",
            *[f"customresourcedefinition/{n}" for n in names], timeout=timeout + 10,
        )
        # Established comes before the group version shows in discovery; kubectl (short names,
        # categories) needs discovery, so wait for that too.
        wanted: dict[str, set[str]] = {}
        for c in crds:
            for v in c["spec"]["versions"]:
                if v.get("served", True):
                    path = f"/apis/{c['spec']['group']}/{v['name']}"
                    wanted.setdefault(path, set()).add(c["spec"]["names"]["plural"])
        deadline = time.monotonic() + timeout
        for path, plurals in wanted.items():
            while True:
                proc = self.kubectl("get", "--raw", path, check=False)
                if proc.returncode == 0:
                    served = {r["name"] for r in json.loads(proc.stdout).get("resources", [])}
                    if plurals <= served:
                        break
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"{path} does not serve {sorted(plurals)} after {timeout}s")
                time.sleep(0.2)
        # kubectl caches discovery (for hours) and resolves categories such as `stargate` from the
        # cache without refreshing it, so drop what it cached before these CRDs existed.
        shutil.rmtree(self.workdir / "kubectl-cache", ignore_errors=True)
        return names

    def create_token(
        self,
        service_account: str,
        namespace: str,
        *,
        duration: str = "1h",
        audiences: Iterable[str] = (),
    ) -> str:
        """A token for a ServiceAccount from the TokenRequest API (as ``kubectl create token``)."""
        args = ["create", "token", service_account, "-n", namespace, f"--duration={duration}"]
        args += [f"--audience={a}" for a in audiences]
        return self.kubectl(*args).stdout.strip()

    def write_token_kubeconfig(self, path: Path, token: str, *, namespace: str | None = None) -> Path:
        """A kubeconfig that authenticates with ``token`` (e.g. from :meth:`create_token`), so that a
        process runs with a ServiceAccount's permissions, RBAC enforced."""
        self._write_kubeconfig(path, user={"token": token}, namespace=namespace)
        return path

    # ------------------------------------------------------------------ internals
    def _say(self, msg: str) -> None:
        if self.verbose:
            print(f"[control-plane] {msg}", file=sys.stderr, flush=True)

    def _write_kubeconfig(self, path: Path, *, user: dict[str, str], namespace: str | None = None) -> None:
        context: dict[str, str] = {"cluster": CLUSTER_NAME, "user": "user"}
        if namespace:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CLUSTER_NAME, "cluster": {
                "server": self.server, "certificate-authority-data": _b64(self.pki.ca_cert),
            }}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": CLUSTER_NAME, "context": context}],
            "current-context": CLUSTER_NAME,
            "preferences": {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(path)  # atomic: a reader never sees half a file

    def _start_reaper(self) -> None:
        self._reaper = subprocess.Popen(
            [sys.executable, "-I", "-S", str(Path(__file__).with_name("_reaper.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )

    def track_pid(self, pid: int) -> None:
        """Have this run's watchdog end the process group ``pid`` leads should Python die (a real
        node's processes, which :mod:`stargate_operator.localcp.node` starts)."""
        self._tell_reaper(f"+{pid}")

    def untrack_pid(self, pid: int) -> None:
        self._tell_reaper(f"-{pid}")

    def _tell_reaper(self, line: str) -> None:
        if self._reaper is not None and self._reaper.stdin is not None:
            with contextlib.suppress(OSError):
                self._reaper.stdin.write(line + "\n")
                self._reaper.stdin.flush()

    def _start_servers(self, binaries: Binaries) -> None:
        workdir, pki = self.workdir, self.pki
        # A free port can be taken by someone else between our check and the server's bind; retry
        # with fresh ports in that (rare) case.
        for attempt in range(3):
            self.etcd_port, peer_port, self.apiserver_port = _free_ports(3)
            data = workdir / "etcd"
            shutil.rmtree(data, ignore_errors=True)
            etcd = _Server("etcd", [
                str(binaries.etcd),
                "--name=stargate",
                f"--data-dir={data}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=stargate=http://127.0.0.1:{peer_port}",
                "--initial-cluster-state=new",
                # Throw-away data: durability is worth nothing here and fsync is most of etcd's latency.
                "--unsafe-no-fsync",
                # 8 GiB instead of 2: a 100,000-node benchmark writes several rounds of every
                # object between two of the API server's compactions (every 5 minutes).
                "--quota-backend-bytes=8589934592",
                "--log-level=warn",
            ], workdir / "etcd.log")
            apiserver = _Server("kube-apiserver", [
                str(binaries.kube_apiserver),
                f"--etcd-servers={self.etcd_url}",
                *self._mode_args(),
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                # On SIGTERM, end open watches (they then get a clean end of stream and re-watch, as
                # from a real server going away) instead of holding the shutdown until our SIGKILL:
                # measured 15 s with three watches open without it, 1.2 s with it.
                "--shutdown-watch-termination-grace-period=2s",
                *self._extra_apiserver_args,
            ], workdir / "kube-apiserver.log")
            self._etcd, self._apiserver = etcd, apiserver
            try:
                self._spawn(etcd)
                self._wait_etcd(etcd)
                self._spawn(apiserver)
                self._wait_ready(apiserver)
                return
            except ControlPlaneError as e:
                in_use = "address already in use" in str(e).lower()
                self._stop_server(apiserver)
                self._stop_server(etcd)
                if not in_use or attempt == 2:
                    raise
                self._say(f"port taken, retrying: {e}")

    def _mode_args(self) -> list[str]:
        if self.node_address is None:
            return [
                "--bind-address=127.0.0.1",
                # Without it the server looks for a non-loopback interface and fails on a machine
                # with none.
                "--advertise-address=127.0.0.1",
                "--authorization-mode=RBAC",
                # The "kubernetes" Service would get 127.0.0.1 as its endpoint, which validation
                # refuses; nothing here routes to it anyway.
                "--endpoint-reconciler-type=none",
            ]
        # A real node's pods reach the server at the node's address (through the "kubernetes"
        # Service, whose endpoint the reconciler keeps); kubelets are authorized as nodes.
        pki = self.pki
        return [
            "--bind-address=0.0.0.0",
            f"--advertise-address={self.node_address}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            # The server's own calls to kubelets (logs, exec) as admin.
            f"--kubelet-client-certificate={pki.admin_cert}",
            f"--kubelet-client-key={pki.admin_key}",
            "--kubelet-preferred-address-types=InternalIP",
        ]

    def _spawn(self, server: _Server) -> None:
        if server._log_file is not None:
            server._log_file.close()
        server._log_file = server.log.open("ab")
        server.proc = subprocess.Popen(
            server.args,
            stdin=subprocess.DEVNULL,
            stdout=server._log_file,
            stderr=subprocess.STDOUT,
            # Own session and process group: Ctrl-C reaches only Python, which stops the servers in
            # order; and killpg ends anything a server might start.
            start_new_session=True,
            cwd=self.workdir,
        )
        self._tell_reaper(f"+{server.proc.pid}")

    def _stop_server(self, server: _Server, *, kill: bool = False) -> None:
        proc = server.proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
                try:
                    proc.wait(timeout=_STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    self._say(f"{server.name} ignored SIGTERM for {_STOP_GRACE_SECONDS}s; SIGKILL")
            # Also end any process left in the group (the leader may be gone already).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            self._tell_reaper(f"-{proc.pid}")
        if server._log_file is not None:
            server._log_file.close()
            server._log_file = None

    def _died(self, server: _Server) -> ControlPlaneError:
        code = server.proc.returncode if server.proc else None
        return ControlPlaneError(
            f"{server.name} exited with code {code}; log {server.log}:\n{_tail(server.log)}"
        )

    def _wait_etcd(self, server: _Server) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if not server.running:
                raise self._died(server)
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", self.etcd_port, timeout=2)
                try:
                    conn.request("GET", "/health")
                    resp = conn.getresponse()
                    if resp.status == 200 and json.loads(resp.read()).get("health") == "true":
                        return
                finally:
                    conn.close()
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"etcd not healthy after {self.startup_timeout}s:\n{_tail(server.log)}"
                )
            time.sleep(0.05)

    def _wait_ready(self, server: _Server) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last = ""
        with self.connect(timeout=5) as client:
            while True:
                if not server.running:
                    raise self._died(server)
                try:
                    resp = client.send("GET", "/readyz", accept="text/plain")
                    if resp.status_code == 200:
                        return
                    last = f"/readyz {resp.status_code}: {resp.text[-500:]}"
                except TransportError as e:
                    last = str(e)
                if time.monotonic() > deadline:
                    raise ControlPlaneError(
                        f"kube-apiserver not ready after {self.startup_timeout}s ({last}); "
                        f"log {server.log}:\n{_tail(server.log)}"
                    )
                time.sleep(0.1)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()
