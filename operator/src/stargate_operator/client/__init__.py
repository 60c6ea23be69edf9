"""The Kubernetes API client: one package for everything that talks to the API server.

- :class:`KubeClient` (aiohttp, asynchronous): the operator's and the node agent's hot paths.
- :class:`SyncApi` (httpx, blocking): the demo, the local control plane, tools and tests.
- :class:`ApiResource`: what both clients' verbs take first (`get(resource, namespace, name)`,
  `list(resource, namespace)`, `create`, `patch`, `apply`, `delete`), for any API group.
- One error hierarchy: :class:`ApiError` (an answer of 400 or more), :class:`TransportError` (no
  answer; status 0), :class:`WatchExpired` (list again). Neither client lets its HTTP library's
  own errors out.
- :func:`run_informer`: the list-then-watch loop of any resource.
"""

from stargate_operator.client.asyncclient import KubeClient
from stargate_operator.client.connection import Connection, load_connection, tls_context
from stargate_operator.client.errors import ApiError, TransportError, WatchExpired
from stargate_operator.client.informer import run_informer
from stargate_operator.client.resource import CONFIGMAPS, EVENTS, LEASES, NAMESPACES, NODES, ApiResource
from stargate_operator.client.syncclient import APPLY_PATCH, JSON, MERGE_PATCH, SyncApi

__all__ = [
    "APPLY_PATCH", "CONFIGMAPS", "EVENTS", "JSON", "LEASES", "MERGE_PATCH", "NAMESPACES", "NODES",
    "ApiError", "ApiResource", "Connection", "KubeClient", "SyncApi", "TransportError", "WatchExpired",
    "load_connection", "run_informer", "tls_context",
]
