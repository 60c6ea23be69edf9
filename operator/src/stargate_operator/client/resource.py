"""`ApiResource`: what every verb of both clients and the informer address, for any API group."""

from __future__ import annotations

from dataclasses import dataclass

from stargate_operator.kinds import KindSpec

__all__ = ["CONFIGMAPS", "EVENTS", "LEASES", "NAMESPACES", "NODES", "ApiResource"]


@dataclass(frozen=True, slots=True)
class ApiResource:
    """A resource of the API server, for any group: what the verbs and the informers address.

    `group` "" is the core group (`/api/v1`: Nodes, ConfigMaps); every other group is served under
    `/apis/<group>/<version>`. Stargate's kinds: `ApiResource.of(kinds.GPU_NODE)`.
    """

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @classmethod
    def of(cls, spec: KindSpec) -> ApiResource:
        group, _, version = spec.api_version.partition("/")
        return cls(group, version, spec.plural, spec.kind, spec.namespaced)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        """The REST path; `namespace` None lists across namespaces. A cluster-scoped resource has
        no namespace in its path, whatever the caller holds."""
        p = self.group_path
        if namespace and self.namespaced:
            p += f"/namespaces/{namespace}"
        p += f"/{self.plural}"
        if name:
            p += f"/{name}"
        if sub:
            p += f"/{sub}"
        return p


# The Kubernetes built-ins the operator, the agent and the tools address.
NODES = ApiResource("", "v1", "nodes", "Node", namespaced=False)
NAMESPACES = ApiResource("", "v1", "namespaces", "Namespace", namespaced=False)
EVENTS = ApiResource("", "v1", "events", "Event")
CONFIGMAPS = ApiResource("", "v1", "configmaps", "ConfigMap")
LEASES = ApiResource("coordination.k8s.io", "v1", "leases", "Lease")
