"""The one error hierarchy of both clients: callers catch these and never the HTTP library's own.

`ApiError`: the API server answered 400 or more (`status`, its message, the decoded Status object
as `body`, the raw answer as `text`). `TransportError`: no answer at all (status 0). `WatchExpired`:
a watch's resourceVersion is too old (410 Gone) and the caller must list again.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NAMESPACE_TERMINATING", "ApiError", "TransportError", "WatchExpired"]

# The cause the namespace lifecycle admission gives a create in a namespace being deleted.
NAMESPACE_TERMINATING = "NamespaceTerminating"


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str, body: Any = None, text: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body
        self.text = message if text is None else text

    @property
    def namespace_terminating(self) -> bool:
        """A create refused because its namespace is being deleted (403 with the cause
        NamespaceTerminating): whatever it was for goes away with the namespace."""
        if self.status != 403 or not isinstance(self.body, dict):
            return False
        causes = (self.body.get("details") or {}).get("causes") or []
        return any(isinstance(c, dict) and c.get("reason") == NAMESPACE_TERMINATING for c in causes)

    @property
    def namespace_gone(self) -> bool:
        """A create refused because its namespace no longer exists (404 whose details name a
        namespace): the namespace went before the watch said that its objects did."""
        if self.status != 404 or not isinstance(self.body, dict):
            return False
        return (self.body.get("details") or {}).get("kind") == "namespaces"


class TransportError(ApiError):
    """No HTTP answer at all: connection refused or reset, TLS failure, timeout (status 0)."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class WatchExpired(RuntimeError):
    """The watch's resourceVersion is too old (410 Gone): list again."""
