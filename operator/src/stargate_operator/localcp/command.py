"""Command line for the local control plane (``hack/control-plane.sh`` runs it).

    control-plane.sh start             run in the foreground until Ctrl-C (or SIGTERM)
    control-plane.sh start --detach    run in the background; print the kubeconfig path and return
    control-plane.sh stop              stop the one started from the same --dir
    control-plane.sh status            say whether it runs, and where
    control-plane.sh kubeconfig        print the kubeconfig path (fails when not running)
    control-plane.sh binaries          provide kube-apiserver, etcd, kubectl and helm; print their paths

``start`` prints the kubeconfig path alone on stdout (everything else goes to stderr), so that
``export KUBECONFIG=$(hack/control-plane.sh start --detach)`` works.

State lives in ``--dir`` (default ``$STARGATE_CP_DIR`` or ``$TMPDIR/stargate-control-plane-<uid>``):
certificates, ``kubeconfig``, the servers' logs, etcd's data and ``state.json`` (the supervising
process's pid, which ``stop`` signals). A detached control plane is supervised by a background Python
process; if that process is killed outright, its watchdog still ends etcd and kube-apiserver.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from stargate_operator.localcp.binaries import BinaryError, ensure_control_plane, ensure_helm, ensure_kubectl
from stargate_operator.localcp.controlplane import ControlPlaneError, LocalControlPlane, default_crd_dir


def default_dir() -> Path:
    return Path(
        os.environ.get("STARGATE_CP_DIR")
        or Path(tempfile.gettempdir()) / f"stargate-control-plane-{os.getuid()}"
    )


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(directory: Path) -> dict[str, Any] | None:
    """The state of a running control plane in ``directory``, or None (stale state is ignored)."""
    try:
        state: dict[str, Any] = json.loads((directory / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return state if _pid_alive(int(state.get("pid", 0))) else None


class _Stop(Exception):
    """Raised from the SIGTERM/SIGHUP handler so that ``finally`` blocks stop the servers."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _start_foreground(directory: Path, crds: Path | None) -> int:
    # Install the handlers before anything starts: a stop request during start-up must still clean up.
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)
    state_file = directory / "state.json"
    cp = LocalControlPlane(directory, verbose=True)
    try:
        cp.start()
        if crds is not None:
            names = cp.apply_crds(crds)
            _err(f"[control-plane] CRDs established: {', '.join(names)}")
        state = {
            "pid": os.getpid(),
            "server": cp.server,
            "kubeconfig": str(cp.kubeconfig),
            "ca_file": str(cp.ca_file),
            "workdir": str(cp.workdir),
            "startup_seconds": round(cp.startup_seconds, 2),
            "server_pids": cp.server_pids(),
        }
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(state_file)
        print(cp.kubeconfig, flush=True)
        _err(f"[control-plane] export KUBECONFIG={cp.kubeconfig}\n[control-plane] running; Ctrl-C stops it")
        while True:
            signal.pause()
    except (KeyboardInterrupt, _Stop):
        _err("[control-plane] stopping")
        return 0
    except (BinaryError, ControlPlaneError) as e:
        _err(f"error: {e}")
        return 1
    finally:
        cp.stop()
        with contextlib.suppress(FileNotFoundError):
            state_file.unlink()


def _start_detached(directory: Path, argv: list[str], timeout: float) -> int:
    log = directory / "control-plane.log"
    with log.open("ab") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "stargate_operator.localcp.command", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=out,
            # Its own session: closing this terminal (SIGHUP) or Ctrl-C here must not reach it.
            start_new_session=True,
        )
    # The first start may build the binaries (minutes), so wait for as long as the child lives.
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(directory)
        if state and state.get("pid") == child.pid:
            print(state["kubeconfig"], flush=True)
            _err(
                f"[control-plane] running in the background at {state['server']} "
                f"(pid {child.pid}, log {log})\n"
                f"[control-plane] export KUBECONFIG={state['kubeconfig']}"
            )
            return 0
        if child.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            _err(f"error: the control plane did not start; log {log}:\n{tail}")
            return 1
        if time.monotonic() > deadline:
            child.terminate()
            _err(f"error: not ready after {timeout:.0f}s; see {log}")
            return 1
        time.sleep(0.2)


def _stop(directory: Path, timeout: float = 30.0) -> int:
    state = read_state(directory)
    if state is None:
        _err(f"[control-plane] not running (no live state in {directory})")
        return 0
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        # The supervisor's watchdog ends etcd and kube-apiserver once the supervisor is gone.
        os.kill(pid, signal.SIGKILL)
        _err(f"[control-plane] pid {pid} ignored SIGTERM for {timeout:.0f}s; killed")
    _err("[control-plane] stopped")
    return 0


def _binaries(*, with_helm: bool) -> int:
    try:
        found = ensure_control_plane()
        print(f"kube-apiserver {found.kube_apiserver}\netcd {found.etcd}\nkubectl {ensure_kubectl()}")
        if with_helm:
            print(f"helm {ensure_helm()}")
    except BinaryError as e:
        _err(f"error: {e}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(
        prog="control-plane.sh",
        description="A local Kubernetes control plane (etcd + kube-apiserver on loopback, RBAC on, "
        "the project's CRDs installed) for development and the demo. The binaries are built from "
        "their Go modules on first use and cached (or taken from KUBEBUILDER_ASSETS).",
        epilog="Example: export KUBECONFIG=$(hack/control-plane.sh start --detach); kubectl get stargate -A; "
        "hack/control-plane.sh stop",
    )
    p.add_argument("--dir", type=Path, default=None,
                   help="state folder (default $STARGATE_CP_DIR or $TMPDIR/stargate-control-plane-<uid>)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser(
        "start", help="start; foreground until Ctrl-C unless --detach; prints the kubeconfig path"
    )
    s.add_argument("--detach", action="store_true", help="run in the background and return once ready")
    s.add_argument("--no-crds", action="store_true", help="do not install the CRDs")
    s.add_argument("--crds", type=Path, default=None,
                   help="folder of CRD YAML (default: crds/ of this checkout)")
    s.add_argument("--timeout", type=float, default=1800.0,
                   help="--detach: seconds to wait for readiness, a first build of the binaries "
                   "included (default 1800)")
    sub.add_parser("stop", help="stop the control plane started from the same --dir")
    sub.add_parser("status", help="print the state of the running control plane; exit 1 when none runs")
    sub.add_parser("kubeconfig", help="print the kubeconfig path; exit 1 when none runs")
    b = sub.add_parser(
        "binaries",
        help="provide kube-apiserver, etcd, kubectl and helm (KUBEBUILDER_ASSETS, the cache, or a build "
        "from their Go modules) and print their paths",
    )
    b.add_argument("--no-helm", action="store_true", help="skip helm")
    args = p.parse_args(argv)

    if args.cmd == "binaries":
        return _binaries(with_helm=not args.no_helm)

    directory: Path = (args.dir or default_dir()).resolve()
    if args.cmd == "start":
        running = read_state(directory)
        if running:
            _err(f"error: already running in {directory} (pid {running['pid']}); stop it first")
            return 1
        directory.mkdir(parents=True, exist_ok=True)
        crds = None if args.no_crds else (args.crds or default_crd_dir())
        if args.detach:
            child_argv = ["--dir", str(directory), "start", "--timeout", str(args.timeout)]
            child_argv += ["--no-crds"] if crds is None else ["--crds", str(crds)]
            return _start_detached(directory, child_argv, args.timeout)
        return _start_foreground(directory, crds)
    if args.cmd == "stop":
        return _stop(directory)
    state = read_state(directory)
    if state is None:
        _err(f"[control-plane] not running (no live state in {directory})")
        return 1
    print(json.dumps(state, indent=2) if args.cmd == "status" else state["kubeconfig"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
