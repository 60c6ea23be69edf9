"""The synchronous client: the demo, the local control plane, tests; everything that runs a step at a
time. The operator's hot path is asynchronous (:mod:`stargate_operator.client.asyncclient`).

One keep-alive httpx client, the TLS identity of a kubeconfig (:meth:`SyncApi.from_kubeconfig`,
read by the same code as the asynchronous client's) or of the local control plane's admin. The verbs
take the same `ApiResource`-first arguments as :class:`~stargate_operator.client.KubeClient`'s.

Objects are plain dicts. An answer of 400 or more raises :class:`ApiError` (with the status); no
answer at all (refused, reset, timed out) raises :class:`TransportError`, an ``ApiError`` with
status 0, so that callers need not know httpx. One client may be used from several threads
(httpx's pool locks), each call blocking only its own.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from stargate_operator.client.connection import load_connection
from stargate_operator.client.errors import ApiError, TransportError
from stargate_operator.client.resource import ApiResource

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
# Server-side apply takes YAML, and JSON is YAML: the body is sent as JSON.
APPLY_PATCH = "application/apply-patch+yaml"
PAGE_SIZE = 500

__all__ = ["APPLY_PATCH", "JSON", "MERGE_PATCH", "SyncApi"]


class SyncApi:
    """A blocking client of one API server. ``verify``: an SSL context (CA, and a client certificate
    when that is the identity), or False for ``insecure-skip-tls-verify``; ``token`` or ``token_file``
    for bearer-token identities (a file is read at each call, as projected tokens rotate)."""

    def __init__(self, server: str, verify: ssl.SSLContext | bool = True, *, token: str | None = None,
                 token_file: str | None = None, timeout: float = 30.0, max_connections: int = 16) -> None:
        self.server = server.rstrip("/")
        self._token = token
        self._token_file = token_file
        self._http = httpx.Client(base_url=self.server, verify=verify, timeout=timeout,
                                  limits=httpx.Limits(max_connections=max_connections))

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | str | None = None, context: str | None = None,
                        **kwargs: Any) -> SyncApi:
        """The server and identity of a kubeconfig (default: ``KUBECONFIG``, ``~/.kube/config``, or
        in-cluster), read exactly as the operator reads it."""
        conn = load_connection(str(kubeconfig) if kubeconfig is not None else None, context)
        return cls(conn.server, conn.ssl_context, token=conn.token, token_file=conn.token_file, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- raw ----------------------------------------------------------------------------------
    def send(self, method: str, path: str, body: Any = None, *, content_type: str = JSON,
             accept: str = JSON, params: Mapping[str, Any] | None = None,
             timeout: float | None = None) -> httpx.Response:
        """One request, whatever the status; ``body`` is encoded as JSON. Raises
        :class:`TransportError`."""
        headers = {"Accept": accept}
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        token = self._token
        if self._token_file:
            token = Path(self._token_file).read_text().strip()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            return self._http.request(method, path, content=content, headers=headers, params=params,
                                      timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.TransportError as e:
            raise TransportError(f"{method} {path}: {e or type(e).__name__}") from e

    def call(self, method: str, path: str, body: Any = None, *, content_type: str = JSON,
             accept: str = JSON, params: Mapping[str, Any] | None = None,
             timeout: float | None = None) -> Any:
        """One request; the decoded JSON answer (None when empty). Raises :class:`ApiError`."""
        resp = self.send(method, path, body, content_type=content_type, accept=accept, params=params,
                         timeout=timeout)
        if resp.status_code >= 400:
            raise _error(resp)
        return resp.json() if resp.content else None

    # -- resources: the same arguments as KubeClient's verbs --------------------------------------
    def get(self, resource: ApiResource, namespace: str | None, name: str) -> Any:
        return self.call("GET", resource.path(namespace, name))

    def list(self, resource: ApiResource, namespace: str | None = None, *, label_selector: str | None = None,
             page_size: int = PAGE_SIZE) -> list[dict[str, Any]]:
        """Every item, page by page (``limit``/``continue``); namespace None lists all namespaces."""
        path = resource.path(namespace)
        params: dict[str, Any] = {"limit": page_size}
        if label_selector:
            params["labelSelector"] = label_selector
        items: list[dict[str, Any]] = []
        while True:
            page = self.call("GET", path, params=params)
            items += page.get("items") or []
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return items
            params = {**params, "continue": cont}

    def create(self, resource: ApiResource, namespace: str | None, body: Mapping[str, Any]) -> Any:
        return self.call("POST", resource.path(namespace), body)

    def patch(self, resource: ApiResource, namespace: str | None, name: str, patch: Mapping[str, Any], *,
              subresource: str | None = None, content_type: str = MERGE_PATCH) -> Any:
        """A JSON merge patch by default; ``subresource="status"`` patches the status subresource."""
        return self.call("PATCH", resource.path(namespace, name, subresource), patch,
                         content_type=content_type)

    def apply(self, resource: ApiResource, namespace: str | None, name: str, body: Mapping[str, Any], *,
              field_manager: str, force: bool, subresource: str | None = None, attempts: int = 3,
              timeout: float | None = None) -> Any:
        """Server-side apply of a (partial) object, as ``kubectl apply --server-side`` does it; with
        `force` the manager takes over fields another manager set, without that is a 409.

        Applying is idempotent, so a call without an answer (a timeout on a machine loaded far beyond
        its cores) is made again, up to ``attempts`` times in all."""
        params = {"fieldManager": field_manager, **({"force": "true"} if force else {})}
        path = resource.path(namespace, name, subresource)
        for attempt in range(1, attempts + 1):
            try:
                return self.call("PATCH", path, body, content_type=APPLY_PATCH, params=params,
                                 timeout=timeout)
            except TransportError:
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def delete(self, resource: ApiResource, namespace: str | None, name: str) -> Any:
        return self.call("DELETE", resource.path(namespace, name))


def _error(resp: httpx.Response) -> ApiError:
    """The API server's Status message when the answer is one, the whole text otherwise."""
    text = resp.text
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    message = payload.get("message", text) if isinstance(payload, dict) else text[:2000]
    return ApiError(resp.status_code, str(message), payload, text)
