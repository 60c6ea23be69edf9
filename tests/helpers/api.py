"""A small synchronous API client for tests: fast polling and bursts of writes (kubectl costs ~0.1 s
a call), as the admin of the local control plane.

Objects are plain dicts; stargate kinds are addressed by kind (``"Rack"``), the rest by raw path.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from stargate_operator import kinds
from stargate_operator.localcp.controlplane import LocalControlPlane

GROUP = kinds.API_VERSION
PLURALS = {k.kind: k.plural for k in kinds.KINDS}


class ApiFailure(RuntimeError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:2000]}")
        self.status = status


def obj(kind: str, name: str, spec: Mapping[str, Any], **meta: Any) -> dict[str, Any]:
    """A stargate object as a dict (namespace is filled in by ``Api.create``)."""
    return {"apiVersion": GROUP, "kind": kind, "metadata": {"name": name, **meta}, "spec": dict(spec)}


class Api:
    def __init__(self, control_plane: LocalControlPlane, timeout: float = 10.0) -> None:
        ctx = ssl.create_default_context(cafile=str(control_plane.ca_file))
        ctx.load_cert_chain(str(control_plane.admin_cert_file), str(control_plane.admin_key_file))
        self._http = httpx.Client(base_url=control_plane.server, verify=ctx, timeout=timeout,
                                  limits=httpx.Limits(max_connections=16))

    def close(self) -> None:
        self._http.close()

    # -- raw ----------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                params: Mapping[str, str] | None = None) -> Any:
        resp = self._http.request(method, path, json=body, params=params,
                                  headers={"Content-Type": content_type} if body is not None else None)
        if resp.status_code >= 400:
            raise ApiFailure(resp.status_code, resp.text)
        return resp.json() if resp.content else None

    @staticmethod
    def path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        p = f"/apis/{GROUP}/namespaces/{namespace}/{PLURALS[kind]}"
        if name:
            p += f"/{name}"
        if sub:
            p += f"/{sub}"
        return p

    # -- objects ------------------------------------------------------------------------------
    def create(self, namespace: str, o: Mapping[str, Any]) -> dict[str, Any]:
        body = {**o, "metadata": {**o["metadata"], "namespace": namespace}}
        out: dict[str, Any] = self.request("POST", self.path(o["kind"], namespace), body)
        return out

    def create_all(self, namespace: str, objs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [self.create(namespace, o) for o in objs]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.request("GET", self.path(kind, namespace, name))
        return out

    def get_or_none(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, namespace, name)
        except ApiFailure as e:
            if e.status == 404:
                return None
            raise

    def status(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.get(kind, namespace, name).get("status") or {}
        return out

    def list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.request("GET", self.path(kind, namespace))["items"]
        return items

    def patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the object (spec, metadata)."""
        out: dict[str, Any] = self.request("PATCH", self.path(kind, namespace, name), patch,
                                           "application/merge-patch+json")
        return out

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the status subresource, as a node agent writes telemetry."""
        out: dict[str, Any] = self.request("PATCH", self.path(kind, namespace, name, "status"),
                                           {"status": status}, "application/merge-patch+json")
        return out

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.request("DELETE", self.path(kind, namespace, name))

    def events(self, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.request("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
        return items


def condition(status: Mapping[str, Any], ctype: str) -> dict[str, Any]:
    """The condition of that type in a status ({} when absent)."""
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}
