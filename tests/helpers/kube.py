"""Drive the local control plane from tests the way users do: with kubectl.

``Kubectl`` is what the ``kubectl`` fixture returns; ``purge_namespace`` does the namespace
controller's job, which the local control plane lacks (there is no controller manager).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import yaml

from stargate_operator.localcp.controlplane import LocalControlPlane

Manifest = dict[str, Any] | list[dict[str, Any]] | str


def to_yaml(manifest: Manifest) -> str:
    """A manifest given as a dict, a list of dicts or YAML text, as YAML text."""
    if isinstance(manifest, str):
        return manifest
    docs = manifest if isinstance(manifest, list) else [manifest]
    return yaml.safe_dump_all(docs, sort_keys=False)


class Kubectl:
    """``kubectl(*args, check=True, input=None, timeout=60)`` -> ``CompletedProcess[str]``.

    Runs the kubectl of this environment (``.venv/bin/kubectl``) against the control plane, as admin
    unless ``kubeconfig`` is given. With ``check`` (the default) a failure raises ``KubectlError``,
    whose message holds kubectl's stderr; with ``check=False`` look at ``returncode``/``stderr``
    yourself (the bad-input tests do).
    """

    def __init__(self, control_plane: LocalControlPlane, kubeconfig: Path | None = None) -> None:
        self.control_plane = control_plane
        self.kubeconfig = kubeconfig

    def __call__(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        return self.control_plane.kubectl(
            *args, check=check, input=input, timeout=timeout, kubeconfig=self.kubeconfig
        )

    def json(self, *args: str, timeout: float = 60.0) -> Any:
        """``kubectl <args> -o json``, decoded."""
        return json.loads(self(*args, "-o", "json", timeout=timeout).stdout)

    def apply(
        self,
        manifest: Manifest,
        *args: str,
        namespace: str | None = None,
        check: bool = True,
        server_side: bool = True,
        validate: str = "strict",
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply [--server-side] --validate=<validate> -f -`` of a manifest."""
        cmd = ["apply", "-f", "-", f"--validate={validate}"]
        if server_side:
            cmd += ["--server-side", "--field-manager=stargate-tests"]
        if namespace:
            cmd += ["-n", namespace]
        return self(*cmd, *args, check=check, input=to_yaml(manifest))

    def as_user(self, kubeconfig: Path) -> Kubectl:
        """The same, with another identity (e.g. a ServiceAccount token kubeconfig)."""
        return Kubectl(self.control_plane, kubeconfig)


def namespace_name(test_name: str) -> str:
    """A fresh, valid namespace name that says which test made it."""
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-") or "test"
    return f"t-{stem}-{secrets.token_hex(3)}"


_namespaced_types: dict[str, list[str]] = {}


def _types(kubectl: Kubectl) -> list[str]:
    server = kubectl.control_plane.server
    if server not in _namespaced_types:
        out = kubectl("api-resources", "--namespaced=true", "--verbs=list,delete", "-o", "name").stdout
        _namespaced_types[server] = sorted(set(out.split()))
    return _namespaced_types[server]


def purge_namespace(kubectl: Kubectl, namespace: str) -> None:
    """Empty and delete a namespace, finalizers and all, as the namespace controller would.

    Best effort and fast (``--wait=false``): a test's leftovers must not show up in another test's
    ``-A`` listings. Finalizers are removed first because nothing (the operator under test has
    stopped) would ever remove them.
    """
    types = ",".join(_types(kubectl))
    listed = kubectl("get", types, "-n", namespace, "-o", "json", check=False)
    if listed.returncode == 0:
        for item in json.loads(listed.stdout).get("items", []):
            meta = item.get("metadata", {})
            if meta.get("finalizers"):
                group = item["apiVersion"].rpartition("/")[0]
                kind = item["kind"].lower() + (f".{group}" if group else "")
                kubectl("patch", f"{kind}/{meta['name']}", "-n", namespace, "--type=merge",
                        "-p", '{"metadata":{"finalizers":null}}', check=False)
    kubectl("delete", types, "--all", "-n", namespace, "--wait=false", "--ignore-not-found", check=False)
    kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)
    ns = kubectl("get", "namespace", namespace, "-o", "json", check=False)
    if ns.returncode == 0:
        obj = json.loads(ns.stdout)
        obj.setdefault("spec", {})["finalizers"] = []
        kubectl("replace", "--raw", f"/api/v1/namespaces/{namespace}/finalize", "-f", "-",
                input=json.dumps(obj), check=False)
