"""A single-node Kubernetes on this machine for tests: a control plane in node mode, a real kubelet,
containerd and the operator image built from operator/Dockerfile (see docs/development/real-node.md).

Use the session fixture ``real_node`` (tests/conftest.py) or, for a node of your own (other labels,
a startup taint), the context manager::

    with real_node_cluster(workdir, labels={...}, taints=[{"key": ..., "effect": "NoSchedule"}]) as rn:
        rn.kubectl("get", "nodes")
        rn.helm("install", ...)

When the machine cannot host a node the fixture fails with what is missing, unless the run opted out
of these tests (``make test E2E=0``, i.e. ``STARGATE_E2E=0``), in which case they are deselected.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stargate_operator.localcp.binaries import ensure_control_plane, ensure_helm, ensure_kubectl
from stargate_operator.localcp.controlplane import KubectlError, LocalControlPlane
from stargate_operator.localcp.node import LocalNode, node_address

#: The opt-out: `make test E2E=0` sets it to 0.
OPT_OUT_VARIABLE = "STARGATE_E2E"


def opted_out() -> bool:
    return os.environ.get(OPT_OUT_VARIABLE, "1").strip().lower() in ("0", "no", "false", "off")


@dataclass
class RealNode:
    cp: LocalControlPlane
    node: LocalNode
    helm_path: Path
    workdir: Path

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120.0,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl(*args, check=check, timeout=timeout, input=input)

    def helm(self, *args: str, timeout: float = 300.0,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        env = self.cp.env()
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            env[var] = str(self.workdir / var.lower())
        proc = subprocess.run([str(self.helm_path), *args], capture_output=True, text=True, env=env,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, ["helm", *args], proc.stdout, proc.stderr)
        return proc


@contextlib.contextmanager
def real_node_cluster(
    workdir: Path,
    *,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, str]] = (),
    verbose: bool = True,
) -> Iterator[RealNode]:
    binaries = ensure_control_plane()
    kubectl = ensure_kubectl()
    helm = ensure_helm()
    cp = LocalControlPlane(workdir / "control-plane", binaries=binaries, kubectl=kubectl,
                           node_address=node_address(), verbose=verbose)
    with cp, LocalNode(cp, labels=labels, taints=taints, verbose=verbose) as node:
        yield RealNode(cp, node, helm, workdir)
