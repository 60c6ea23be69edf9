"""Where the API server is and who we are to it: a kubeconfig (as kubectl reads it) or the pod's
ServiceAccount, for both clients."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stargate_operator.client.errors import ApiError

__all__ = ["SA_DIR", "Connection", "load_connection", "tls_context"]
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Connection:
    server: str
    ssl_context: ssl.SSLContext | bool
    token: str | None = None
    token_file: str | None = None


def _resolve(path: str, base: Path) -> str:
    """kubeconfig paths are relative to the kubeconfig's folder."""
    return path if os.path.isabs(path) else str((base / path).resolve())


def _load_client_cert(ctx: ssl.SSLContext, user: dict[str, Any], base: Path) -> None:
    """The client certificate and key, from files or inline base64 (ssl reads only files)."""
    temps: list[str] = []
    try:
        files = []
        for field in ("client-certificate", "client-key"):
            if user.get(field):
                files.append(_resolve(user[field], base))
            else:
                with tempfile.NamedTemporaryFile(prefix="sg-kube-", delete=False) as f:
                    f.write(base64.b64decode(user[field + "-data"]))
                temps.append(f.name)
                files.append(f.name)
        ctx.load_cert_chain(files[0], files[1])
    finally:
        # Loaded into the context: the key material must not stay on disk.
        for name in temps:
            os.unlink(name)


def load_connection(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """From KUBECONFIG / the given file, or in-cluster when neither exists and we run in a pod."""
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    if path is None and (SA_DIR / "token").exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        ctx = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
        return Connection(f"https://{host}:{port}", ctx, token_file=str(SA_DIR / "token"))
    path = path or os.path.expanduser("~/.kube/config")
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ApiError(0, f"cannot read kubeconfig {path}: {e}") from None
    base = Path(path).parent
    ctx_name = context or cfg.get("current-context")
    ctx_entry = next((c["context"] for c in cfg.get("contexts", []) if c["name"] == ctx_name), None)
    if ctx_entry is None:
        raise ApiError(0, f"kubeconfig {path}: context {ctx_name!r} not found")
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx_entry["cluster"])
    user: dict[str, Any] = (
        next((u["user"] for u in cfg.get("users", []) if u["name"] == ctx_entry.get("user")), {}) or {}
    )
    server = cluster["server"].rstrip("/")
    verify: ssl.SSLContext | bool
    if cluster.get("insecure-skip-tls-verify"):
        verify = False
    else:
        ca_file = cluster.get("certificate-authority")
        ca_data = cluster.get("certificate-authority-data")
        verify = ssl.create_default_context(
            cafile=_resolve(ca_file, base) if ca_file else None,
            cadata=base64.b64decode(ca_data).decode() if ca_data and not ca_file else None,
        )
    has_cert = user.get("client-certificate") or user.get("client-certificate-data")
    has_key = user.get("client-key") or user.get("client-key-data")
    if has_cert and has_key:
        if verify is False:
            verify = ssl.create_default_context()
            verify.check_hostname = False
            verify.verify_mode = ssl.CERT_NONE
        assert isinstance(verify, ssl.SSLContext)
        _load_client_cert(verify, user, base)
    return Connection(server, verify, token=user.get("token"), token_file=user.get("tokenFile"))


def tls_context(ca_file: Path | str, cert_file: Path | str | None = None,
                key_file: Path | str | None = None) -> ssl.SSLContext:
    """Verify the server against ``ca_file``; present a client certificate when one is given."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if cert_file is not None and key_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx
