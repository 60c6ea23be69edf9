"""A small synchronous API client for tests: fast polling and bursts of writes (kubectl costs ~0.1 s
a call), as the admin of the local control plane.

Objects are plain dicts; stargate kinds are addressed by kind (``"Rack"``), the rest by raw path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stargate_operator import kinds
from stargate_operator.client import EVENTS, MERGE_PATCH, ApiError, ApiResource
from stargate_operator.localcp.controlplane import LocalControlPlane

__all__ = ["GROUP", "PLURALS", "Api", "ApiError", "condition", "obj"]

GROUP = kinds.API_VERSION
PLURALS = {k.kind: k.plural for k in kinds.KINDS}
RESOURCES = {k.kind: ApiResource.of(k) for k in kinds.KINDS}
Objects = list[dict[str, Any]]  # spelled once here: inside Api, ``list`` is the method


def obj(kind: str, name: str, spec: Mapping[str, Any], **meta: Any) -> dict[str, Any]:
    """A stargate object as a dict (namespace is filled in by ``Api.create``)."""
    return {"apiVersion": GROUP, "kind": kind, "metadata": {"name": name, **meta}, "spec": dict(spec)}


class Api:
    """The package's :class:`~stargate_operator.client.SyncApi` as admin, addressed by kind. One per
    thread where a test writes from several (each has its own connections)."""

    def __init__(self, control_plane: LocalControlPlane, timeout: float = 10.0) -> None:
        self._api = control_plane.connect(timeout=timeout)

    def close(self) -> None:
        self._api.close()

    # -- raw ----------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                params: Mapping[str, str] | None = None) -> Any:
        return self._api.call(method, path, body, content_type=content_type, params=params)

    @staticmethod
    def path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        return RESOURCES[kind].path(namespace, name, sub)

    # -- objects ------------------------------------------------------------------------------
    def create(self, namespace: str, o: Mapping[str, Any]) -> dict[str, Any]:
        body = {**o, "metadata": {**o["metadata"], "namespace": namespace}}
        out: dict[str, Any] = self._api.create(RESOURCES[o["kind"]], namespace, body)
        return out

    def create_all(self, namespace: str, objs: Iterable[Mapping[str, Any]]) -> Objects:
        return [self.create(namespace, o) for o in objs]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self._api.get(RESOURCES[kind], namespace, name)
        return out

    def get_or_none(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, namespace, name)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def status(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.get(kind, namespace, name).get("status") or {}
        return out

    def list(self, kind: str, namespace: str) -> Objects:
        return self._api.list(RESOURCES[kind], namespace)

    def patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the object (spec, metadata)."""
        out: dict[str, Any] = self._api.patch(RESOURCES[kind], namespace, name, patch,
                                              content_type=MERGE_PATCH)
        return out

    def patch_status(self, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch of the status subresource, as a node agent writes telemetry."""
        out: dict[str, Any] = self._api.patch(RESOURCES[kind], namespace, name, {"status": status},
                                              subresource="status")
        return out

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._api.delete(RESOURCES[kind], namespace, name)

    def events(self, namespace: str) -> Objects:
        return self._api.list(EVENTS, namespace)


def condition(status: Mapping[str, Any], ctype: str) -> dict[str, Any]:
    """The condition of that type in a status ({} when absent)."""
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}
