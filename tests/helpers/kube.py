"""Drive the local control plane from tests the way users do: with kubectl.

``Kubectl`` is what the ``kubectl`` fixture returns; ``purge_namespace`` does the namespace
controller's job, which the local control plane lacks (there is no controller manager).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor
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


_AGGREGATED_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def _namespaced_collections(cp: LocalControlPlane) -> list[tuple[str, bool]]:
    """API paths (with ``{ns}``) of every namespaced resource we can list and delete, and whether it
    supports deleting the whole collection. Asked afresh each time, since a test may have installed
    more CRDs; aggregated discovery answers for every group in two calls."""
    found = []
    for root in ("/api", "/apis"):
        status, doc = cp.api("GET", root, accept=_AGGREGATED_DISCOVERY)
        if status != 200:
            continue
        for group in doc.get("items", []):
            if not group.get("versions"):
                continue
            preferred = group["versions"][0]  # listed in order of preference
            name = group["metadata"].get("name", "")
            base = f"/apis/{name}/{preferred['version']}" if name else f"/api/{preferred['version']}"
            for r in preferred.get("resources", []):
                verbs = set(r.get("verbs", []))
                if r.get("scope") == "Namespaced" and {"list", "delete"} <= verbs:
                    found.append((f"{base}/namespaces/{{ns}}/{r['resource']}", "deletecollection" in verbs))
    return found


def create_namespace(kubectl: Kubectl, name: str) -> None:
    status, body = kubectl.control_plane.api(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    if status != 201:
        raise RuntimeError(f"could not create namespace {name}: {status} {body}")


def purge_namespace(kubectl: Kubectl, namespace: str) -> None:
    """Empty and delete a namespace, finalizers and all, as the namespace controller would.

    Best effort and fast (REST calls, no waiting): a test's leftovers must not show up in another
    test's ``-A`` listings. Finalizers are removed first because nothing (the operator under test
    has stopped) would ever remove them.
    """
    cp = kubectl.control_plane
    unfinalize = {"metadata": {"finalizers": None}}

    def empty(template: str, collection: bool) -> None:
        path = template.format(ns=namespace)
        status, listed = cp.api("GET", path)
        if status != 200:
            return
        items = listed.get("items") or []
        for item in items:
            if item["metadata"].get("finalizers"):
                cp.api("PATCH", f"{path}/{item['metadata']['name']}", unfinalize,
                       content_type="application/merge-patch+json")
        if collection and items:
            cp.api("DELETE", path)
        elif items:
            for item in items:
                cp.api("DELETE", f"{path}/{item['metadata']['name']}")

    # Some forty resource types, one list each: in parallel, as every call is independent.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda tc: empty(*tc), _namespaced_collections(cp)))
    cp.api("DELETE", f"/api/v1/namespaces/{namespace}")
    # The namespace now waits for its "kubernetes" finalizer, which only the namespace controller
    # (not running here) removes; clear it so that the namespace goes away.
    cp.api("PUT", f"/api/v1/namespaces/{namespace}/finalize", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}, "spec": {"finalizers": []},
    })
